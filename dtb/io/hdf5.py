"""HDF5 reading shared by the input loaders and the run-file readers."""

from __future__ import annotations

from pathlib import Path

import h5py

from dtb.errors import DataError


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
        raise DataError(f"{f.filename}: {name} is stored in other files that are missing: "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} (a checkpoint or a "
                        "recording.stitch = 'virtual' run needs its <run>.parts folder beside it)")
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_virtual_prefix(str(folder).encode())
    return h5py.Dataset(h5py.h5d.open(f.id, name.encode(), dapl))
