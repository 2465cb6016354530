"""The Connectome: region labels, sizes, coupling and fibre lengths, read and validated."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import h5py
import numpy as np

from dtb.errors import DataError, deferred_warnings
from dtb.io.hdf5 import check_input_file, open_data_file, read_labels, read_numbers


def bundled_connectome_path() -> Path:
    """Path of the HCP/AAL2 connectome shipped inside the package (see dtb/data/PROVENANCE.md)."""
    return Path(str(resources.files("dtb") / "data" / "hcp_aal2.h5"))


#: how a connectome's matrices are laid out: 'targets' = rows are the regions that receive (sc[i, j] is the
#: connection from j to i, The Virtual Brain's convention and dtb's own); 'sources' = rows are the regions that send
#: (the Brain Connectivity Toolbox's)
SC_ROWS = ("targets", "sources")


@dataclass(frozen=True)
class Connectome:
    """One subject's structural connectome.

    Attributes
    ----------
    labels : list of str, length R
        Region names.
    nvoxel : ndarray, shape (R,), float64
        Region sizes: voxel counts, or any positive measure (TVB's areas, mm^2) that neurons are allotted in
        proportion to.
    sc : ndarray, shape (R, R), float64
        Structural coupling (streamline counts or weights), ``sc[target, source]``: row i holds what region i
        receives. Directed (asymmetric) coupling is allowed. The diagonal is not used.
    len_mm : ndarray, shape (R, R), float64
        Mean fibre length (mm), ``[target, source]``; positive wherever sc is positive.
    waytotal : ndarray, shape (R,), float64, or None
        Streamlines started per region (a tractography normaliser), where the file has it.
    subject : str
    source : str
        File the data came from.
    """

    labels: list
    nvoxel: np.ndarray
    sc: np.ndarray
    len_mm: np.ndarray
    waytotal: np.ndarray | None
    subject: str
    source: str

    @property
    def n_regions(self) -> int:
        return len(self.labels)

    @property
    def without_input(self) -> list[str]:
        """Regions that receive no long-range connection (an empty row of ``sc`` off the diagonal)."""
        off = self.sc - np.diag(np.diag(self.sc))
        return [self.labels[i] for i in np.flatnonzero(off.sum(axis=1) == 0)]

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
            Rows sum to 1, zero diagonal; the row of a region without long-range input is all zeros.

        Raises
        ------
        DataError
            'waytotal' for a connectome without waytotal.
        """
        w = np.array(self.sc, dtype=np.float64)
        if normalisation == "waytotal":
            if self.waytotal is None:
                raise DataError(f"{self.source}: wholebrain.sc_normalisation = 'waytotal' needs the regions' "
                                "waytotal, which this connectome does not have (use 'row')")
            w = w / np.maximum(self.waytotal, 1.0)[None, :]
        elif normalisation != "row":
            raise ValueError(normalisation)
        np.fill_diagonal(w, 0.0)
        total = w.sum(axis=1, keepdims=True)
        return w / np.where(total > 0, total, 1.0)


def list_subjects(path: str | Path) -> list[str]:
    """Subject ids in a connectome file."""
    with open_data_file(Path(path)) as f:
        return sorted(f["subjects"].keys()) if "subjects" in f else []


#: the largest ratio of two regions' sizes (beyond it the smallest region of a 1e12-neuron brain gets no neuron)
MAX_SIZE_RATIO = 1e12


def load_connectome(path: str | Path | None = None, subject: str = "101309", *, lengths: str | Path | None = None,
                    labels: str | Path | None = None, sizes: str | Path | None = None,
                    sc_rows: str = "targets") -> Connectome:
    """Read and validate a connectome: dtb's HDF5, a TVB connectivity, or a weights matrix.

    Parameters
    ----------
    path : str or Path, optional
        One of (the format is recognised from the content, then the suffix):

        - dtb's HDF5 (``/labels``, ``/subjects/<id>/{sc, len_mm, nvoxel or size[, waytotal]}``); None reads the
          bundled HCP/AAL2 file;
        - a TVB connectivity, zipped or as its folder (``weights.txt``, ``tract_lengths.txt``, ``centres.txt``,
          optional ``areas.txt``, ``region_labels.txt``);
        - a weights matrix: CSV/TSV/whitespace text (MRtrix3 ``tck2connectome``, upper triangular or full, an
          optional header row or column of labels), ``.npy``, or ``.mat`` (DSI Studio's ``connectivity`` and
          ``name``).
    subject : str
        Subject id inside an HDF5 file (the other formats hold one subject, named after the file).
    lengths, labels, sizes : str or Path, optional
        For a weights matrix (they override what a TVB folder has): fibre lengths in mm (a matrix file of the same
        layout), region names (one per line, or a FreeSurfer/MRtrix3 lookup table), region sizes (one number per
        line in region order, or ``label,value`` rows).
    sc_rows : {'targets', 'sources'}
        Whether the file's matrix rows are the receiving regions (TVB, dtb) or the sending ones (`SC_ROWS`); the
        result is always ``[target, source]``. A triangular matrix (MRtrix3) is mirrored, so this does not matter.

    Returns
    -------
    Connectome

    Raises
    ------
    DataError
        A missing or unreadable file, every missing dataset of an HDF5 file at once, an unknown subject, wrong
        shapes, NaN/inf, negative values, an empty region, or a connection with no fibre length.

    Warns
    -----
    UserWarning
        Regions without long-range input (they get local input only); region sizes that are not in the file
        (uniform); fibre lengths taken from the distance of the region centres.
    """
    with deferred_warnings():  # a bad input gets its one error line, not the warnings found before it
        return _read_connectome(path, subject, lengths, labels, sizes, sc_rows)


def _read_connectome(path, subject: str, lengths, labels, sizes, sc_rows: str) -> Connectome:
    """`load_connectome`, its warnings given as they arise."""
    from dtb.connectome import formats

    if sc_rows not in SC_ROWS:
        raise DataError(f"sc_rows = {sc_rows!r}: must be one of {', '.join(SC_ROWS)}")
    for what, value in dict(connectome=path, lengths=lengths, labels=labels, sizes=sizes).items():
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise DataError(f"the {what} path {value!r}: must be a file name (a str or a path)")
        if value is not None and str(value) == "":  # Path("") would be the working directory
            raise DataError(f"the {what} path is empty")
    path = Path(path) if path is not None else bundled_connectome_path()
    check_input_file(path, "connectome", folder_ok=True)
    name = str(path)
    if is_dtb_hdf5(path):
        with open_data_file(path) as f:
            try:
                lab, data = _read_subject(f, name, str(subject))
            except (OSError, KeyError, RuntimeError) as err:  # damaged bytes, a dangling external link, a link loop
                raise DataError(f"{name}: cannot read subject {subject!r} ({' '.join(str(err).split())})") from None
        where = f"{name}: /subjects/{subject}"
        if "nvoxel" in data and np.any(data["nvoxel"] != np.round(data["nvoxel"])):
            raise DataError(f"{where}/nvoxel is not a whole number of voxels at "
                            f"{_first(data['nvoxel'] != np.round(data['nvoxel']))}")
        size_key = "nvoxel" if "nvoxel" in data else "size"
        data["size"] = data.pop(size_key)
        keys = dict(size=size_key)
        sub = str(subject)
    else:
        lab, data = formats.read_foreign(path)
        where, keys, sub = name, {}, subject_of(path, subject)
    if lengths is not None:
        data["len_mm"] = formats.read_matrix_file(Path(lengths), "fibre lengths")[0]
    if labels is not None:
        lab = formats.read_labels(Path(labels))
    if sc_rows == "sources":
        data["sc"], data["len_mm"] = data["sc"].T, (data["len_mm"].T if data.get("len_mm") is not None else None)
    return _validated(lab, data, sizes, sub, name, where, keys)


def is_dtb_hdf5(path: Path) -> bool:
    """Whether ``path`` is read as dtb's HDF5 layout: an HDF5 suffix, or HDF5 content that is not a MATLAB
    v7.3 ``.mat``."""
    return path.is_file() and (path.suffix.lower() in (".h5", ".hdf5", ".hdf")
                               or h5py.is_hdf5(path) and path.suffix.lower() != ".mat")


def subject_of(path: Path | None, subject: str) -> str:
    """The subject a connectome file holds: ``subject`` in an HDF5 file, else the file's name without suffixes
    (the other formats hold one subject)."""
    if path is None or is_dtb_hdf5(Path(path)):
        return str(subject)
    path = Path(path)
    return path.name if path.is_dir() else path.name.split(".")[0]


#: the largest fibre length (mm) and other value (a weight, a size, a streamline count) a connectome may hold: their
#: sums and the neurons allotted stay finite, and a length in micrometres or a size in voxels of 1e-6 mm^3 is found
MAX_LEN_MM = 1e4
MAX_VALUE = 1e15
#: the shortest fibre length (mm) of a connection: 1 um, far below any tract, so a smaller one is a unit or
#: file error (a denormal 1e-320 would give a delay of 0)
MIN_LEN_MM = 1e-3


def _validated(labels, data: dict, sizes, subject: str, name: str, where: str, keys: dict) -> Connectome:
    """A `Connectome` from read arrays (``sc``, ``len_mm`` or ``centres``, ``size`` or None, ``waytotal`` or None),
    every check made; ``keys`` names the file's datasets in messages."""
    from dtb.connectome import formats

    sc = data["sc"]
    if sc.ndim != 2 or (not keys and sc.shape[0] != sc.shape[1]):
        raise DataError(f"{where}: the weights matrix has shape {sc.shape}, expected a square matrix")
    if labels is None:
        labels = [f"R{i:03d}" for i in range(sc.shape[0])]
    n = len(labels)  # an HDF5 file's /labels set the size its datasets are checked against
    if not keys and sc.shape[0] != n:
        raise DataError(f"{where}: {n} region labels for a {sc.shape[0]} x {sc.shape[0]} weights matrix")
    if n < 2:
        raise DataError(f"{name}: needs at least 2 regions, has {n}")
    odd = next((lab for lab in labels if not lab or any(ord(c) < 32 or ord(c) == 127 for c in lab)), None)
    if odd is not None:
        raise DataError(f"{name}: region label {odd!r} is empty or holds a control character (a NUL, a tab)")
    fraction = next((lab for lab in labels if formats.is_number(lab) and math.isfinite(formats.text_float(lab))
                     and not formats.text_float(lab).is_integer()), None)
    if fraction is not None:  # a row of values taken for names; integer labels (region indices) are fine
        raise DataError(f"{name}: region label {fraction!r} is a fraction, not a name or an integer index")
    if len(set(labels)) != n:
        dup = next(lab for lab in labels if labels.count(lab) > 1)
        raise DataError(f"{name}: {'/labels names' if keys else 'the region labels name'} region {dup!r} twice")
    sc, tri = formats.mirror_triangular(sc)
    if data.get("len_mm") is None:
        if data.get("centres") is None:
            raise DataError(f"{where}: no fibre lengths (give a lengths file: wholebrain.lengths_file, or "
                            "dtb connectome import --lengths)")
        warnings.warn(f"{name}: no tract lengths, so fibre length = the distance of the region centres (as TVB "
                      "does)", stacklevel=3)
        data["len_mm"] = _centre_distances(data["centres"])
    len_mm = data["len_mm"] if not tri else formats.mirror_triangular(data["len_mm"])[0]
    if sizes is not None:
        data["size"] = formats.read_sizes(Path(sizes), labels)
        keys = {**keys, "size": f"sizes file {str(sizes)!r}"}
    if data.get("size") is None:
        warnings.warn(f"{name}: no region sizes, so every region gets the same number of neurons (give a sizes "
                      "file: wholebrain.sizes_file)", stacklevel=3)
        data["size"] = np.ones(n)
    arrays = {"sc": sc, "len_mm": len_mm, "size": data["size"]}
    if data.get("waytotal") is not None:
        arrays["waytotal"] = data["waytotal"]
    for key, arr in arrays.items():
        shape = (n, n) if key in ("sc", "len_mm") else (n,)
        label = f"{where}/{keys.get(key, key)}" if keys else f"{where}: {key}"
        if arr.shape != shape:
            raise DataError(f"{label} has shape {arr.shape}, expected {shape} ({n} regions)")
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{label} contains NaN or inf at {_first(~np.isfinite(arr))}")
        if np.any(arr < 0):
            raise DataError(f"{label} has negative values at {_first(arr < 0)}")
        denormal = (arr > 0) & (arr < np.finfo(np.float64).tiny)
        if np.any(denormal):  # below what a float holds at full precision: a file error, never a measurement
            raise DataError(f"{label} has values below {np.finfo(np.float64).tiny:.3g} at {_first(denormal)}: not "
                            "a measured value")
        most = MAX_LEN_MM if key == "len_mm" else MAX_VALUE
        if np.any(arr > most):
            raise DataError(f"{label} has values over {most:g} at {_first(arr > most)}"
                            f"{' (fibre lengths are in mm)' if key == 'len_mm' else ''}")
    size = arrays["size"]
    if np.any(size == 0):
        label = f"{where}/{keys.get('size', 'size')}" if keys else f"{where}: size"
        raise DataError(f"{label}: region {labels[int(np.argmax(size == 0))]!r} is empty (size 0)")
    if size.size and float(size.max()) > MAX_SIZE_RATIO * float(size.min()):
        label = f"{where}/{keys.get('size', 'size')}" if keys else f"{where}: size"
        raise DataError(f"{label}: region sizes from {float(size.min()):.3g} to {float(size.max()):.3g} span a ratio "
                        f"over {MAX_SIZE_RATIO:.0e}: no network of up to 1e12 neurons gives the smallest region one")
    off = sc - np.diag(np.diag(sc))
    bad = (off > 0) & (len_mm <= 0)
    if np.any(bad) and data.get("centres") is not None and data["centres"].shape == (n, 3):
        # TVB runs such files with zero delays; dtb needs a length: the centres' distance, where the centres
        # differ, else the file's shortest fibre
        far = _centre_distances(data["centres"])
        shortest = len_mm[(off > 0) & (len_mm > 0)].min(initial=np.inf)
        if np.isfinite(shortest):
            warnings.warn(f"{name}: {int(bad.sum())} connections have no fibre length (0 where sc > 0), so theirs "
                          f"is the distance of the region centres, or where that is 0 too the shortest fibre "
                          f"({shortest:.3g} mm)", stacklevel=3)
            len_mm = np.where(bad, np.where(far > 0, far, shortest), len_mm)
            bad = bad & (len_mm <= 0)
    if np.any(bad):
        raise DataError(f"{where}{'/' if keys else ': '}len_mm is 0 where sc > 0 at {_first(bad)}")
    short = (off > 0) & (len_mm < MIN_LEN_MM)
    if np.any(short):
        raise DataError(f"{where}{'/' if keys else ': '}len_mm is below {MIN_LEN_MM:g} mm (1 um) where sc > 0 at "
                        f"{_first(short)}: not a fibre length (lengths are in mm)")
    con = Connectome(labels=list(labels), nvoxel=size.astype(np.float64), sc=sc, len_mm=len_mm,
                     waytotal=arrays.get("waytotal"), subject=subject, source=name)
    alone = con.without_input
    if alone:
        warnings.warn(f"{name}: {len(alone)} region{'s' if len(alone) > 1 else ''} without long-range input get "
                      f"local input only: {', '.join(alone[:5])}{', ...' if len(alone) > 5 else ''}", stacklevel=3)
    return con


def _centre_distances(centres: np.ndarray) -> np.ndarray:
    """Euclidean distances (R, R) between region centres (R, 3), in the centres' unit (mm)."""
    return np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))


