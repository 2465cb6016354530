"""The analysis API: lazy views equal the file, streaming helpers equal in-memory references."""

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

from dtb import driver
from dtb.config import load_config
from dtb.errors import DataError
from dtb.io import open_run
from dtb.io.analysis import bold_fc, isi_cv, rate_histograms, spike_count_correlation, spike_counts
from helpers import Stop, stop_at_checkpoint

RUN = ["wholebrain.n_neurons=2000", "wholebrain.in_degree=30", "simulation.t_ms=2500", "recording.progress=false",
       "recording.bold=true", "bold.tr_ms=100", "recording.rate_bin_ms=5"]


@pytest.fixture(scope="module")
def run_path(small_run):
    return small_run(*RUN)[0]


@pytest.fixture(scope="module")
def spikes(run_path):
    with h5py.File(run_path) as f:
        return f["spikes/wholebrain/timestamps"][()], f["spikes/wholebrain/node_ids"][()].astype(np.int64)


def test_lazy_views_match_the_file(run_path):
    with open_run(run_path) as run, h5py.File(run_path) as f:
        rates = run.rates
        assert isinstance(rates, xr.DataArray) and isinstance(rates.data, da.Array)  # nothing read yet
        assert rates.dims == ("time", "population") and rates.attrs["units"] == "Hz"
        assert rates.shape == (500, 188) and rates.time.attrs["units"] == "ms"
        np.testing.assert_allclose(rates.time[:2], [2.5, 7.5])
        np.testing.assert_array_equal(rates.values, f["rates/population_hz"][()])
        assert rates.sel(population="Precentral_L.E").region.item() == "Precentral_L"
        np.testing.assert_array_equal(run.region_rates.values, f["rates/region_hz"][()])
        bold = run.bold
        assert bold.dims == ("time", "region") and bold.shape == (25, 94)
        np.testing.assert_allclose(bold.time[[0, -1]], [0.1, 2.5])
        np.testing.assert_array_equal(bold.values, f["bold"][()].T)
        sp = run.spikes
        assert isinstance(sp.times_ms, da.Array) and sp.sorting == "by_id"
        assert len(sp.node_ids) == run.n_spikes == run.metadata["n_spikes"] > 10_000
        assert run.config.wholebrain.n_neurons == 2000 and run.metadata["model"] == "wholebrain"
        assert run.populations[0] == "Precentral_L.E" and len(run.regions) == 94


def reference_isi_cv(times, ids, n):
    cv = np.full(n, np.nan)
    for gid in np.unique(ids):
        isi = np.diff(np.sort(times[ids == gid]))
        if len(isi) >= 2:
            cv[gid] = isi.std(ddof=1) / isi.mean()
    return cv


def test_streaming_helpers_equal_in_memory_references(run_path, spikes):
    times, ids = spikes
    with open_run(run_path, chunk_spikes=len(ids) // 7 + 3) as run:
        counts = spike_counts(run)
        np.testing.assert_array_equal(counts, np.bincount(ids, minlength=2000))
        np.testing.assert_allclose(isi_cv(run), reference_isi_cv(times, ids, 2000), rtol=1e-9, equal_nan=True)
        hist = rate_histograms(run, bins=20)
        assert hist["counts"].sum() == 2000 and hist["counts"].shape == (188, 20)
        r = spike_count_correlation(run, bin_ms=10.0, per_population=5, seed=3)
        # the same sample, binned in memory
        rng = np.random.default_rng(3)
        first, sizes = run.population_first_gid, run.population_sizes
        p = 7
        for q in range(p + 1):
            pick = np.sort(rng.choice(np.arange(first[q], first[q] + sizes[q]), min(sizes[q], 5), replace=False))
        mat = np.array([np.histogram(times[ids == g], bins=250, range=(0, 2500))[0] for g in pick], dtype=float)
        mat = mat[mat.std(axis=1) > 0]
        expected = np.corrcoef(mat)[np.triu_indices(len(mat), 1)].mean()
        assert r.sel(population=run.populations[p]).item() == pytest.approx(expected, rel=1e-9)
        fc = bold_fc(run, skip_trs=5)
        np.testing.assert_allclose(fc.values, np.corrcoef(run.bold.values[5:].T), rtol=1e-12)
        assert fc.dims == ("region", "region_2")


STREAMING_PEAK = """
import sys, tracemalloc
from dtb.io.analysis import isi_cv, open_run, spike_counts
with open_run(sys.argv[1], chunk_spikes=1000) as run:
    isi_cv(run)  # imports and compiled kernels out of the measurement: what is measured is the streaming
    spike_counts(run)
    tracemalloc.start()
    isi_cv(run)
    spike_counts(run)
    print(16 * run.n_spikes, tracemalloc.get_traced_memory()[1])
"""


def test_helpers_stream_spikes_larger_than_their_memory(run_path):
    """The spikes take 16 bytes each; the helpers stay far below that while reading all of them (measured in a
    process of its own, so that nothing another test left behind is counted)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", STREAMING_PEAK, str(run_path)], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    spike_bytes, peak = int(out[0]), int(out[1])
    assert spike_bytes > 400_000  # 25,000 spikes at least: 25 chunks
    assert peak < spike_bytes / 2, (peak, spike_bytes)


def test_checkpoint_files_read_alike(tmp_path, run_path, spikes):
    """An unfinished run's checkpoint (virtual datasets over segment files, not sorted) reads like a run file."""

    out = tmp_path / "stopped.h5"
    with pytest.raises(Stop):
        driver.run(load_config(overrides=RUN + ["simulation.checkpoint_ms=1000"]), out,
                   on_checkpoint=stop_at_checkpoint)
    times, ids = spikes
    early = times <= 1000.0
    with open_run(out.with_name("stopped.h5.partial"), chunk_spikes=999) as run:
        assert run.spikes.sorting == "none" and run.t_ms == 1000.0
        np.testing.assert_array_equal(spike_counts(run), np.bincount(ids[early], minlength=2000))
        np.testing.assert_allclose(isi_cv(run), reference_isi_cv(times[early], ids[early], 2000), rtol=1e-9,
                                   equal_nan=True)
        assert run.rates.shape == (200, 188) and run.region_rates is None and run.bold.shape == (10, 94)


def test_open_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_run(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DataError, match="not a readable HDF5"):
        open_run(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(DataError, match="not a dtb simulation run file"):
        open_run(tmp_path / "other.h5")
