"""The run file: one HDF5 file per run (schema in the README, "Run file").

While a run goes on, its data lives in per-rank segment files under
``<final>.parts/`` (`dtb.io.recording`) and its description in memory on rank 0.
At every checkpoint rank 0 writes ``<final>.partial``: a complete, readable run
file of everything so far (virtual datasets over the segments) plus the state a
resumed run needs. Every file is written under a temporary name and renamed
(atomic on POSIX), so a process killed at any moment leaves the last checkpoint
intact and never a file under the final name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

from dtb.errors import DataError, ResourceError, WriteError
from dtb.io.hdf5 import open_data_file, open_dataset

SCHEMA_VERSION = 2
_STR = h5py.string_dtype()
#: rows copied at a time when rates move from the segments into the final file
_COPY_ROWS = 1 << 16


def checked_write(path, action, what: str = "writing"):
    """Run ``action()`` (an HDF5 write, flush or close); any error it raises, or that the HDF5 library reports
    meanwhile from a deallocator (h5py only prints those), becomes one `WriteError`.

    HDF5 reports a failed write (ENOSPC, EIO) when it flushes, also when an object is freed; h5py ignores
    errors while it closes or frees a file, so every file is flushed explicitly through this before it is
    closed.
    """
    import sys

    logged = []
    hooks = sys.unraisablehook, sys.excepthook
    # h5py's deallocators print their errors through both (Cython prints the traceback, then the notice)
    sys.unraisablehook = lambda unraisable: logged.append(unraisable.exc_value)
    sys.excepthook = lambda kind, value, tb: logged.append(value)
    try:
        result = action()
        error = logged[0] if logged else None
    except (OSError, RuntimeError, ValueError) as err:
        error = err
    finally:
        sys.unraisablehook, sys.excepthook = hooks
    # a signal's exception (SIGINT, SIGTERM) raised inside a deallocator is the job ending, not a failed write
    stop = next((e for e in logged if not isinstance(e, Exception)), None)
    if stop is not None:
        raise stop
    if error is not None:
        reason = " ".join(str(error).split())[:500]  # one line, whatever HDF5 embeds
        raise WriteError(f"{what} {str(path)!r} failed ({reason}); is the disk full? The run stopped; its last "
                         "checkpoint, if any, is kept") from None
    return result


def close_checked(f: h5py.File, path) -> None:
    """Flush ``f`` (raising a `WriteError` if that fails), then close it."""
    checked_write(path, f.flush)
    f.close()


def fsync_path(path: Path) -> None:
    """Ask the OS to put ``path`` (a file or folder) on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (e.g. a FIFO-backed or special mount) do not sync folders
    finally:
        os.close(fd)


#: the SONATA spike report's ``sorting`` attribute: an HDF5 enum (libsonata, the reference reader, requires it)
SORTING = {"none": 0, "by_id": 1, "by_time": 2}


def set_sorting(group: h5py.Group, sorting: str) -> None:
    """Mark a spike group's order, as SONATA's enum."""
    group.attrs.create("sorting", SORTING[sorting], dtype=h5py.enum_dtype(SORTING, basetype=np.uint8))


def get_sorting(group: h5py.Group) -> str:
    """A spike group's order ('none', 'by_id', 'by_time'); files of earlier versions stored it as a string."""
    value = group.attrs["sorting"]
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    return {v: k for k, v in SORTING.items()}[int(value)]


