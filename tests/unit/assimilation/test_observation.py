import h5py
import numpy as np
import pytest

from dtb.assimilation.observation import (ObservedBold, describe_preprocessing, load_observed_bold, preprocess,
                                          subjects)
from dtb.connectome.connectome import bundled_connectome_path
from dtb.errors import DataError


def test_bundled_file():
    path = bundled_connectome_path()
    ids = subjects(path)
    assert ids == ["101309", "102311", "102816", "131217", "211619"]
    obs = load_observed_bold(path, ids[0])
    assert isinstance(obs, ObservedBold)
    assert obs.bold.shape == (94, 1200) and obs.bold.dtype == np.float64
    assert obs.tr_s == pytest.approx(0.72) and len(obs.labels) == 94 and obs.labels[0] == "Precentral_L"
    assert obs.subject == "101309" and obs.path == str(path)


def _write(path, n=3, n_t=20, subject="s1", bold="default", tr_s=0.72, labels=True):
    if isinstance(bold, str):
        bold = np.random.default_rng(0).normal(100, 5, size=(n, n_t))
    with h5py.File(path, "w") as f:
        if labels:
            f["labels"] = np.array([f"R{i}".encode() for i in range(n)])
        if bold is not None:
            f[f"subjects/{subject}/bold"] = bold
        else:
            f.create_group(f"subjects/{subject}")
        if tr_s is not None:
            f.attrs["tr_s"] = tr_s
    return path


def test_user_file(tmp_path):
    obs = load_observed_bold(_write(tmp_path / "b.h5"), "s1")
    assert obs.bold.shape == (3, 20) and obs.labels == ("R0", "R1", "R2")
    for tr_s in (0.01, "0.72", 30.0):  # the bounds are accepted, and a numeric string
        assert load_observed_bold(_write(tmp_path / "b.h5", tr_s=tr_s), "s1").tr_s == float(tr_s)


def _bad_bold(kind):
    b = np.random.default_rng(0).normal(100, 5, size=(3, 20))
    if kind == "nan":
        b[1, 4] = np.nan
    elif kind == "inf":
        b[2, 0] = np.inf
    elif kind == "const":
        b[1] = 7.0
    return b


@pytest.mark.parametrize("kwargs, subject, match", [
    (dict(), "s2", r"subject 's2' not in file \(has: s1\)"),
    (dict(bold=None), "s1", "missing dataset '/subjects/s1/bold'"),
    (dict(labels=False), "s1", "missing dataset '/labels'"),
    (dict(bold=np.ones((3, 20, 2))), "s1", "must be 2-D"),
    (dict(bold=np.ones((4, 20))), "s1", "4 rows but '/labels' has 3"),
    (dict(n_t=9), "s1", "9 TRs, needs at least 10"),
    (dict(bold=_bad_bold("nan")), "s1", "NaN or inf .*'R1', TR 4"),
    (dict(bold=_bad_bold("inf")), "s1", "NaN or inf .*'R2', TR 0"),
    (dict(bold=_bad_bold("const")), "s1", "'R1' is constant"),
    (dict(tr_s=None), "s1", "missing root attribute 'tr_s'"),
    (dict(tr_s=0.0), "s1", "'tr_s' must be a positive"),
    (dict(tr_s=-1.0), "s1", "'tr_s' must be a positive"),
    (dict(bold=_bad_bold("complex") + 1j), "s1", "'/subjects/s1/bold' is not numeric"),
    (dict(tr_s=True), "s1", "'tr_s' is not a number of seconds"),  # would read as 1 s
    (dict(tr_s=0.72 + 1j), "s1", "'tr_s' is not a number of seconds"),
    (dict(tr_s="\u0660.72"), "s1", "'tr_s' is not a number of seconds"),  # Arabic-Indic digits: Python reads them
    (dict(tr_s=1e-320), "s1", r"'tr_s' = 1e-320 s is no fMRI repetition time \(at least 0.01 s\)"),
    (dict(tr_s=0.005), "s1", r"'tr_s' = 0.005 s is no fMRI repetition time \(at least 0.01 s\)"),
    (dict(tr_s=720.0), "s1", r"'tr_s' = 720 s is no fMRI repetition time \(at most 30 s\): milliseconds"),
])
def test_data_errors(tmp_path, kwargs, subject, match):
    path = _write(tmp_path / "b.h5", **kwargs)
    with pytest.raises(DataError, match=match) as err:
        load_observed_bold(path, subject)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_observed_bold(tmp_path / "none.h5", "s1")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        load_observed_bold(junk, "s1")
    with pytest.raises(DataError, match="not a readable HDF5"):
        subjects(junk)
    good = _write(tmp_path / "good.h5", n_t=2000)
    data = good.read_bytes()
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=str(truncated)):
        load_observed_bold(truncated, "s1")


