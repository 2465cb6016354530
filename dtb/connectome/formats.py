"""Connectome formats other than dtb's HDF5: The Virtual Brain's connectivity, and weights matrices (CSV/TSV/text,
as MRtrix3's ``tck2connectome`` writes them; NumPy ``.npy``; MATLAB ``.mat``, as DSI Studio writes them).

Each reader returns raw arrays; `dtb.connectome.connectome.load_connectome` validates them into a `Connectome`.
"""

from __future__ import annotations

import bz2
import csv
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from dtb.io.hdf5 import MAX_INPUT_CELLS, check_cells, check_input_file
from dtb.errors import DataError

#: a TVB zip may not unpack to more than this (a zip bomb is refused, not unpacked)
MAX_UNPACKED_BYTES = 4 * 2**30


def read_foreign(path: Path) -> tuple[list[str] | None, dict]:
    """Labels (or None) and arrays of a TVB connectivity (a zip or a folder) or of a weights matrix file.

    Returns
    -------
    labels : list of str or None
    data : dict
        ``sc`` (R, R); ``len_mm`` (R, R) or None; ``centres`` (R, 3) or None; ``size`` (R,) or None.
    """
    if path.is_dir() or zipfile.is_zipfile(path):
        return _read_tvb(path)
    sc, labels, extra = _read_matrix(path, "weights")
    return labels, dict(sc=sc, len_mm=extra.get("len_mm"), centres=None, size=None)


def read_matrix_file(path: Path, what: str) -> tuple[np.ndarray, list[str] | None]:
    """A square matrix (float64) and its labels (or None) from a CSV/TSV/text, ``.npy`` or ``.mat`` file."""
    check_input_file(path, f"{what} file")
    arr, labels, _ = _read_matrix(path, what)
    return arr, labels


