"""Checkpoints: what a stopped run leaves behind, and what `dtb run --resume` reads.

A checkpoint ``k`` is two kinds of file. Each rank writes its state (membrane and
synaptic state, pending spikes, unfinished rate and BOLD bins) to
``<run>.parts/rank<r>.state<k>.h5``; then rank 0 writes ``<run>.partial``: the run
so far as a readable run file with a ``/checkpoint`` group (step, segment lengths,
BOLD model state, timings). Only after ``<run>.partial`` names checkpoint ``k`` are
the states of ``k - 1`` deleted. Random numbers are keyed by step, so the step is
the generators' whole state.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dtb.config import Config
from dtb.errors import ConfigError, DataError, ResourceError, WriteError
from dtb.io.runfile import (arrays_digest, checked_write, checkpoint_content, checkpoint_digest, RunLock,
                            partial_path)

#: keys a resumed run may change: they do not change the network or what is recorded
RESUMABLE_CHANGES = ("simulation.t_ms", "simulation.threads", "simulation.checkpoint_ms", "recording.progress",
                     "recording.flush_ms", "simulation.memory_check", "simulation.cuda_graphs", "recording.stitch")


def state_path(folder: Path, rank: int, k: int) -> Path:
    return folder / f"rank{rank}.state{k}.h5"


def write_rank_state(folder: Path, rank: int, k: int, arrays: dict) -> None:
    """Store one rank's state of checkpoint ``k`` (written under a temporary name, then renamed).

    The HDF5 file is built in memory and written to disk with plain writes: libhdf5 can crash (SIGSEGV)
    when the disk fills while it flushes a file's metadata, and a plain write fails with ENOSPC instead.
    This holds a second copy of the state for the moment of the write.
    """
    path = state_path(folder, rank, k)
    tmp = path.with_name(path.name + ".tmp")
    # whose state it is, under the digest: a state file copied over another rank's is found as such
    arrays = {**arrays, "meta/rank": np.int64(rank), "meta/checkpoint": np.int64(k)}
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        for key, val in arrays.items():
            f.create_dataset(key, data=val)
        f.attrs["sha256"] = arrays_digest(arrays)  # a flipped bit anywhere is found when it is read

    def write():
        with open(tmp, "wb") as out:
            out.write(image.getbuffer())
            out.flush()
            os.fsync(out.fileno())

    try:
        checked_write(tmp, write)
    except WriteError:
        tmp.unlink(missing_ok=True)  # a part written to a full disk is of no use, and its room helps the rest stop
        raise
    os.replace(tmp, path)


def rank_state(sim, activity=None) -> dict:
    """What one rank's `Simulation` (and `RegionActivity`, if any) needs to go on: name -> ndarray."""
    state = {f"sim/{key}": val for key, val in sim.snapshot().items() if key != "step"}
    if activity is not None:
        state.update({"activity/counts": activity.counts, "activity/ms0": np.int64(activity.ms0)})
    return state


def restore_rank_state(state: dict, step: int, sim, activity=None) -> None:
    """Put a `rank_state` back into ``sim`` (at ``step``) and ``activity``."""
    sim.restore({**{k[4:]: v for k, v in state.items() if k.startswith("sim/")}, "step": step})
    if activity is not None:
        activity.counts, activity.ms0 = state["activity/counts"], int(state["activity/ms0"])


def read_rank_state(folder: Path, rank: int, k: int) -> dict:
    """One rank's state of checkpoint ``k``: name -> ndarray (scalars as 0-d arrays)."""
    path = state_path(folder, rank, k)
    try:
        with h5py.File(path, "r") as f:
            out = {}
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
            stored = f.attrs.get("sha256")
    except (OSError, RuntimeError, KeyError) as err:
        raise DataError(f"checkpoint state {str(path)!r} is missing or unreadable ({' '.join(str(err).split())})") \
            from None
    if stored is None or stored != arrays_digest(out):
        raise DataError(f"checkpoint state {str(path)!r} is damaged (its content does not match its digest)")
    owner = (int(out.pop("meta/rank", rank)), int(out.pop("meta/checkpoint", k)))  # absent from an earlier dtb's files
    if owner != (rank, k):
        raise DataError(f"checkpoint state {str(path)!r} holds rank {owner[0]}'s state of checkpoint {owner[1]}, not "
                        f"rank {rank}'s of checkpoint {k}: a file copied or renamed by hand?")
    return out


@dataclass
class Checkpoint:
    """The last checkpoint of an unfinished job (read from ``<run>.partial``).

    Attributes
    ----------
    path : Path
        Final path of the run.
    config_toml : str
        The job's resolved configuration ('' for a network built in Python).
    attrs : dict
        Scalar attributes of ``/checkpoint``: kind ('run' or 'assimilation'), step, n_ranks, segments
        (closed segments = checkpoint index + 1), build_s, sim_s, fingerprint, and the client's own.
    arrays : dict of ndarray
        Datasets of ``/checkpoint`` (spike_rows (n_ranks, segments), rate_rows, balloon_state, the
        client's own) and ``bold`` (n_regions, n_trs) if the file has ``/bold``.
    """

    path: Path
    config_toml: str
    attrs: dict
    arrays: dict