def test_the_trend_comes_from_the_calibration_window():
    """A trend fitted on the first TRs and extrapolated: an exact line is removed exactly everywhere."""
    t = np.arange(300) * 0.72
    x = np.sin(2 * np.pi * 0.05 * t)
    line = np.vstack([1000 + 3.0 * t, -50 - 0.5 * t])
    out = preprocess(line + x, 0.72, calibration_trs=100, detrend_order=1, lo=0.0, hi=1.0)
    ref = preprocess(line + x - (line - line[:, :100].mean(axis=1, keepdims=True))
                     - np.polyval(np.polyfit(t[:100], x[:100], 1), t) + x[:100].mean(), 0.72, calibration_trs=100,
                     detrend_order=0, lo=0.0, hi=1.0)
    np.testing.assert_allclose(out, ref, atol=1e-9)
    with pytest.raises(ValueError, match="detrend_order"):
        preprocess(line, 0.72, calibration_trs=2, detrend_order=2)


def test_every_observation_depends_on_no_later_tr():
    """Raw TR k changes nothing before k once k is past the calibration window (with the band-pass too)."""
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(4, 400)).cumsum(axis=1) + 100
    ref = preprocess(raw, 0.72, calibration_trs=50, band_hz=(0.01, 0.1))
    for k in (50, 120, 399):
        bumped = raw.copy()
        bumped[:, k] += 10.0
        out = preprocess(bumped, 0.72, calibration_trs=50, band_hz=(0.01, 0.1))
        np.testing.assert_array_equal(out[:, :k], ref[:, :k])
        assert not np.array_equal(out[:, k], ref[:, k])
    # inside the calibration window a change moves the scale: that window is never assimilated
    bumped = raw.copy()
    bumped[:, 10] += 10.0
    assert not np.array_equal(preprocess(bumped, 0.72, calibration_trs=50)[:, 60],
                              preprocess(raw, 0.72, calibration_trs=50)[:, 60])


def _power(x, f_hz, tr_s):
    t = np.arange(x.size) * tr_s
    return np.abs(np.sum(x * np.exp(-2j * np.pi * f_hz * t))) ** 2


@pytest.mark.parametrize("band", [(0.01, 0.1), (0.0, 0.1), (0.01, 0.0)])
def test_band_pass_keeps_in_band_removes_out_of_band(band):
    tr_s, n_t = 0.72, 1200
    t = np.arange(n_t) * tr_s
    f_in = 0.04                                   # inside every band
    f_out = 0.3 if band[1] > 0 else 0.002         # out of band
    raw = np.vstack([np.sin(2 * np.pi * f_in * t) + np.sin(2 * np.pi * f_out * t)] * 2)
    out = preprocess(raw, tr_s, 100, detrend_order=0, band_hz=band, lo=-1.0, hi=1.0)[0, 300:]  # past the transient
    ref = preprocess(raw, tr_s, 100, detrend_order=0, lo=-1.0, hi=1.0)[0, 300:]
    keep = _power(out, f_in, tr_s) / _power(ref, f_in, tr_s)
    kill = _power(out, f_out, tr_s) / _power(ref, f_out, tr_s)
    assert kill < 0.05 * keep, (keep, kill)


