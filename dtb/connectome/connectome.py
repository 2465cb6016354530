"""The Connectome: region labels, sizes, coupling and fibre lengths, read and validated."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import h5py
import numpy as np

from dtb.errors import DataError


def bundled_connectome_path() -> Path:
    """Path of the HCP/AAL2 connectome shipped inside the package (see dtb/data/PROVENANCE.md)."""
    return Path(str(resources.files("dtb") / "data" / "hcp_aal2.h5"))


@dataclass(frozen=True)
class Connectome:
    """One subject's structural connectome.

    Attributes
    ----------
    labels : list of str, length R
        Region names.
    nvoxel : ndarray, shape (R,), int64
        Region sizes (voxels); neurons are allotted in proportion.
    sc : ndarray, shape (R, R), float64
        Structural coupling (DTI streamline counts), symmetric, zero diagonal.
    len_mm : ndarray, shape (R, R), float64
        Mean fibre length (mm); positive wherever sc is positive.
    waytotal : ndarray, shape (R,), float64
        Streamlines started per region (a tractography normaliser).
    subject : str
    source : str
        File the data came from.
    """

    labels: list
    nvoxel: np.ndarray
    sc: np.ndarray
    len_mm: np.ndarray
    waytotal: np.ndarray
    subject: str
    source: str

    @property
    def n_regions(self) -> int:
        return len(self.labels)

    def long_range_probabilities(self, normalisation: str) -> np.ndarray:
        """Row-stochastic matrix P[target, source] of long-range source regions.

        Parameters
        ----------
        normalisation : {'row', 'waytotal'}
            'row': P[i, j] = sc[i, j] / sum_j sc[i, j]. 'waytotal': sc[i, j] / waytotal[j]
            (streamlines per streamline seeded in the source), then row-normalised.

        Returns
        -------
        ndarray, shape (R, R), float64
            Rows sum to 1, zero diagonal.
        """
        w = np.array(self.sc, dtype=np.float64)
        if normalisation == "waytotal":
            w = w / np.maximum(self.waytotal, 1.0)[None, :]
        elif normalisation != "row":
            raise ValueError(normalisation)
        np.fill_diagonal(w, 0.0)
        return w / w.sum(axis=1, keepdims=True)


def list_subjects(path: str | Path) -> list[str]:
    """Subject ids in a connectome file."""
    with open_data_file(Path(path)) as f:
        return sorted(f["subjects"].keys()) if "subjects" in f else []


def open_data_file(path: Path, what: str = "connectome file") -> h5py.File:
    """Open an input HDF5 file for reading; a `DataError` naming ``what`` and the path if it cannot be."""
    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as err:  # a name too long
        raise DataError(f"{what} {str(path)[:200]!r} is not a usable path ({err.strerror})") from None
    if not exists:
        raise DataError(f"{what} {str(path)!r} does not exist")
    if not regular:  # a FIFO would block, a device read forever
        raise DataError(f"{what} {str(path)!r} is not a regular file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{what} {str(path)!r} is not a readable HDF5 file ({' '.join(str(err).split())})") from None


def load_connectome(path: str | Path | None = None, subject: str = "101309") -> Connectome:
    """Read and validate one subject from a file with the layout of the bundled one.

    Parameters
    ----------
    path : str or Path, optional
        HDF5 file with ``/labels`` and ``/subjects/<id>/{sc,len_mm,nvoxel,waytotal}``;
        None reads the bundled HCP/AAL2 file.
    subject : str
        Subject id.

    Returns
    -------
    Connectome

    Raises
    ------
    DataError
        Missing file or dataset, unknown subject, wrong shapes, NaN/inf, negative
        values, an empty region, an asymmetric sc, a region with no connections, or
        a connection with no fibre length.
    """
    path = Path(path) if path is not None else bundled_connectome_path()
    name = str(path)
    with open_data_file(path) as f:
        try:
            labels, data = _read_subject(f, name, subject)
        except (OSError, KeyError, RuntimeError) as err:  # damaged bytes, a dangling external link, a link loop
            raise DataError(f"{name}: cannot read subject {subject!r} ({' '.join(str(err).split())})") from None
    n = len(labels)
    if len(set(labels)) != n:
        dup = next(lab for lab in labels if labels.count(lab) > 1)
        raise DataError(f"{name}: /labels names region {dup!r} twice")
    where = f"{name}: /subjects/{subject}"
    expect = {"sc": (n, n), "len_mm": (n, n), "nvoxel": (n,), "waytotal": (n,)}
    for key, shape in expect.items():
        arr = data[key]
        if arr.shape != shape:
            raise DataError(f"{where}/{key} has shape {arr.shape}, expected {shape} ({n} labels)")
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{where}/{key} contains NaN or inf at {_first(~np.isfinite(arr))}")
        if np.any(arr < 0):
            raise DataError(f"{where}/{key} has negative values at {_first(arr < 0)}")
    sc, len_mm = data["sc"], data["len_mm"]
    if n < 2:
        raise DataError(f"{name}: needs at least 2 regions, has {n}")
    if np.any(data["nvoxel"] != np.round(data["nvoxel"])):
        raise DataError(f"{where}/nvoxel is not a whole number of voxels at {_first(data['nvoxel'] != np.round(data['nvoxel']))}")
    if np.any(data["nvoxel"] == 0):
        raise DataError(f"{where}/nvoxel: region {labels[int(np.argmax(data['nvoxel'] == 0))]!r} is empty (0 voxels)")
    if not np.allclose(sc, sc.T, rtol=1e-6, atol=0.0):
        asym = np.abs(sc - sc.T)
        raise DataError(f"{where}/sc is not symmetric (largest difference at {_first(asym == asym.max())})")
    off = sc - np.diag(np.diag(sc))
    if np.any(off.sum(axis=1) == 0):
        raise DataError(f"{where}/sc: region {labels[int(np.argmax(off.sum(axis=1) == 0))]!r} has no connections")
    bad = (off > 0) & (len_mm <= 0)
    if np.any(bad):
        raise DataError(f"{where}/len_mm is 0 where sc > 0 at {_first(bad)}")
    return Connectome(labels=labels, nvoxel=data["nvoxel"].astype(np.int64), sc=sc, len_mm=len_mm,
                      waytotal=data["waytotal"], subject=subject, source=name)


def _read_subject(f: h5py.File, name: str, subject: str) -> tuple[list[str], dict]:
    """The labels and the subject's four arrays (float64), each checked to be a real, numeric dataset."""
    if "labels" not in f or not isinstance(f["labels"], h5py.Dataset):
        raise DataError(f"{name}: missing dataset '/labels'")
    subjects = sorted(f["subjects"].keys()) if isinstance(f.get("subjects"), h5py.Group) else []
    if subject not in subjects:
        raise DataError(f"{name}: subject {subject!r} not in file (has: {', '.join(subjects) or 'none'})")
    grp = f["subjects"][subject]
    if not isinstance(grp, h5py.Group):
        raise DataError(f"{name}: '/subjects/{subject}' is not a group of datasets")
    data = {}
    for key in ("sc", "len_mm", "nvoxel", "waytotal"):
        ds = grp.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise DataError(f"{name}: missing dataset '/subjects/{subject}/{key}'")
        if ds.dtype.kind not in "iuf":  # complex, strings, compounds
            raise DataError(f"{name}: '/subjects/{subject}/{key}' is not numeric (dtype {ds.dtype})")
        if ds.is_virtual:
            from dtb.io.hdf5 import open_dataset

            ds = open_dataset(f, ds.name)  # a source file that is missing would read as zeros
        data[key] = np.asarray(ds[()], dtype=np.float64)
    try:
        labels = [lab.decode() if isinstance(lab, bytes) else str(lab) for lab in np.atleast_1d(f["labels"][()])]
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: '/labels' is not UTF-8 text ({err})") from None
    return labels, data


def _first(mask: np.ndarray) -> str:
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return "index " + str(idx if len(idx) > 1 else idx[0])