def resume_target(path: str | Path) -> Path:
    """The final path of the run ``path`` names (the run file or its ``.partial``)."""
    path = Path(path)
    return path.with_name(path.name[: -len(".partial")]) if path.name.endswith(".partial") else path


def _has_summary(path: Path) -> bool:
    """Whether the HDF5 file ``path`` has a run's /summary (a connectome file has none)."""
    try:
        with h5py.File(path, "r") as f:
            return "summary" in f
    except OSError:
        return False


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The last checkpoint of the unfinished run ``path`` (a `DataError` if there is none)."""
    final = resume_target(path)
    if final.exists():
        RunLock(final).check_free()
        if not (final.is_file() and h5py.is_hdf5(final) and _has_summary(final)):  # a config or a connectome
            raise DataError(f"--resume {str(final)!r}: not a run file (--resume takes the run's path: dtb run "
                            "[CONFIG] --resume RUN)")
        if not partial_path(final).exists():
            raise ResourceError(f"{str(final)!r} is a finished run: nothing to resume")
        # else an --overwrite of it stopped after a checkpoint: resume that; the old run stays until it commits
    partial = partial_path(final)
    if not partial.exists():
        raise DataError(f"no checkpoint to resume: {str(partial)!r} does not exist (checkpoints are written when "
                        "simulation.checkpoint_ms > 0)")
    if not partial.is_file():  # a FIFO would block, a folder cannot be one
        raise DataError(f"{str(partial)!r} is not a regular file: not a checkpoint")
    try:
        f = h5py.File(partial, "r")
    except OSError as err:
        raise DataError(f"{str(partial)!r} is not a readable HDF5 file ({err})") from None
    with f:
        if not isinstance(f.get("checkpoint"), h5py.Group) or not isinstance(f.get("config"), h5py.Dataset):
            raise DataError(f"{str(partial)!r} holds no checkpoint")
        try:
            arrays, attrs, config = checkpoint_content(f)
            intact = attrs.pop("sha256", None) == checkpoint_digest(arrays, attrs, config)
            config = config.decode()
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as err:  # ValueError: a config that is no UTF-8 too
            raise DataError(f"{str(partial)!r}: the checkpoint is damaged ({' '.join(str(err).split())})") from None
    if not intact:  # the attributes, the BOLD so far and the stored config included
        raise DataError(f"{str(partial)!r}: the checkpoint is damaged (its content does not match its digest); start "
                        "the run again with --overwrite")
    ck = Checkpoint(final, config, attrs, arrays)
    _check_checkpoint(ck, partial)
    return ck


def _check_checkpoint(ck: Checkpoint, partial: Path) -> None:
    """A `DataError` unless the checkpoint has what a resume reads, with consistent shapes."""
    def bad(why):
        return DataError(f"{str(partial)!r}: the checkpoint is damaged ({why}); start the run again with --overwrite")

    a = ck.attrs
    for key in ("step", "n_ranks", "segments"):
        v = a.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "step" else 1):
            raise bad(f"attribute {key} = {v!r}")
    for key in ("build_s", "sim_s"):
        if not isinstance(a.get(key), (int, float)):
            raise bad(f"attribute {key} = {a.get(key)!r}")
    if a.get("kind", "run") == "run":
        rows = ck.arrays.get("spike_rows")
        if rows is None or np.shape(rows) != (a["n_ranks"], a["segments"]) or np.any(np.asarray(rows) < 0):
            raise bad(f"spike_rows has shape {np.shape(rows)}, expected {(a['n_ranks'], a['segments'])}")
        rates = ck.arrays.get("rate_rows")
        if rates is None or np.shape(rates) != (a["segments"],):
            raise bad(f"rate_rows has shape {np.shape(rates)}, expected {(a['segments'],)}")


def _flat(cfg: Config) -> dict:
    out = {}
    for sec, val in cfg.to_dict().items():
        if isinstance(val, dict):
            out.update({f"{sec}.{k}": v for k, v in val.items()})
        else:
            out[sec] = val
    return out


def check_resumable(stored: Config, cfg: Config, step: int) -> None:
    """A `ConfigError` unless ``cfg`` continues the run of ``stored`` (same network, recording, seed) from ``step``."""
    a, b = _flat(stored), _flat(cfg)
    changed = [k for k in a if a[k] != b.get(k) and k not in RESUMABLE_CHANGES]
    if changed:
        shown = "; ".join(f"{k} = {b.get(k)!r} (the run has {a[k]!r})" for k in changed[:4])
        raise ConfigError(f"--resume: the config changes the run: {shown}. A resumed run builds the same network "
                          f"and records the same things; only {', '.join(RESUMABLE_CHANGES)} may change")
    t_done = step * cfg.simulation.dt_ms
    if cfg.simulation.t_ms < t_done:
        raise ConfigError(f"--resume: simulation.t_ms = {cfg.simulation.t_ms:g} is before the checkpoint's time "
                          f"({t_done:g} ms)")
