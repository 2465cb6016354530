"""HDF5 reading shared by the input loaders and the run-file readers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from dtb.errors import DataError


def open_data_file(path: Path, what: str = "connectome file") -> h5py.File:
    """Open an input HDF5 file for reading; a `DataError` naming ``what`` and the path if it cannot be."""
    check_input_file(path, what)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{what} {str(path)!r} is not a readable HDF5 file ({' '.join(str(err).split())})") from None


def check_input_file(path: Path, what: str, folder_ok: bool = False) -> None:
    """A `DataError` unless ``path`` is an existing regular file (or, with ``folder_ok``, a folder)."""
    try:
        exists, regular, folder = path.exists(), path.is_file(), path.is_dir()
    except OSError as err:  # a name too long
        raise DataError(f"{what} {str(path)[:200]!r} is not a usable path ({err.strerror})") from None
    if not exists:
        raise DataError(f"{what} {str(path)!r} does not exist")
    if not (regular or folder_ok and folder):  # a FIFO would block, a device read forever
        raise DataError(f"{what} {str(path)!r} is not a regular file")


def open_dataset(f: h5py.File, name: str) -> h5py.Dataset:
    """``f[name]``; for a virtual dataset, its sources resolved against the file's own folder (never the working
    directory), and a `DataError` naming any source file that is missing (HDF5 would read fill values)."""
    ds = f[name]
    if not ds.is_virtual:
        return ds
    folder = Path(f.filename).resolve().parent
    missing = sorted({m.file_name for m in ds.virtual_sources()
                      if m.file_name != "." and not (folder / m.file_name).is_file()})
    if missing:
        hint = " (a checkpoint or a recording.stitch = 'virtual' run needs its <run>.parts folder beside it)" \
            if "schema_version" in f.attrs else ""  # a run file of dtb's
        raise DataError(f"{f.filename}: {name} is stored in other files that are missing: "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}{hint}")
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_virtual_prefix(str(folder).encode())
    return h5py.Dataset(h5py.h5d.open(f.id, name.encode(), dapl))


#: the most cells of an input dataset read whole (2 GiB of float64: a 16,384-region matrix); a chunked dataset
#: that is never written takes no disk, so its shape, not its file's size, tells what reading it would allocate
MAX_INPUT_CELLS = 2**28


def check_cells(ds: h5py.Dataset, where: str) -> h5py.Dataset:
    """``ds``, or a `DataError` naming ``where`` and its shape when it holds more than `MAX_INPUT_CELLS` cells:
    checked from its shape, before it is read."""
    if ds.size is not None and ds.size > MAX_INPUT_CELLS:
        raise DataError(f"{where} has shape {ds.shape}: too large for an input (at most {MAX_INPUT_CELLS:,} cells)")
    return ds


def read_numbers(f: h5py.File, name: str) -> np.ndarray:
    """The dataset ``name`` of ``f`` read whole as float64, or a `DataError` naming it: a link that leads nowhere
    (a missing external file, a loop of soft links), no dataset, a dtype that is not integer or real (complex,
    strings, compounds, booleans), more cells than `MAX_INPUT_CELLS`, a virtual dataset whose sources are missing
    (`open_dataset`)."""
    where = f"{f.filename}: '{name}'"
    try:
        ds = f[name]
    except (KeyError, RuntimeError, OSError) as err:
        raise DataError(f"{where} cannot be opened ({' '.join(str(err).split())})") from None
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{where} is not a dataset")
    if ds.dtype.kind not in "iuf":
        raise DataError(f"{where} is not numeric (dtype {ds.dtype})")
    check_cells(ds, where)
    try:
        return np.asarray(open_dataset(f, name)[()], dtype=np.float64)
    except (RuntimeError, OSError) as err:
        raise DataError(f"{where} cannot be read (truncated or corrupt file? {' '.join(str(err).split())})") from None


def read_labels(f: h5py.File, name: str = "labels") -> list[str]:
    """The region names in ``f[name]``, one per region (a 1-d dataset of UTF-8 strings, or of integers: an atlas's
    region numbers), or a `DataError` naming the file."""
    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
        raise DataError(f"{f.filename}: '/{name}' has shape {getattr(ds, 'shape', None)}: one name per region, a "
                        "1-d dataset")
    if ds.dtype.kind not in "SOUiu":
        raise DataError(f"{f.filename}: '/{name}' holds {ds.dtype} values: region names are text or integers")
    check_cells(ds, f"{f.filename}: '/{name}'")
    try:
        return [lab.decode() if isinstance(lab, bytes) else str(lab) for lab in ds[()]]
    except UnicodeDecodeError as err:
        raise DataError(f"{f.filename}: '/{name}' is not UTF-8 text ({err})") from None