def test_band_validation():
    raw = np.random.default_rng(0).normal(size=(2, 100))
    for band in [(0.8, 0.0), (0.0, 0.7), (0.1, 0.05), (-0.1, 0.0)]:
        with pytest.raises(ValueError):
            preprocess(raw, 0.72, 50, band_hz=band)
    with pytest.raises(ValueError, match="Nyquist"):
        preprocess(raw, 0.72, 50, band_hz=(0.0, 0.7))
    with pytest.raises(ValueError, match="calibration_trs"):
        preprocess(raw, 0.72, 101)


def test_scaling_comes_from_the_calibration_window():
    raw = np.random.default_rng(1).normal(50, 10, size=(7, 300)) + np.arange(300)
    out = preprocess(raw, 0.72, 60, band_hz=(0.01, 0.1))
    assert out.dtype == np.float64 and out.shape == raw.shape
    np.testing.assert_allclose(out[:, :60].mean(axis=1), 0.035, atol=1e-12)
    np.testing.assert_allclose(out[:, :60].std(axis=1), 0.005, rtol=1e-12)
    with pytest.raises(ValueError, match="lo < hi"):
        preprocess(raw, 0.72, 60, lo=1.0, hi=1.0)
    with pytest.raises(ValueError, match="constant over the calibration window"):
        preprocess(np.vstack([raw[0], np.r_[np.zeros(60), raw[0, 60:]]]), 0.72, 60)


def test_describe_preprocessing():
    text = describe_preprocessing(50, 1, (0.01, 0.1), 0.02, 0.05)
    assert "\n" not in text and "band-pass 0.01-0.1 Hz" in text and "causal" in text and "order 1" in text
    assert "first 50 TRs" in text and "about [0.02, 0.05]" in text
    assert "no filter" in describe_preprocessing(50, 0, (0.0, 0.0), 0.0, 1.0)
    assert "high-pass 0.01 Hz" in describe_preprocessing(50, 0, (0.01, 0.0), 0.0, 1.0)


@pytest.mark.parametrize("link, match", [
    (lambda f: f.__setitem__("subjects/s1/bold", h5py.ExternalLink("gone.h5", "/bold")), "cannot be opened"),
    (lambda f: f.__setitem__("subjects/s1/bold", h5py.SoftLink("/subjects/s1/bold")), "cannot be opened"),
])
def test_a_bold_link_that_leads_nowhere_is_one_line(tmp_path, link, match):
    path = _write(tmp_path / "b.h5", bold=None)
    with h5py.File(path, "a") as f:
        link(f)
    with pytest.raises(DataError, match=match) as err:
        load_observed_bold(path, "s1")
    assert "\n" not in str(err.value)


def test_a_virtual_bold_with_a_missing_source_is_refused(tmp_path):
    """HDF5 would read the missing source's part as fill values: a silent gap in the recording."""
    src = tmp_path / "half.h5"
    with h5py.File(src, "w") as f:
        f["bold"] = np.random.default_rng(0).normal(100, 5, size=(3, 20))
    path = _write(tmp_path / "b.h5", bold=None)
    layout = h5py.VirtualLayout(shape=(3, 40), dtype="f8")
    layout[:, :20] = h5py.VirtualSource(str(src), "bold", shape=(3, 20))
    layout[:, 20:] = h5py.VirtualSource(str(tmp_path / "gone.h5"), "bold", shape=(3, 20))
    with h5py.File(path, "a") as f:
        f["subjects/s1"].create_virtual_dataset("bold", layout, fillvalue=np.nan)
    with pytest.raises(DataError, match="stored in other files that are missing: .*gone.h5"):
        load_observed_bold(path, "s1")