def _read_subject(f: h5py.File, name: str, subject: str) -> tuple[list[str], dict]:
    """The labels and the subject's arrays (float64), each checked to be a real, numeric dataset; every missing
    one named in one error."""
    subjects = sorted(f["subjects"].keys()) if isinstance(f.get("subjects"), h5py.Group) else []
    has_labels = "labels" in f and isinstance(f["labels"], h5py.Dataset)
    if subject not in subjects:
        raise DataError(f"{name}: subject {subject!r} not in file (has: {', '.join(subjects) or 'none'})")
    grp = f["subjects"][subject]
    if not isinstance(grp, h5py.Group):
        raise DataError(f"{name}: '/subjects/{subject}' is not a group of datasets")
    missing = [] if has_labels else ["/labels"]
    present = {key for key in ("sc", "len_mm", "nvoxel", "size", "waytotal")
               if isinstance(grp.get(key), h5py.Dataset)}
    for key in ("sc", "len_mm"):
        if key not in present:
            missing.append(f"/subjects/{subject}/{key}")
    if not present & {"nvoxel", "size"}:
        missing.append(f"/subjects/{subject}/nvoxel (or size)")
    if missing:
        raise DataError(f"{name}: missing dataset{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    data = {}
    for key in sorted(present - ({"size"} if "nvoxel" in present else set())):
        data[key] = read_numbers(f, grp[key].name)
    return read_labels(f), data


def summarize(con: Connectome, conduction_velocity_m_s: float = 5.0) -> dict:
    """The facts ``dtb connectome show`` prints: regions, density, symmetry, size spread, lengths and delays.

    Parameters
    ----------
    con : Connectome
    conduction_velocity_m_s : float
        For the long-range delays (fibre length / velocity; m/s = mm/ms).

    Returns
    -------
    dict
        JSON-ready: ``n_regions``, ``n_connections`` (directed, off the diagonal), ``density`` (of the R (R - 1)
        possible), ``symmetric``, ``asymmetry`` (sum |sc - sc.T| / sum (sc + sc.T), 0 when symmetric),
        ``without_input``, ``size_{min,median,max}`` and ``size_spread`` (max / min), ``sc_{min,max}`` (of the
        connections), ``len_mm_{min,median,max}``, ``delay_ms_{min,max}``, ``has_waytotal``.
    """
    n = con.n_regions
    off = ~np.eye(n, dtype=bool)
    conn = off & (con.sc > 0)
    both = (con.sc + con.sc.T)[off].sum()
    lens = con.len_mm[conn]
    out = dict(subject=con.subject, source=con.source, n_regions=n, n_connections=int(conn.sum()),
               density=float(conn.sum() / (n * (n - 1))),
               symmetric=bool(np.allclose(con.sc, con.sc.T, rtol=1e-6, atol=0.0)),
               asymmetry=float(np.abs(con.sc - con.sc.T)[off].sum() / both) if both > 0 else 0.0,
               without_input=con.without_input, size_min=float(con.nvoxel.min()),
               size_median=float(np.median(con.nvoxel)), size_max=float(con.nvoxel.max()),
               size_spread=float(con.nvoxel.max() / con.nvoxel.min()), has_waytotal=con.waytotal is not None,
               conduction_velocity_m_s=float(conduction_velocity_m_s))
    if lens.size:
        out.update(sc_min=float(con.sc[conn].min()), sc_max=float(con.sc[conn].max()), len_mm_min=float(lens.min()),
                   len_mm_median=float(np.median(lens)), len_mm_max=float(lens.max()),
                   delay_ms_min=float(lens.min() / conduction_velocity_m_s),
                   delay_ms_max=float(lens.max() / conduction_velocity_m_s))
    return out


def check_subject_id(subject: str) -> str:
    """``subject``, or a `DataError` unless it can name an HDF5 group of its own."""
    if subject in (".", "..") or not subject.strip() or "/" in subject or not subject.isprintable():
        raise DataError(f"subject {subject!r}: not a usable subject id (no '/', control characters, '.' or '..')")
    return subject


def save_connectome(con: Connectome, path: str | Path, subject: str | None = None) -> Path:
    """Write ``con`` as dtb's connectome HDF5 (what `load_connectome` reads), atomically.

    Parameters
    ----------
    con : Connectome
    path : str or Path
        File to write; it appears only complete (written beside it, then renamed).
    subject : str, optional
        Subject id in the file; default ``con.subject``.

    Returns
    -------
    Path
    """
    from dtb.io.runfile import write_replacing

    path = Path(path)
    subject = check_subject_id(str(subject or con.subject))
    whole = bool(np.all(con.nvoxel == np.round(con.nvoxel)))

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f["labels"] = np.array([lab.encode() for lab in con.labels])
            g = f.create_group(f"subjects/{subject}")
            g["sc"] = con.sc
            g["sc"].attrs["rows"] = "targets"
            g["sc"].attrs["description"] = "sc[i, j]: coupling from region j to region i"
            g["len_mm"] = con.len_mm
            g["len_mm"].attrs["units"] = "mm"
            g["nvoxel" if whole else "size"] = con.nvoxel
            if con.waytotal is not None:
                g["waytotal"] = con.waytotal
            f.attrs["source"] = con.source

    return write_replacing(path, write, "writing the connectome")


def _first(mask: np.ndarray) -> str:
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return "index " + str(idx if len(idx) > 1 else idx[0])
