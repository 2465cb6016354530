"""Recorded resting-state BOLD: reading, validation and preprocessing for assimilation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from numpy.polynomial import legendre
from scipy.signal import butter, sosfilt, sosfilt_zi

from dtb.connectome.formats import text_float
from dtb.io.hdf5 import open_data_file
from dtb.errors import DataError
from dtb.io.hdf5 import read_labels, read_numbers

#: the repetition times accepted (s); fMRI scans use 0.4 to about 4 s, the fastest sequences about 0.1 s: a TR
#: under 10 ms or over 30 s is a unit or file error (720 is the HCP TR in milliseconds; 1e-320 a damaged value)
MIN_TR_S = 0.01
MAX_TR_S = 30.0

MIN_TRS = 10
BUTTER_ORDER = 2


@dataclass(frozen=True)
class ObservedBold:
    """One subject's recorded BOLD, as read (no preprocessing).

    Attributes
    ----------
    bold : ndarray, shape (R, T), float64
        Raw BOLD, scanner units, one row per region and one column per TR.
    tr_s : float
        Repetition time (s).
    labels : tuple of str, length R
        Region names.
    subject : str
    path : str
        File the data came from.
    """

    bold: np.ndarray
    tr_s: float
    labels: tuple[str, ...]
    subject: str
    path: str


def _open(path: Path) -> h5py.File:
    return open_data_file(path, "BOLD file")


def subjects(path: str | Path) -> list[str]:
    """Sorted subject ids (the groups under ``/subjects``) of a file laid out like hcp_aal2.h5."""
    path = Path(path)
    try:
        with _open(path) as f:
            return sorted(f["subjects"].keys()) if "subjects" in f else []
    except OSError as err:  # a truncated file can open and then fail on reading
        raise DataError(f"{path}: cannot read '/subjects' ({err})") from None


def load_observed_bold(path: str | Path, subject: str) -> ObservedBold:
    """Read and validate one subject's recorded BOLD.

    Parameters
    ----------
    path : str or Path
        HDF5 file with ``/labels``, ``/subjects/<subject>/bold`` (R x T) and a root
        attribute ``tr_s`` (s), the layout of dtb/data/hcp_aal2.h5.
    subject : str
        Subject id.

    Returns
    -------
    ObservedBold

    Raises
    ------
    DataError
        One line naming the file and the dataset: a missing, non-HDF5 or truncated file,
        an unknown subject (the message lists the known ones), a missing dataset, a bold
        of wrong rank or with rows != len(labels), fewer than 10 TRs, NaN or inf, a
        constant (zero-variance) region, a missing tr_s or one outside `MIN_TR_S` to `MAX_TR_S`.
    """
    path = Path(path)
    name = str(path)
    dset = f"/subjects/{subject}/bold"
    with _open(path) as f:
        try:
            if "tr_s" not in f.attrs:
                raise DataError(f"{name}: missing root attribute 'tr_s' (repetition time, s)")
            raw = f.attrs["tr_s"]
            raw = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            try:  # a real number of seconds (a numeric string too), not a flag (True would read as 1 s) or complex
                if not np.isscalar(raw) or np.asarray(raw).dtype.kind not in "iufU":
                    raise ValueError
                tr_s = text_float(raw) if isinstance(raw, str) else float(raw)
            except (TypeError, ValueError):
                raise DataError(f"{name}: root attribute 'tr_s' is not a number of seconds ({raw!r})") from None
            if "labels" not in f:
                raise DataError(f"{name}: missing dataset '/labels'")
            labels = tuple(read_labels(f))
            known = sorted(f["subjects"].keys()) if "subjects" in f else []
            if subject not in known:
                raise DataError(f"{name}: subject {subject!r} not in file (has: {', '.join(known) or 'none'})")
            if "bold" not in f["subjects"][subject]:
                raise DataError(f"{name}: missing dataset '{dset}'")
            bold = read_numbers(f, dset)
        except OSError as err:  # h5py opens some truncated files and fails on reading
            raise DataError(f"{name}: cannot read '{dset}' (truncated or corrupt file? {err})") from None
    if not (np.isfinite(tr_s) and tr_s > 0):
        raise DataError(f"{name}: root attribute 'tr_s' must be a positive number of seconds, got {tr_s}")
    if tr_s > MAX_TR_S:
        raise DataError(f"{name}: root attribute 'tr_s' = {tr_s:g} s is no fMRI repetition time (at most "
                        f"{MAX_TR_S:g} s): milliseconds written as seconds?")
    if tr_s < MIN_TR_S:
        raise DataError(f"{name}: root attribute 'tr_s' = {tr_s:.3g} s is no fMRI repetition time (at least "
                        f"{MIN_TR_S:g} s)")
    if bold.ndim != 2:
        raise DataError(f"{name}: '{dset}' must be 2-D (regions x TRs), has shape {bold.shape}")
    if bold.shape[0] != len(labels):
        raise DataError(f"{name}: '{dset}' has {bold.shape[0]} rows but '/labels' has {len(labels)} regions")
    if bold.shape[1] < MIN_TRS:
        raise DataError(f"{name}: '{dset}' has {bold.shape[1]} TRs, needs at least {MIN_TRS}")
    bad = ~np.isfinite(bold)
    if bad.any():
        r, t = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{name}: '{dset}' contains NaN or inf (first at region {labels[r]!r}, TR {t})")
    flat = np.ptp(bold, axis=1) == 0
    if flat.any():
        raise DataError(f"{name}: '{dset}' region {labels[int(np.argmax(flat))]!r} is constant "
                        "(zero variance: cannot be scaled)")
    return ObservedBold(bold=bold, tr_s=tr_s, labels=labels, subject=subject, path=name)


def preprocess(raw, tr_s: float, calibration_trs: int, detrend_order: int = 0,
               band_hz: tuple[float, float] = (0.0, 0.0), lo: float = 0.02, hi: float = 0.05) -> np.ndarray:
    """Causally detrend, filter and scale recorded BOLD, region by region.

    Column ``t`` of the result depends on the raw TRs ``0 .. max(t, calibration_trs - 1)``
    only: from TR ``calibration_trs`` on, on nothing later than itself. Steps: (a)
    subtract the least-squares polynomial of degree ``detrend_order`` fitted on the
    calibration window (the first ``calibration_trs`` TRs) and extrapolated; (b) if
    ``band_hz`` is not (0, 0), a one-pass (causal) Butterworth filter of order 2
    (``scipy.signal.sosfilt``), started at the steady state of TR 0's value; (c) an
    affine map taking the calibration window's mean to the middle of [lo, hi] and
    its standard deviation to (hi - lo) / 6 (the range a min-max scale gives a normal
    series of a few hundred samples).

    Parameters
    ----------
    raw : array_like, shape (R, T), float
        BOLD, any units, one column per TR.
    tr_s : float
        Repetition time (s), > 0.
    calibration_trs : int
        Length of the calibration window, 2 <= calibration_trs <= T.
    detrend_order : int, optional
        Polynomial degree removed, 0 <= detrend_order < calibration_trs (0 = the mean
        only; a slope fitted on a short window and extrapolated over a long recording
        drifts, so a high-pass edge is the usual way to remove slow trends causally).
    band_hz : (float, float), optional
        (low, high) cut-offs in Hz: (0, 0) no filter, (low, 0) high-pass, (0, high)
        low-pass, both > 0 band-pass (low < high). Cut-offs must be below the Nyquist
        frequency 1 / (2 tr_s).
    lo, hi : float, optional
        Output range of a typical region, lo < hi (values outside it are kept).

    Returns
    -------
    ndarray, shape (R, T), float64

    Raises
    ------
    ValueError
        Bad shapes or arguments, non-finite input, a cut-off at or above Nyquist, or a
        region constant over the calibration window after filtering (it cannot be scaled).
    """
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"raw must have shape (R, T) with T >= 2, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("raw contains NaN or inf")
    if not (np.isfinite(tr_s) and tr_s > 0):
        raise ValueError(f"tr_s must be > 0 s, got {tr_s}")
    n_t = x.shape[1]
    if int(calibration_trs) != calibration_trs or not 2 <= calibration_trs <= n_t:
        raise ValueError(f"calibration_trs must be an integer in [2, {n_t}], got {calibration_trs}")
    n_cal = int(calibration_trs)
    if int(detrend_order) != detrend_order or not 0 <= detrend_order < n_cal:
        raise ValueError(f"detrend_order must be an integer in [0, {n_cal - 1}], got {detrend_order}")
    if not lo < hi:
        raise ValueError(f"scaling range needs lo < hi, got [{lo}, {hi}]")
    # time mapped so that the calibration window is [-1, 1] (Legendre basis, for conditioning)
    t = np.linspace(-1.0, 1.0, n_cal)
    t_all = -1.0 + 2.0 * np.arange(n_t) / max(n_cal - 1, 1)
    coef = legendre.legfit(t, x[:, :n_cal].T, int(detrend_order))
    x = x - legendre.legval(t_all, coef)
    sos = _butter_sos(band_hz, tr_s)
    if sos is not None:
        zi = sosfilt_zi(sos)[:, None, :] * x[None, :, :1]      # (sections, R, 2): at rest at TR 0's value
        x, _ = sosfilt(sos, x, axis=1, zi=zi)
    mean = x[:, :n_cal].mean(axis=1, keepdims=True)
    sd = x[:, :n_cal].std(axis=1, keepdims=True)
    if np.any(~(sd > 0)):
        raise ValueError(f"region {int(np.argmax(~(sd > 0)))} is constant over the calibration window after "
                         "preprocessing; cannot scale")
    return 0.5 * (lo + hi) + (x - mean) / sd * ((hi - lo) / 6.0)


def _butter_sos(band_hz, tr_s: float):
    low, high = (float(v) for v in band_hz)
    nyquist_hz = 0.5 / tr_s
    if low < 0 or high < 0:
        raise ValueError(f"band_hz cut-offs must be >= 0, got {band_hz}")
    if low >= nyquist_hz or high >= nyquist_hz:
        raise ValueError(f"band_hz {band_hz} must lie below the Nyquist frequency {nyquist_hz:g} Hz (tr_s {tr_s} s)")
    if low > 0 and high > 0:
        if not low < high:
            raise ValueError(f"band-pass needs low < high, got {band_hz}")
        return butter(BUTTER_ORDER, [low, high], btype="bandpass", fs=1.0 / tr_s, output="sos")
    if low > 0:
        return butter(BUTTER_ORDER, low, btype="highpass", fs=1.0 / tr_s, output="sos")
    if high > 0:
        return butter(BUTTER_ORDER, high, btype="lowpass", fs=1.0 / tr_s, output="sos")
    return None


def describe_preprocessing(calibration_trs: int, detrend_order: int, band_hz: tuple[float, float], lo: float,
                           hi: float) -> str:
    """One human-readable line describing :func:`preprocess` with these arguments (for output files)."""
    low, high = (float(v) for v in band_hz)
    if low > 0 and high > 0:
        band = f"band-pass {low:g}-{high:g} Hz"
    elif low > 0:
        band = f"high-pass {low:g} Hz"
    elif high > 0:
        band = f"low-pass {high:g} Hz"
    else:
        band = None
    filt = f"causal Butterworth order {BUTTER_ORDER} {band} (one pass, sosfilt)" if band else "no filter"
    trend = "mean" if detrend_order == 0 else f"polynomial trend of order {detrend_order}"
    return (f"causal, per region: the {trend} of the first {calibration_trs} TRs (the calibration window) removed; "
            f"{filt}; scaled so that the calibration window's mean is {0.5 * (lo + hi):g} and its s.d. "
            f"{(hi - lo) / 6:g} (about [{lo:g}, {hi:g}])")