def arrays_digest(arrays: dict) -> str:
    """sha256 of named arrays (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def checkpoint_content(f: h5py.File) -> tuple[dict, dict, bytes]:
    """What a resume reads from a checkpoint file, read once.

    Returns
    -------
    (arrays, attrs, config)
        The ``/checkpoint`` datasets by name, and ``bold`` (the BOLD so far) where the file has ``/bold``; the
        ``/checkpoint`` attributes as Python values (its ``sha256`` included); ``/config`` as bytes (UTF-8 TOML).
    """
    g = f["checkpoint"]
    arrays = {}
    g.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    if "bold" in f:
        arrays["bold"] = f["bold"][()]
    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in g.attrs.items()}
    config = f["config"][()]
    return arrays, attrs, config.encode() if isinstance(config, str) else bytes(config)


def checkpoint_digest(arrays: dict, attrs: dict, config: bytes) -> str:
    """sha256 of a checkpoint's content (`checkpoint_content`): its arrays, its attributes (``sha256`` aside), the
    BOLD so far and the stored config."""
    named = {("/bold" if k == "bold" else k): v for k, v in arrays.items()}
    named["/config"] = np.frombuffer(config, np.uint8)
    rest = {k: v for k, v in attrs.items() if k != "sha256"}
    named["/checkpoint.attrs"] = np.frombuffer(json.dumps(rest, sort_keys=True, default=str).encode(), np.uint8)
    return arrays_digest(named)


#: bytes read at a time when a dataset is hashed
_DIGEST_BYTES = 1 << 24


def dataset_digest(ds: h5py.Dataset) -> str:
    """sha256 of a dataset's dtype, shape and values (in C order; a string as its length and UTF-8 bytes), read
    in blocks of about 16 MiB."""
    h = hashlib.sha256(f"{ds.dtype.str}|{ds.shape}|".encode())
    text = h5py.check_string_dtype(ds.dtype) is not None or ds.dtype.kind == "O"

    def update(values) -> None:
        if text:
            for v in np.ravel(np.asarray(values, dtype=object)):
                b = v.encode() if isinstance(v, str) else bytes(v)
                h.update(len(b).to_bytes(8, "little") + b)
        else:
            h.update(np.ascontiguousarray(values).tobytes())

    if ds.ndim == 0:
        update(ds[()])
        return h.hexdigest()
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, _DIGEST_BYTES // row_bytes)
    for a in range(0, ds.shape[0], step):
        update(ds[a:a + step])
    return h.hexdigest()


def _attrs_digest(f: h5py.File) -> str:
    """sha256 of the file's layout: every group and dataset (but `DIGESTS`) by name and kind, with its attributes
    (a ``bin_ms`` or ``units`` changes what the values mean)."""
    def plain(attrs) -> dict:
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in attrs.items()}

    layout = {"/": ["group", plain(f.attrs)]}
    f.visititems(lambda name, obj: layout.__setitem__(name, [type(obj).__name__, plain(obj.attrs)])
                 if name != DIGESTS else None)
    return hashlib.sha256(json.dumps(layout, sort_keys=True, default=str).encode()).hexdigest()


#: the dataset of a finished run file holding the digest of every other (`write_digests`)
DIGESTS = "digests"


def write_digests(f: h5py.File) -> None:
    """Store ``/digests``: JSON of {dataset name: `dataset_digest`} for every dataset of ``f`` (a virtual one's
    values as read through it from ``<run>.parts``, so that a part replaced later is found; their names are listed
    under ``"virtual"`` too), and ``"/"``: the file's
    layout (every object's name, kind and attributes). Written last, when nothing else changes; `verify_digests`
    checks a file against it."""
    sums, virtual = {"/": _attrs_digest(f)}, []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            sums[name] = dataset_digest(obj)
            if obj.is_virtual:
                virtual.append(name)

    f.visititems(visit)
    f.create_dataset(DIGESTS, data=json.dumps({"sha256": sums, "virtual": sorted(virtual)}), dtype=_STR)


def verify_digests(f: h5py.File, path) -> dict:
    """Read every dataset of the run file ``f`` and check it against ``/digests`` (`write_digests`).

    Returns
    -------
    dict
        ``datasets`` (how many were verified), ``bytes`` (their stored size) and ``virtual`` (names of the virtual
        datasets among them, read through from their sources).

    Raises
    ------
    DataError
        No ``/digests`` (a checkpoint, or a file an earlier dtb wrote), or a dataset or the layout (groups, attributes) that
        differ from what was written, or a dataset added or removed since.
    """
    name = repr(str(path))
    if not isinstance(f.get(DIGESTS), h5py.Dataset):
        raise DataError(f"{name} has no /{DIGESTS}: only a finished run file of this dtb can be verified")
    try:
        raw = f[DIGESTS][()]
        stored = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        sums, virtual = dict(stored["sha256"]), list(stored["virtual"])
    except (ValueError, TypeError, KeyError, AttributeError):
        raise DataError(f"{name}: its /{DIGESTS} is not dtb's JSON: the file is damaged") from None
    present = []
    f.visititems(lambda key, obj: present.append(key) if isinstance(obj, h5py.Dataset) and key != DIGESTS else None)
    extra = sorted(set(present) - set(sums))
    missing = sorted(set(sums) - set(present) - {"/"})
    if extra or missing:
        raise DataError(f"{name}: datasets {'added' if extra else 'removed'} since it was written "
                        f"({', '.join('/' + k for k in (extra or missing)[:3])}): the file is damaged")
    bad = ["its layout (groups and attributes)"] if _attrs_digest(f) != sums.pop("/", None) else []
    n_bytes = 0
    for key, digest in sums.items():
        ds = f[key]
        if ds.is_virtual:
            open_dataset(f, key)  # a missing source is named, not read as zeros
        if dataset_digest(ds) != digest:
            bad.append("/" + key)
        n_bytes += ds.id.get_storage_size()
    if bad:
        raise DataError(f"{name}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} "
                        f"{'differs' if len(bad) == 1 else 'differ'} from what was written (sha256): the file is "
                        "damaged")
    return dict(datasets=len(sums), bytes=n_bytes, virtual=virtual)


def verify_file(path: str | Path) -> dict:
    """`verify_digests` of the run file at ``path``."""
    with open_data_file(Path(path), "run file") as f:
        return verify_digests(f, path)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def fresh_tmp(path: Path) -> Path:
    """``<path>.tmp``, with whatever was there (a crashed writer's file, a planted symbolic link) removed, so that
    a write never follows a link out of the folder; a `ResourceError` if a folder is in the way."""
    tmp = _tmp_path(path)
    _no_folder_at(tmp)
    try:
        tmp.unlink(missing_ok=True)
    except OSError as err:
        raise ResourceError(f"cannot remove {str(tmp)!r} ({err.strerror})") from None
    return tmp


def _no_folder_at(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        raise ResourceError(f"{str(tmp)!r} is a folder, in the way of the file written there: remove it")


def write_replacing(path: str | Path, write, what: str = "writing") -> Path:
    """Write the file ``path`` (a script, a figure) whole or not at all: ``write(tmp)`` fills ``<path>.tmp``, which
    is then synced and renamed over ``path``; on any failure ``path`` is as before and the temporary file is gone
    (an `OSError` becomes a `WriteError`). A second writer of the same ``path`` meanwhile is refused (`RunLock`):
    both share ``<path>.tmp``, so one would rename the other's half-written file into place."""
    path = Path(path)
    lock = RunLock(path)
    lock.acquire()
    try:
        tmp = fresh_tmp(path)
        try:
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # a full disk that the writer's buffered close did not report shows here
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise WriteError(f"{what} {str(path)!r} failed ({' '.join(str(err.strerror or err).split())})") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_path(path.parent)
    finally:
        lock.release()
    return path


def partial_path(path: Path) -> Path:
    """The last checkpoint of an unfinished run: a readable run file beside the final path."""
    return path.with_name(path.name + ".partial")


def parts_dir(path: Path) -> Path:
    """Folder of the per-rank segment and spike files (kept beside the run file of a many-rank run)."""
    return path.with_name(path.name + ".parts")


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def output_path(path: str | Path) -> Path:
    """``path`` as a Path, or a `ResourceError` for an empty one or one that ends in a separator (a folder's:
    ``Path`` would drop the separator and write a file of the folder's name)."""
    if str(path) == "":
        raise ResourceError("the output path is empty")
    if str(path).endswith(os.sep):
        raise ResourceError(f"output {str(path)[:200]!r} names a folder: give the run file's name")
    return Path(path)


def check_output(path: str | Path, overwrite: bool, inputs=()) -> Path:
    """The run file's path, or a `ResourceError` if it (or an unfinished run's checkpoint) exists, is not a
    regular file, is one of ``inputs`` (paths of the run's input files), or has no folder.

    Every rank calls this, so that all of them fail alike before anything is written.
    """
    path = output_path(path)
    try:
        # the longest of the names written beside it must fit too
        for name in (path, _tmp_path(partial_path(path)), RunLock(path).path, parts_dir(path)):
            name.exists()
        os.fspath(path).encode()
        path.resolve()
    except (OSError, ValueError, UnicodeError, RuntimeError) as err:  # a name over 255 bytes or PATH_MAX, a NUL
        # byte, a loop of symbolic links (RuntimeError before Python 3.13)
        raise ResourceError(f"output {str(path)[:200]!r} is not a usable path "
                            f"({getattr(err, 'strerror', None) or err})") from None
    if path.is_symlink() and not path.exists() and not overwrite:
        raise ResourceError(f"output {str(path)!r} is a dangling symbolic link (use --overwrite to replace it)")
    if path.exists() and not path.is_file():
        raise ResourceError(f"output {str(path)!r} exists and is not a regular file (a folder, device or FIFO): "
                            "refusing to replace it")
    for source in _files_of(inputs):
        try:
            same = source.exists() and path.exists() and os.path.samefile(source, path) or \
                source.resolve() == path.resolve()
        except (OSError, RuntimeError):  # an input that is a loop of links: its own check names it
            same = False
        if same:
            raise ResourceError(f"output {str(path)!r} is an input of this run ({str(source)!r}): choose another "
                                "--out")
    if path.exists() and not overwrite:
        raise ResourceError(f"output {str(path)!r} exists (use --overwrite to replace it)")
    if partial_path(path).is_symlink():  # a checkpoint is dtb's own file, never a link to one elsewhere
        raise ResourceError(f"{str(partial_path(path))!r} is a symbolic link, in the place of the run's checkpoint: "
                            "remove it")
    if partial_path(path).exists() and not partial_path(path).is_file():
        raise ResourceError(f"{str(partial_path(path))!r} is not a regular file (the place of the run's checkpoint): "
                            "remove it")
    check_parts(path)
    if partial_path(path).exists() and not overwrite:
        RunLock(path).check_free()  # not unfinished: running
        raise ResourceError(f"{str(partial_path(path))!r} holds the checkpoint of an unfinished run: continue it "
                            f"with --resume {str(path)!r}, or use --overwrite to start again")
    if not path.parent.is_dir():
        raise ResourceError(f"output folder {str(path.parent)!r} does not exist")
    return path


#: what a run writes in ``<run>.parts``: segments, checkpoint states, sorted spikes, and their temporary files
_PART_FILE = re.compile(r"rank\d+(\.seg\d+|\.state\d+|\.spikes-[0-9a-f]+)?\.h5(\.tmp)?")


def check_parts(path: Path) -> None:
    """A `ResourceError` if what a run writes beside ``path`` cannot be written there: ``<run>.parts`` anything but
    a folder of dtb's own files, or absent (the run writes its segments into it and clears it: through a symbolic
    link, another folder's files); a folder at ``<run>.tmp`` or ``<run>.partial.tmp``. A fresh run and a resume
    both check it before anything is built."""
    parts = parts_dir(path)
    if parts.is_symlink() or parts.exists() and not parts.is_dir():
        raise ResourceError(f"{str(parts)!r} is {'a symbolic link' if parts.is_symlink() else 'not a folder'}, in the "
                            "place of the run's parts folder: remove it")
    for tmp in (_tmp_path(path), _tmp_path(partial_path(path))):
        _no_folder_at(tmp)
    try:
        foreign = sorted(p.name for p in parts.iterdir() if not _PART_FILE.fullmatch(p.name)) if parts.is_dir() else []
    except OSError as err:
        raise ResourceError(f"cannot read {str(parts)!r} ({err.strerror})") from None
    if foreign:  # a run clears this folder: never of what it did not write
        raise ResourceError(f"{str(parts)!r} holds files that no dtb run wrote ({', '.join(foreign[:3])}"
                            f"{' ...' if len(foreign) > 3 else ''}): move them, or choose another output")


def _files_of(inputs) -> list[Path]:
    """The input paths, a folder (a TVB connectome) standing for every file in it."""
    files = []
    for source in inputs:
        if source:
            source = Path(source)
            try:
                files += sorted(source.iterdir()) if source.is_dir() else [source]
            except OSError:
                files.append(source)
    return files


#: what a lock file holds (`RunLock.acquire`): its holder
_LOCK_NOTE = re.compile(rb"pid \d+ on .* since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\Z")


class RunLock:
    """One writer per run: an exclusive lock (``flock``) on ``<run>.lock``, held while a job writes the run (and
    while `write_replacing` writes a figure, a script or a connectome).

    Taken before anything of the run is created or removed; a second job on the same run (a requeued
    Slurm job, two ``--resume``s, two runs with the same ``--out``) is refused at once with one line
    that names the holder. The lock ends with the process that holds it, however it ends.
    """

    def __init__(self, run: Path):
        self.path = run.with_name(run.name + ".lock")
        self.fd = None

    def acquire(self) -> None:
        """Take the lock, or raise a `ResourceError` naming the job that holds it."""
        import fcntl
        import socket
        import time

        while True:
            try:
                # never through a link, never blocking on a FIFO
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise ResourceError(f"the run's lock {str(self.path)!r} is a symbolic link: remove it") from None
                advice = ": choose an output in a folder you can write" if err.errno in (
                    errno.EACCES, errno.EPERM, errno.EROFS) else ""
                raise ResourceError(f"cannot create the run's lock {str(self.path)!r} ({err.strerror}){advice}") \
                    from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ResourceError(f"the run's lock {str(self.path)!r} is not a regular file: remove it")
            note = os.pread(fd, 512, 0)
            if note and not _LOCK_NOTE.match(note):  # someone's file of that name: never truncated, never removed
                os.close(fd)
                raise ResourceError(f"{str(self.path)!r} exists and is not a dtb lock: move it, or choose another "
                                    "output")
            # flock, not lockf: it excludes a second open of the same file in this process too; tried a few
            # times over 50 ms, since `holder` probes with a shared lock for an instant
            for attempt in range(10):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    time.sleep(0.005)
            else:
                os.close(fd)
                raise self._held(note.decode(errors="replace").strip() or "another process") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its last holder removed while we opened it
                break
            os.close(fd)
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        except OSError as err:  # a full disk: the lock holds, only its note of the holder is missing
            if err.errno != errno.ENOSPC:
                self.release()
                raise ResourceError(f"cannot write the run's lock {str(self.path)!r} ({err.strerror})") from None

    def _held(self, holder: str) -> ResourceError:
        return ResourceError(f"{str(self.path.with_suffix(''))!r} is being written by {holder}: one writer at a time "
                             "(wait for it, or choose another output)")

    def check_free(self) -> None:
        """A `ResourceError` naming the holder while another process writes the run; takes nothing."""
        holder = self.holder()
        if holder is not None:
            raise self._held(holder)

    def holder(self) -> str | None:
        """Who holds the lock now (its note, or 'another process'), or None if no one does; takes nothing."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None  # no lock file (or none dtb could take: acquire names why)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while a writer holds LOCK_EX
            except OSError:
                return os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            return None
        finally:
            os.close(fd)  # lets go of the shared lock too

    def note(self) -> str:
        """The holder's note this lock wrote ('pid P on HOST since T')."""
        return os.pread(self.fd, 512, 0).decode(errors="replace") if self.fd is not None else ""

    def remove_if(self, note: str | None) -> None:
        """Remove the lock file if it still holds ``note`` (another rank of the job that holds it, ending it)."""
        try:
            if note and self.path.read_text(errors="replace") == note:
                self.path.unlink()
        except OSError:
            pass

    def release(self) -> None:
        """Remove the lock file and let go (a job that finds it gone while opening it tries again)."""
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def remove_run_leftovers(path: Path) -> None:
    """Delete an unfinished run's checkpoint, segments and temporary files (before starting it afresh)."""
    partial_path(path).unlink(missing_ok=True)
    for p in (path, partial_path(path)):
        fresh_tmp(p)
    clear_parts(path)


def clear_parts(path: Path) -> None:
    """Delete what an unfinished job left in ``<run>.parts``: everything, unless a finished run is at ``path``,
    whose spikes may be virtual datasets over its ranks' sorted files there (`dtb.io.recording.is_sorted_file`):
    those stay until a new run file replaces it."""
    from dtb.io.recording import is_sorted_file

    folder = parts_dir(path)
    if not path.exists():
        shutil.rmtree(folder, ignore_errors=True)
        return
    for p in folder.glob("*") if folder.is_dir() else ():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif not is_sorted_file(p.name):
            p.unlink(missing_ok=True)


class RunWriter:
    """Composes the run file on rank 0.

    The description (header, network, partition, BOLD, named groups) is kept in an
    in-memory HDF5 file and copied into every file written: each checkpoint's
    ``<path>.partial`` and, by `finish`, the final file.

    Parameters
    ----------
    path : str or Path
        Final path of the run file.
    overwrite : bool
        Replace an existing file at ``path``; otherwise that is a `ResourceError`.
    resume : bool
        Continue an unfinished run: its checkpoint and segments are kept.
    """

    def __init__(self, path: str | Path, overwrite: bool = False, resume: bool = False):
        self.path = Path(path) if resume else check_output(path, overwrite)
        if not resume:
            remove_run_leftovers(self.path)
        self.meta = h5py.File(io.BytesIO(), "w")
        self.meta.attrs["schema_version"] = SCHEMA_VERSION

    def write_header(self, *, config_toml: str, version: str, model: str, seed: int, dt_ms: float,
                     spike_population: str, fingerprint: str, backend: str, recorded: list[str] = ()) -> None:
        """Root attributes (``fingerprint`` identifies the network: `Recipe.fingerprint`) and the resolved
        config (empty for a network built in Python). ``recorded`` names the groups the run records ('spikes',
        'rates', 'state/<variable>'; stored comma-separated): a file without one of them is damaged, not a run
        that chose not to record it."""
        self.meta.attrs.update(dict(dtb_version=version, model=model, seed=seed, dt_ms=dt_ms,
                                    spike_population=spike_population, fingerprint=fingerprint, backend=backend))
        if recorded:
            self.meta.attrs["recorded"] = ",".join(recorded)
        self.meta.create_dataset("config", data=config_toml, dtype=_STR)

    def write_network(self, *, names, sizes, first_gids, excitatory, regions, region_names, synapse_counts,
                      neuron_model: str, min_delay_steps: int, max_delay_steps: int, bytes_per_synapse: float) -> None:
        """The network description: populations, regions, synapse counts.

        ``synapse_counts`` (scipy sparse, shape (n_pop, n_pop), [target, source]) is stored as its pairs that hold
        synapses (``target``, ``source``, ``count``, row-major): an ensemble's members are disjoint, and a
        dense table would grow with the square of their number."""
        g = self.meta.create_group("network")
        g.create_dataset("populations/name", data=list(names), dtype=_STR)
        g.create_dataset("populations/size", data=np.asarray(sizes, dtype=np.int64))
        g.create_dataset("populations/first_gid", data=np.asarray(first_gids, dtype=np.int64))
        g.create_dataset("populations/excitatory", data=np.asarray(excitatory, dtype=bool))
        g.create_dataset("populations/region", data=np.asarray(regions, dtype=np.int32))
        g.create_dataset("regions", data=list(region_names), dtype=_STR)
        pairs = scipy.sparse.coo_array(synapse_counts)
        pairs.sum_duplicates()  # canonical: row-major, one entry per pair
        held = pairs.data != 0
        counts = g.create_group("synapse_counts")
        for key, values in (("target", pairs.row), ("source", pairs.col), ("count", pairs.data)):
            counts.create_dataset(key, data=np.asarray(values[held], dtype=np.int64))
        counts.attrs["shape"] = np.asarray(pairs.shape, dtype=np.int64)
        g.attrs.update(dict(n_neurons=int(np.sum(sizes)), n_synapses=int(pairs.data.sum()),
                            neuron_model=neuron_model, min_delay_steps=min_delay_steps,
                            max_delay_steps=max_delay_steps, bytes_per_synapse=bytes_per_synapse))

    def write_partition(self, starts, stops, ranks, strategy: str, n_ranks: int) -> None:
        g = self.meta.create_group("partition")
        g.create_dataset("starts", data=starts)
        g.create_dataset("stops", data=stops)
        g.create_dataset("ranks", data=ranks)
        g.attrs.update(dict(strategy=strategy, n_ranks=n_ranks))

    def write_bold(self, bold: np.ndarray, tr_ms: float, params: str, eps: float) -> None:
        """Store (or replace) the BOLD signal, shape (n_regions, n_trs), sampled at the end of each TR."""
        if "bold" in self.meta:
            del self.meta["bold"]
        ds = self.meta.create_dataset("bold", data=np.asarray(bold, dtype=np.float64))
        ds.attrs.update(dict(tr_ms=tr_ms, params=params, eps=eps, units="1", axes="region, TR",
                             model="Balloon-Windkessel"))

    def write_group(self, name: str, arrays: dict, attrs: dict) -> None:
        """Store a group of named arrays (strings allowed) and scalar attributes."""
        g = self.meta.create_group(name)
        for key, val in arrays.items():
            val = np.asarray(val)
            g.create_dataset(key, data=val.tolist() if val.dtype.kind == "U" else val,
                             dtype=_STR if val.dtype.kind == "U" else None)
        g.attrs.update(attrs)

    def _open(self, target: Path) -> h5py.File:
        f = h5py.File(fresh_tmp(target), "w")
        f.attrs.update(dict(self.meta.attrs))
        for key in self.meta:
            self.meta.copy(self.meta[key], f, name=key)
        return f

    @staticmethod
    def _commit(f: h5py.File, summary: dict, target: Path, expect: dict | None = None, digests: bool = False) -> None:
        """Write the summary (and, with ``digests``, `write_digests`), flush, verify and rename: ``target`` appears
        complete or not at all.

        ``expect`` maps dataset names to the number of rows they must have (checked after the file is
        closed, on a fresh read of it).
        """
        tmp = _tmp_path(target)

        def write():
            f.create_dataset("summary", data=json.dumps(summary), dtype=_STR)
            for k, v in summary.items():
                if isinstance(v, (int, float, str)):
                    f.attrs[k] = v
            if digests:
                f.flush()  # hashed as HDF5 will read them back
                write_digests(f)

        checked_write(tmp, write)
        close_checked(f, tmp)
        _verify(tmp, expect or {})
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)

    def write_checkpoint(self, summary: dict, state: dict, state_attrs: dict, rates=None, spikes=None,
                         states=None) -> Path:
        """Write ``<path>.partial``: everything so far, readable as a run file, plus the state to resume from.

        Parameters
        ----------
        summary : dict
            The run's facts up to the checkpoint (``t_ms`` is the checkpoint's time, if any).
        state : dict of ndarray
            Stored under ``/checkpoint`` (BOLD model state, segment lengths, ...).
        state_attrs : dict
            Scalar attributes of ``/checkpoint`` (kind, step, n_ranks, timings, ...).
        rates : RowSources, optional
            Rank 0's segments holding the rate rows (a simulation run).
        spikes : list of (relative path, n_spikes), optional
            Every segment of every rank (a simulation run).
        states : list of (StateProbe, RowSources), optional
            Recorded state variables (virtual datasets over rank 0's segments).
        """
        target = partial_path(self.path)
        f, expect = checked_write(_tmp_path(target), lambda: self._checkpoint_file(summary, state, state_attrs, rates,
                                                                                   spikes, states))
        self._commit(f, summary, target, expect)
        return target

    def _checkpoint_file(self, summary, state, state_attrs, rates, spikes, states):
        target = partial_path(self.path)
        f = self._open(target)
        if "t_ms" in summary:
            f.attrs["t_ms"] = summary["t_ms"]
        if rates is not None:
            rates.link(f)
        if spikes is not None:
            self._link_spikes(f, [(p, n, 0, n) for p, n in spikes], sorting="none")
        for probe, rows in states or ():
            self._state_group(f, probe, rows.n_rows, rows.bin_ms)
            rows.link(f, f"state/{probe.name}/data")
        g = f.create_group("checkpoint")
        for key, val in state.items():
            g.create_dataset(key, data=val)
        g.attrs.update(state_attrs)
        g.attrs["sha256"] = checkpoint_digest(*checkpoint_content(f))
        expect = {}
        if rates is not None:
            expect["rates/population_hz"] = rates.n_rows
        if spikes is not None:
            expect[f"spikes/{f.attrs['spike_population']}/node_ids"] = sum(n for _, n in spikes)
        return f, expect

    def finish(self, summary: dict, rates=None, spikes=None, states=None, stitch: str = "copy") -> Path:
        """Write the final run file: description, rates (and region rates), spikes and summary.

        Parameters
        ----------
        summary : dict
        rates : RowSources, optional
            Copied into ``/rates/population_hz``; ``/rates/region_hz`` is derived from them.
        spikes : SortedSpikes, or list of (relative path, length, first, stop), optional
            A one-rank run's sorted spikes (`dtb.io.recording.SortedSpikes`), stored as plain
            datasets; or gid-ordered row ranges of the ranks' sorted files, copied in (``stitch`` 'copy':
            the file is self-contained) or linked as virtual datasets ('virtual': the ranks' files stay
            beside it in ``<run>.parts``).
        states : list of (StateProbe, RowSources), optional
            Recorded state variables, copied into ``/state/<variable>/data`` (samples, neurons).

        Every dataset's rows are verified on a fresh read before the file is renamed to its final name.
        """
        f, expect = checked_write(_tmp_path(self.path), lambda: self._final_file(rates, spikes, states, stitch))
        self._commit(f, summary, self.path, expect, digests=True)
        partial_path(self.path).unlink(missing_ok=True)
        return self.path

    def _final_file(self, rates, spikes, states, stitch):
        f = self._open(self.path)
        if rates is not None:
            self._copy_rates(f, rates)
        for probe, rows in states or ():
            self._state_group(f, probe, rows.n_rows, rows.bin_ms)
            ds = f.create_dataset(f"state/{probe.name}/data", shape=(rows.n_rows, probe.n_total), dtype=np.float64)
            at = 0
            for block in rows.blocks(_COPY_ROWS):
                ds[at:at + len(block)] = block
                at += len(block)
        expect = {}
        if rates is not None:
            expect.update({"rates/population_hz": rates.n_rows, "rates/region_hz": rates.n_rows})
        for probe, rows in states or ():
            expect[f"state/{probe.name}/data"] = rows.n_rows
        name = f"spikes/{f.attrs['spike_population']}"
        if hasattr(spikes, "write"):
            grp = f.create_group(name)
            set_sorting(grp, "by_id")
            spikes.write(grp)
            expect[f"{name}/node_ids"] = expect[f"{name}/timestamps"] = spikes.total
        elif spikes is not None:
            if stitch == "virtual":
                self._link_spikes(f, spikes, sorting="by_id")
            else:
                self._copy_spikes(f, spikes)
            expect[f"{name}/node_ids"] = expect[f"{name}/timestamps"] = sum(b - a for _, _, a, b in spikes)
        return f, expect

    def _copy_spikes(self, f: h5py.File, parts: list) -> None:
        """The spikes of the ranks' sorted files, rows ``first:stop`` of each in the given (gid) order, copied
        into ``/spikes/<population>`` in blocks."""
        grp = f.create_group(f"spikes/{f.attrs['spike_population']}")
        set_sorting(grp, "by_id")
        total = sum(stop - first for _, _, first, stop in parts)
        chunks = (min(total, 1 << 16),) if total else None
        out = {name: grp.create_dataset(name, shape=(total,), dtype=dtype, chunks=chunks)
               for name, dtype in (("timestamps", np.float64), ("node_ids", np.uint64))}
        out["timestamps"].attrs["units"] = "ms"
        at = 0
        for rel, _, first, stop in parts:
            with h5py.File(self.path.parent / rel, "r") as src:
                for a in range(first, stop, _COPY_ROWS):
                    b = min(stop, a + _COPY_ROWS)
                    for key, ds in out.items():
                        ds[at:at + b - a] = src[key][a:b]
                    at += b - a

    @staticmethod
    def _state_group(f: h5py.File, probe, n_rows: int, every_ms: float) -> None:
        """``/state/<variable>``: node_ids, times_ms (the state at the end of each sampled step) and units."""
        g = f.create_group(f"state/{probe.name}")
        g.create_dataset("node_ids", data=probe.gids.astype(np.uint64))
        g.create_dataset("times_ms", data=every_ms * np.arange(1, n_rows + 1))
        g.attrs.update(dict(units=probe.units, every_ms=every_ms, axes="sample, neuron"))

    @staticmethod
    def _link_spikes(f: h5py.File, parts: list, sorting: str) -> None:
        """Spikes as virtual datasets: rows ``first:stop`` of each part file's ``timestamps`` and ``node_ids``."""
        grp = f.create_group(f"spikes/{f.attrs['spike_population']}")
        set_sorting(grp, sorting)
        total = sum(stop - first for _, _, first, stop in parts)
        for name, dtype in (("timestamps", np.float64), ("node_ids", np.uint64)):
            if total == 0:
                grp.create_dataset(name, shape=(0,), dtype=dtype)
                continue
            layout = h5py.VirtualLayout(shape=(total,), dtype=dtype)
            at = 0
            for path, length, first, stop in parts:
                if stop > first:
                    layout[at:at + stop - first] = h5py.VirtualSource(path, name, shape=(length,))[first:stop]
                    at += stop - first
            grp.create_virtual_dataset(name, layout)
        grp["timestamps"].attrs["units"] = "ms"

    @staticmethod
    def _copy_rates(f: h5py.File, rates) -> None:
        """Population rates from the segments, and region rates = spikes of a region's populations / its neurons."""
        sizes = f["network/populations/size"][()].astype(np.float64)
        region = f["network/populations/region"][()]
        n_reg = len(f["network/regions"])
        # [population, region]: the population's share of its region's neurons; sparse, as an ensemble has as many
        # regions as members times the brain's
        share = sizes / np.bincount(region, weights=sizes, minlength=n_reg)[region]
        weights = scipy.sparse.csr_array((share, (np.arange(len(sizes)), region)), shape=(len(sizes), n_reg))
        n_rows = rates.n_rows
        chunk = (max(1, min(n_rows, (1 << 16) // max(len(sizes), 1))), len(sizes))
        pop = f.create_dataset("rates/population_hz", shape=(n_rows, len(sizes)), dtype=np.float32,
                               chunks=chunk if n_rows else None)
        reg = f.create_dataset("rates/region_hz", shape=(n_rows, weights.shape[1]), dtype=np.float32)
        at = 0
        for block in rates.blocks(_COPY_ROWS):
            pop[at:at + len(block)] = block
            reg[at:at + len(block)] = (weights.T @ block.T.astype(np.float64)).T.astype(np.float32)
            at += len(block)
        for ds in (pop, reg):
            ds.attrs.update(dict(bin_ms=rates.bin_ms, units="Hz"))

    def abort(self) -> None:
        """After a failure: drop what was written, but keep a checkpoint (and its segments) to resume from."""
        self.meta.close()
        _tmp_path(self.path).unlink(missing_ok=True)
        _tmp_path(partial_path(self.path)).unlink(missing_ok=True)
        if not partial_path(self.path).exists():
            clear_parts(self.path)


def _verify(path: Path, expect: dict) -> None:
    """A `WriteError` unless the file at ``path`` opens and each dataset of ``expect`` has its number of rows
    and reads back (its last row: a dataset whose chunks were never written reads as fill values or fails)."""
    try:
        with h5py.File(path, "r") as f:
            for name, rows in expect.items():
                ds = f[name]
                if ds.shape[0] != rows:
                    raise WriteError(f"{str(path)!r}: {name} has {ds.shape[0]} rows, the run made {rows}: not "
                                     "committed")
                if rows:
                    ds[rows - 1]
    except (OSError, KeyError) as err:
        raise WriteError(f"{str(path)!r} does not read back ({' '.join(str(err).split())}): not committed") from None


def check_structure(f: h5py.File, path: str | Path) -> None:
    """A `DataError` unless the parts of the run file ``f`` agree with each other and with this dtb: its schema
    version, and the shapes and kinds of its network tables, spikes, rates and BOLD (cheap: no data is read, so a
    value damaged in place is not found here).
    """
    name = repr(str(path))
    version = f.attrs.get("schema_version")
    if not isinstance(version, (int, np.integer)) or version < 1:
        raise DataError(f"{name} has no schema_version (a positive integer): not a file dtb wrote")
    if int(version) > SCHEMA_VERSION:
        raise DataError(f"{name} has schema version {int(version)}: written by a newer dtb (this one reads up to "
                        f"{SCHEMA_VERSION})")

    def positive(whose: str, attrs, key: str, required: bool = True) -> None:
        """Refuse a time attribute (ms) that is absent (when required), not a number, not finite or not > 0."""
        value = attrs.get(key)
        if value is None and not required:
            return
        number = isinstance(value, (int, float, np.integer, np.floating))
        if not (number and np.isfinite(value) and value > 0):
            raise DataError(f"{name}: {whose} {key} ({float(value) if number else value!r}) is not a positive "
                            "time")

    t_ms = f.attrs.get("t_ms")
    positive("its", f.attrs, "t_ms", required=False)
    positive("its", f.attrs, "dt_ms", required=False)

    def ds(key: str):
        obj = f.get(key)
        return obj if isinstance(obj, h5py.Dataset) else None

    recorded = f.attrs.get("recorded")
    if recorded is not None:
        if not isinstance(recorded, str):
            raise DataError(f"{name}: its 'recorded' attribute is not a list of group names")
        missing = [p for p in recorded.split(",") if p and p not in f]
        if missing:
            raise DataError(f"{name} lacks /{', /'.join(missing)}, which the run recorded: the file is damaged")
    n_pop = n_reg = None
    if "network" in f:
        names, regions = ds("network/populations/name"), ds("network/regions")
        if names is None or regions is None or names.ndim != 1 or regions.ndim != 1:
            raise DataError(f"{name}: its /network lacks the populations' names or the regions")
        n_pop, n_reg = len(names), len(regions)
        tables = [ds(f"network/populations/{k}") for k in ("size", "first_gid", "region", "excitatory")]
        if any(d is None or d.shape != (n_pop,) for d in tables):
            raise DataError(f"{name}: its /network/populations tables are missing or of other lengths than the "
                            f"{n_pop} names")
        if t_ms is None:
            raise DataError(f"{name}: a simulation's run file without its t_ms")
        if "spikes" in f and f"spikes/{f.attrs.get('spike_population')}" not in f:
            raise DataError(f"{name}: its spike_population ({f.attrs.get('spike_population')!r}) names no group "
                            "of /spikes")
    for key, axis, n, what in (("rates/population_hz", 1, n_pop, "populations"),
                               ("rates/region_hz", 1, n_reg, "regions"), ("bold", 0, n_reg, "regions")):
        d = ds(key)
        if key in f and (d is None or d.ndim != 2 or (n is not None and d.shape[axis] != n)
                         or d.dtype.kind != "f"):
            raise DataError(f"{name}: /{key} is not a table of {n if n is not None else 'the'} {what} (shape "
                            f"{getattr(d, 'shape', None)})")
        if d is not None:
            step = "tr_ms" if key == "bold" else "bin_ms"
            positive(f"/{key}'s", d.attrs, step)
            if t_ms is not None and "network" in f and not {"checkpoint", "assimilation"} & set(f):
                # a finished simulation: a row per bin begun (the last may be partial), a TR per TR completed
                bins = float(t_ms) / float(d.attrs[step])
                want, got = (math.floor(bins + 1e-9), d.shape[1]) if key == "bold" else (math.ceil(bins - 1e-9),
                                                                                          d.shape[0])
                if got != want:
                    raise DataError(f"{name}: /{key} holds {got:,} {'TRs' if key == 'bold' else 'rows'}, but "
                                    f"{float(t_ms):g} ms in steps of {float(d.attrs[step]):g} ms make {want:,}: "
                                    "the file is damaged")
    population = f.attrs.get("spike_population")
    if isinstance(population, str) and f"spikes/{population}" in f:
        times, ids = ds(f"spikes/{population}/timestamps"), ds(f"spikes/{population}/node_ids")
        if times is None or ids is None or times.ndim != 1 or ids.shape != times.shape or \
                times.dtype.kind != "f" or ids.dtype.kind not in "iu":
            raise DataError(f"{name}: /spikes/{population} is not one time (float) and one node id (integer) per "
                            "spike")
        for d in (times, ids):
            open_dataset(f, d.name)  # a virtual one whose source files are missing would read as zeros


def read_summary(path: str | Path) -> dict:
    """The facts ``dtb inspect`` prints, read from a run file.

    Returns
    -------
    dict
        n_neurons, n_synapses, n_spikes, t_ms, mean_rate_hz, rates_hz (per population),
        build_s, sim_s, rtf, bytes_per_synapse, model, seed, dt_ms, dtb_version, ...

    Raises
    ------
    DataError
        Not a readable dtb run file.
    """

    path = Path(path)
    with open_data_file(path, "run file") as f:  # a FIFO is refused, never opened
        if "summary" not in f or not ({"network", "assimilation", "checkpoint"} & set(f)):
            raise DataError(f"{str(path)!r} is not a complete dtb run file (no /summary, or none of /network, "
                            "/assimilation, /checkpoint)")
        check_structure(f, path)
        raw = f["summary"][()]
        try:
            facts = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            if not isinstance(facts, dict):
                raise ValueError("not an object")
        except (ValueError, TypeError, AttributeError):
            raise DataError(f"{str(path)!r} is not a dtb run file (its /summary is not dtb's JSON)") from None
        facts["path"] = str(path)
        return facts