def read_labels(path: Path) -> list[str]:
    """Region names from a text file: one per line, or a lookup table (``index name [r g b a]``, as FreeSurfer's
    and MRtrix3's); blank lines and ``#`` comments are skipped."""
    check_input_file(path, "labels file")
    lines = [ln.strip() for ln in _text(_text_bytes(path, "labels"), path).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    split = split_cells(lines, None, f"labels file {str(path)!r}")
    if lines and all(len(s) >= 2 and s[0].isdigit() for s in split):
        return [s[1] for s in split]
    # one name per line: a quoted one ("Left Hippocampus") is unquoted, an unquoted one kept whole
    return [s[0] if len(s) == 1 else ln for ln, s in zip(lines, split)]


def read_sizes(path: Path, labels: list[str]) -> np.ndarray:
    """Region sizes from a text file: one number per line in region order, or ``label,value`` rows (a header line
    is skipped).

    Returns
    -------
    ndarray, shape (R,), float64
    """
    check_input_file(path, "sizes file")
    rows = [ln.strip() for ln in _text(_text_bytes(path, "sizes"), path).splitlines()]
    rows = [ln for ln in rows if ln and not ln.startswith("#")]
    sep = next((c for c in (",", "\t") if any(c in ln for ln in rows)), None)  # a header may have none
    cells = split_cells(rows, sep, f"sizes file {str(path)!r}")
    if cells and not is_number(cells[0][-1]):
        cells = cells[1:]  # a header
    if all(len(c) == 1 for c in cells):
        return np.array([_number(c[0], path, i) for i, c in enumerate(cells)])
    if not all(len(c) == 2 for c in cells):
        raise DataError(f"sizes file {str(path)!r}: expected one number per line or 'label,value' rows")
    table = {c[0]: _number(c[1], path, i) for i, c in enumerate(cells)}
    if len(table) < len(cells):
        twice = next(c[0] for i, c in enumerate(cells) if c[0] in (d[0] for d in cells[:i]))
        raise DataError(f"sizes file {str(path)!r} gives region {twice!r} twice")
    missing = [lab for lab in labels if lab not in table]
    if missing:
        raise DataError(f"sizes file {str(path)!r} has no size for region {missing[0]!r}"
                        f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
    return np.array([table[lab] for lab in labels])


def mirror_triangular(m: np.ndarray) -> tuple[np.ndarray, bool]:
    """A matrix with one triangle only (MRtrix3's upper-triangular output) made symmetric; others unchanged.

    Returns
    -------
    ndarray
        ``m + m.T`` off the diagonal where one strict triangle of ``m`` is all zeros and the other is not.
    bool
        Whether it was mirrored.
    """
    upper, lower = np.triu(m, 1), np.tril(m, -1)
    if (np.any(upper) and not np.any(lower)) or (np.any(lower) and not np.any(upper)):
        return m + upper.T + lower.T, True
    return m, False


def _read_tvb(path: Path) -> tuple[list[str] | None, dict]:
    """A TVB connectivity: ``weights``, ``tract_lengths``, ``centres`` (``label x y z`` rows), ``areas``,
    ``region_labels``; each file may be compressed (``.bz2``, ``.gz``), and may sit in a subfolder of the zip."""
    files, names = _tvb_files(path)

    def find(*prefixes):
        for prefix in prefixes:
            for name in sorted(files):
                if name.lower().startswith(prefix):
                    return name
        return None

    weights = find("weights")
    if weights is None:
        raise DataError(f"{path}: not a TVB connectivity (no weights.txt; has: {', '.join(sorted(names)[:20]) or 'nothing'})")
    sc = _parse_matrix(files[weights], f"{path}:{weights}")[0]
    data = dict(sc=sc, len_mm=None, centres=None, size=None)
    labels = None
    if (name := find("tract_lengths", "tract")) is not None:
        data["len_mm"] = _parse_matrix(files[name], f"{path}:{name}")[0]
    if (name := find("centres", "centers")) is not None:
        lines = [ln for ln in _text(files[name], f"{path}:{name}").splitlines() if ln.strip()]
        rows = split_cells(lines, None, f"{path}:{name}")
        try:
            labels = [r[0] for r in rows]
            # TVB's connectivity_66 has a fifth column ('None'): the coordinates are the three after the label
            data["centres"] = np.array([[text_float(v) for v in r[1:4]] for r in rows]) \
                if all(len(r) >= 4 for r in rows) else None
        except ValueError:
            raise DataError(f"{path}:{name}: expected 'label x y z' rows") from None
    if (name := find("region_labels")) is not None:
        lines = [ln.strip() for ln in _text(files[name], f"{path}:{name}").splitlines() if ln.strip()]
        labels = [s[0] if len(s) == 1 else ln for ln, s in zip(lines, split_cells(lines, None, f"{path}:{name}"))]
    if (name := find("areas")) is not None:
        areas = _parse_matrix(files[name], f"{path}:{name}", square=False)[0]
        if areas.shape[1] != 1:  # a matrix in its place: its cells are no regions' areas
            raise DataError(f"{path}:{name}: holds {areas.shape[0]} rows of {areas.shape[1]} values, expected one "
                            "area per line (one per region)")
        areas = areas[:, 0]
        zero = areas == 0
        if np.any(zero) and np.any(areas > 0):
            # TVB gives no area to regions off the cortical surface (subcortical nuclei, the corpus callosum)
            import warnings

            names = [labels[i] for i in np.flatnonzero(zero)] if labels is not None and len(labels) == len(areas) \
                else [str(i) for i in np.flatnonzero(zero)]
            warnings.warn(f"{path}: {int(zero.sum())} region(s) have area 0 in {name} (not on the cortical surface), "
                          f"so they get the median area: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}",
                          stacklevel=4)
            areas = np.where(zero, np.median(areas[~zero & (areas > 0)]), areas)
        data["size"] = areas
    return labels, data


#: how the names of the files of a TVB connectivity that dtb reads begin (others in its zip or folder are not read)
TVB_MEMBERS = ("weights", "tract", "centres", "centers", "region_labels", "areas")


def _tvb_files(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """Name (without a compression suffix) -> bytes of each file of a TVB zip or folder that dtb reads
    (`TVB_MEMBERS`), and the names of all its files."""
    raw = {}

    def wanted(name: str) -> bool:
        return name.lower().startswith(TVB_MEMBERS)

    if path.is_dir():
        members = [p for p in sorted(path.iterdir()) if p.is_file()]
        names = [p.name for p in members]
        members = [p for p in members if wanted(p.name)]
        if sum(p.stat().st_size for p in members) > MAX_UNPACKED_BYTES:
            raise DataError(f"{path}: its TVB files hold more than {MAX_UNPACKED_BYTES / 2**30:g} GiB: not a "
                            "connectivity")
        for p in members:
            raw[p.name] = p.read_bytes()
    else:
        try:
            with zipfile.ZipFile(path) as z:
                infos = [i for i in z.infolist() if not i.is_dir() and not PurePosixPath(i.filename).name.startswith(".")]
                names = [PurePosixPath(i.filename).name for i in infos]
                infos = [i for i in infos if wanted(PurePosixPath(i.filename).name)]
                if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
                    raise DataError(f"{path}: unpacks to more than {MAX_UNPACKED_BYTES / 2**30:g} GiB: not a connectivity")
                seen = {}
                for i in infos:
                    name = PurePosixPath(i.filename).name
                    if name in seen:  # two connectivities, or two copies: which one is meant is not dtb's guess
                        raise DataError(f"{path}: holds {seen[name]} and {i.filename}: one connectivity per zip")
                    seen[name] = i.filename
                    raw[name] = z.read(i)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as err:
            # RuntimeError: encrypted; NotImplementedError: a compression method Python lacks
            raise DataError(f"{path}: cannot read the zip ({err})") from None
    files = {}
    for name, blob in raw.items():
        try:
            if name.endswith(".bz2"):
                name, blob = name[:-4], _decompressed(bz2.BZ2Decompressor(), blob, f"{path}:{name}")
            elif name.endswith(".gz"):
                name, blob = name[:-3], _decompressed(zlib.decompressobj(wbits=31), blob, f"{path}:{name}")
        except (OSError, ValueError, EOFError, zlib.error) as err:
            raise DataError(f"{path}:{name}: cannot decompress ({err})") from None
        if name in files:
            raise DataError(f"{path}: holds {name} twice (plain and compressed): one connectivity per zip or folder")
        files[name] = blob
    return files, names


def _decompressed(decompressor, blob: bytes, where: str) -> bytes:
    """``blob`` decompressed (bz2 or gzip), refused once it would exceed `MAX_UNPACKED_BYTES` (a bomb)."""
    out = decompressor.decompress(blob, MAX_UNPACKED_BYTES + 1)
    if len(out) > MAX_UNPACKED_BYTES:
        raise DataError(f"{where}: unpacks to more than {MAX_UNPACKED_BYTES / 2**30:g} GiB: not a connectivity")
    if not decompressor.eof:
        raise DataError(f"{where}: cannot decompress (the data ends early)")
    return out


def _read_matrix(path: Path, what: str) -> tuple[np.ndarray, list[str] | None, dict]:
    """(matrix, labels or None, other arrays the file has) from ``.npy``, ``.mat`` or text."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)  # its shape known before its data is read
            if arr.size > MAX_DENSE_CELLS:
                raise DataError(f"{what} file {str(path)!r} holds an array of shape {arr.shape}: too large for a "
                                f"connectome (at most {MAX_DENSE_CELLS:,} cells)")
            arr = np.array(arr)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{what} file {str(path)!r} is not a readable .npy array ({err})") from None
        if arr.dtype.kind not in "iuf":
            raise DataError(f"{what} file {str(path)!r} holds a {arr.dtype} array, not numbers")
        return _square(arr.astype(np.float64), path), None, {}
    if suffix == ".mat":
        return _read_mat(path, what)
    return _parse_matrix(_text_bytes(path, what), str(path)) + ({},)


def _text_bytes(path: Path, what: str) -> bytes:
    """The bytes of a text input, refused from its size beyond `MAX_UNPACKED_BYTES` (it is read whole)."""
    if path.stat().st_size > MAX_UNPACKED_BYTES:
        raise DataError(f"{what} file {str(path)!r} is {path.stat().st_size / 2**30:.3g} GiB: too large for a "
                        f"connectome's text (at most {MAX_UNPACKED_BYTES / 2**30:g} GiB)")
    return path.read_bytes()


def _read_mat(path: Path, what: str) -> tuple[np.ndarray, list[str] | None, dict]:
    """A MATLAB file: the matrix ``connectivity`` (DSI Studio) or the file's one square numeric matrix, the labels
    ``name`` (DSI Studio: the names as character codes, one per line) where present."""
    import h5py
    import scipy.io
    import scipy.sparse

    try:
        if h5py.is_hdf5(path):  # MATLAB v7.3
            with h5py.File(path, "r") as f:
                mats = {k: np.asarray(check_cells(f[k], f"{what} file {str(path)!r}: {k!r}")[()]).T for k in f
                        if isinstance(f[k], h5py.Dataset) and f[k].ndim == 2}
            names = None
        else:
            content = scipy.io.loadmat(path)
            mats = {k: _dense(v, path, k) if scipy.sparse.issparse(v) else v for k, v in content.items()
                    if not k.startswith("__") and (isinstance(v, np.ndarray) or scipy.sparse.issparse(v))}
            names = mats.pop("name", None)
    except (ValueError, OSError, NotImplementedError, TypeError, KeyError, RuntimeError, EOFError, zlib.error,
            scipy.io.matlab.MatReadError) as err:  # empty, text, truncated, damaged, a v7.3 file's broken links
        raise DataError(f"{what} file {str(path)!r} is not a readable MATLAB file "
                        f"({' '.join(str(err).split())[:200]})") from None
    square = {k: v for k, v in mats.items() if v.ndim == 2 and v.shape[0] == v.shape[1] and v.shape[0] > 1
              and v.dtype.kind in "iuf"}
    if "connectivity" in mats and "connectivity" not in square:  # never another matrix in its place
        m = mats["connectivity"]
        raise DataError(f"{what} file {str(path)!r}: its 'connectivity' is a {m.dtype} array of shape {m.shape}, not "
                        "a square matrix of real numbers")
    key = "connectivity" if "connectivity" in square else (next(iter(square)) if len(square) == 1 else None)
    if key is None:
        raise DataError(f"{what} file {str(path)!r}: no matrix named 'connectivity' and "
                        f"{'several' if square else 'no'} square matrices ({', '.join(square) or 'none'})")
    labels = None if names is None else _mat_names(names, f"{what} file {str(path)!r}")
    return _square(square[key].astype(np.float64), path), labels, {}


def _mat_names(names: np.ndarray, where: str) -> list[str]:
    """The region names of a MATLAB ``name`` variable: DSI Studio's character codes of ``'name1\\nname2\\n...'``,
    a char matrix (a name per row) or a cell array of names; a `DataError` for anything else (numbers, a struct),
    which is never taken for "no names"."""
    if names.dtype.kind in "iu":
        text = bytes(np.asarray(names, dtype=np.uint8).ravel()).decode("utf-8", "replace")
        return [s.strip() for s in text.split("\n") if s.strip()]
    if names.dtype.kind == "U":
        return [str(s).strip() for s in names.ravel()]
    cells = [np.asarray(s).ravel() for s in names.ravel()] if names.dtype == object else None
    if cells is not None and all(c.size == 0 or c.dtype.kind == "U" for c in cells):
        return [str(c[0]).strip() if c.size else "" for c in cells]  # an empty cell: an empty name, refused later
    what = "a struct" if names.dtype.names else "a cell array of non-text cells" if cells is not None \
        else f"an array of {names.dtype}"
    raise DataError(f"{where}: its 'name' is {what}: must be text (the region names)")


#: the most cells of a matrix read whole: a ``.npy`` array, a sparse MATLAB matrix made dense (2 GiB of float64:
#: 16,384 regions); HDF5 datasets have the same cap (`dtb.io.hdf5.check_cells`)
MAX_DENSE_CELLS = MAX_INPUT_CELLS


def _dense(m, path: Path, key: str) -> np.ndarray:
    """A sparse MATLAB matrix (MATLAB's ``sparse``, as scipy reads it) made dense."""
    if m.shape[0] * m.shape[1] > MAX_DENSE_CELLS:
        raise DataError(f"{str(path)!r}: the sparse matrix {key!r} of shape {m.shape} is too large for a connectome "
                        f"(at most {MAX_DENSE_CELLS:,} cells)")
    return m.toarray()


def _parse_matrix(blob: bytes, where: str, square: bool = True) -> tuple[np.ndarray, list[str] | None]:
    """A matrix from text: comma-, tab- or space-separated; ``#`` comment lines skipped; an optional header row of
    labels and an optional first column of labels."""
    lines = [ln for ln in _text(blob, where).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"{where}: no numbers in the file")
    # semicolons where the decimal mark is a comma (spreadsheets in much of Europe); a decimal comma is then refused
    sep = next((c for c in (";", ",", "\t") if c in lines[0]), None)
    rows = split_cells(lines, sep, where)
    labels = None
    first = [is_number(c) for c in rows[0] if c]
    if not all(first) and not any(first[1:]):  # a header: names over the columns (and a corner cell)
        labels = [c for c in rows[0] if c]
        rows = rows[1:]
    if rows and not is_number(rows[0][0]):
        row_labels = [r[0] for r in rows]
        rows = [r[1:] for r in rows]
        labels = labels if labels is not None and len(labels) == len(rows) else row_labels
    if not rows or not any(rows[0]):
        raise DataError(f"{where}: no numbers in the file")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise DataError(f"{where}: rows of different lengths ({', '.join(map(str, sorted(widths)))} values)")
    try:
        arr = np.array([[text_float(c) for c in r] for r in rows], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{where}: not a matrix of numbers ({err})") from None
    return (_square(arr, where) if square else arr), labels


def split_cells(lines: list[str], sep: str | None, where: str) -> list[list[str]]:
    """The cells of each line of a table, stripped, with CSV quoting understood as spreadsheets write it
    (``"Left, anterior"``; ``""`` for a quote inside quotes).

    Parameters
    ----------
    lines : list of str
        The table's lines (no line ends: a quoted cell cannot span lines).
    sep : str or None
        The separator; None: runs of spaces and tabs.
    where : str
        The file, for the error.

    Raises
    ------
    DataError
        A quoted cell left open, or text after its closing quote.
    """
    if sep is None:
        lines, sep = [ln.replace("\t", " ").strip() for ln in lines], " "
    rows = []
    for line in lines:
        try:
            rows.append([c.strip() for c in next(csv.reader([line], delimiter=sep, skipinitialspace=True,
                                                              strict=True), [])])
        except csv.Error as err:
            raise DataError(f"{where}: the line {line[:80]!r} is not CSV ({err})") from None
    return rows


def _square(arr: np.ndarray, where) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        hint = " (if its first column holds region numbers, give the file a header row of labels)" \
            if arr.ndim == 2 and arr.shape[1] == arr.shape[0] + 1 else ""
        raise DataError(f"{where}: a matrix of shape {arr.shape}, expected a square one (regions x regions){hint}")
    return arr


def _text(blob: bytes, where) -> str:
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None


def text_float(text: str) -> float:
    """A table cell as a float, as numpy and spreadsheets read it: Python's own digit grouping (``1_000``) and
    digits other than ASCII's (Arabic-Indic ``١``, full-width ``１``), which Python's float() reads, are not numbers
    in a data file.

    Raises
    ------
    ValueError
        Not a number.
    """
    if "_" in text or not text.isascii():
        raise ValueError(f"could not convert string to float: {text!r}")
    return float(text)


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a float (a table cell that is a value, not a label)."""
    try:
        text_float(text)
        return True
    except ValueError:
        return False


def _number(text: str, path: Path, line: int) -> float:
    try:
        return text_float(text)
    except ValueError:
        raise DataError(f"sizes file {str(path)!r}: {text!r} (entry {line + 1}) is not a number") from None

