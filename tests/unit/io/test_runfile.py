"""The run file: schema, consistency with the run, no partial files left behind."""

import json
import tomllib

import h5py
import numpy as np
import pytest

from dtb import driver
from dtb.config import load_config
from dtb.errors import ConfigError, ResourceError
from dtb.io.runfile import SORTING, get_sorting, read_summary

SMALL = ["wholebrain.n_neurons=2000", "wholebrain.in_degree=30", "simulation.t_ms=120", "recording.progress=false",
         "recording.flush_ms=25", "recording.rate_bin_ms=2"]


@pytest.fixture(scope="module")
def run_file(small_run):
    return small_run(*SMALL)


def test_schema(run_file):
    path, summary = run_file
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 2
        assert f.attrs["model"] == "wholebrain" and f.attrs["seed"] == 1
        assert f.attrs["dt_ms"] == 0.1 and f.attrs["t_ms"] == 120.0
        ts = f["spikes/wholebrain/timestamps"]
        ids = f["spikes/wholebrain/node_ids"]
        assert ts.dtype == np.float64 and ids.dtype == np.uint64 and ts.attrs["units"] == "ms"
        assert get_sorting(f["spikes/wholebrain"]) == "by_id"
        assert h5py.check_enum_dtype(f["spikes/wholebrain"].attrs.get_id("sorting").dtype) == SORTING
        assert len(ts) == len(ids) == summary["n_spikes"] > 0
        t = ts[()]
        assert t.min() > 0 and t.max() <= 120.0
        assert ids[()].max() < 2000
        # sorted by node id, then time
        order = np.lexsort((t, ids[()]))
        np.testing.assert_array_equal(order, np.arange(len(t)))
        assert not path.with_name(path.name + ".parts").exists()  # one-rank files stand alone
        pop = f["rates/population_hz"]
        assert pop.shape == (60, 188) and pop.attrs["bin_ms"] == 2.0 and pop.attrs["units"] == "Hz"
        assert f["rates/region_hz"].shape == (60, 94)
        net = f["network"]
        sizes = net["populations/size"][()]
        assert sizes.sum() == 2000 and net.attrs["n_neurons"] == 2000
        assert np.array_equal(net["populations/first_gid"][()], np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        pairs = net["synapse_counts"]  # the population pairs that hold synapses, row-major
        assert pairs["count"][()].sum() == net.attrs["n_synapses"] == 2000 * 30
        assert pairs["count"][()].min() > 0 and list(pairs.attrs["shape"]) == [188, 188]
        key = pairs["target"][()] * 188 + pairs["source"][()]
        assert (np.diff(key) > 0).all()
        assert net["populations/name"][0].decode() == "Precentral_L.E"
        assert len(net["regions"]) == 94
        assert f["partition"].attrs["n_ranks"] == 1
        cfg = tomllib.loads(f["config"][()].decode())
        assert cfg["wholebrain"]["n_neurons"] == 2000 and cfg["simulation"]["t_ms"] == 120.0
        # rates are the binned spikes
        gids = ids[()].astype(np.int64)
        first = net["populations/first_gid"][()]
        p = np.searchsorted(first, gids, side="right") - 1
        b = np.minimum((t / 2.0 - 1e-9).astype(int), 59)
        counts = np.zeros((60, 188))
        np.add.at(counts, (b, p), 1)
        np.testing.assert_allclose(pop[()], counts / sizes / 2e-3, rtol=1e-6)
    assert not path.with_name(path.name + ".partial").exists()


def test_summary_and_inspect(run_file):
    path, summary = run_file
    facts = read_summary(path)
    for key in ("n_neurons", "n_synapses", "n_spikes", "t_ms", "mean_rate_hz", "rates_hz", "build_s", "sim_s"):
        assert key in facts
    assert facts["n_spikes"] == summary["n_spikes"]
    assert abs(facts["mean_rate_hz"] - facts["n_spikes"] / 2000 / 0.12) < 1e-9
    assert len(facts["rates_hz"]) == 188


def test_same_seed_same_file_content(run_file, tmp_path):
    path, _ = run_file
    out = tmp_path / "again.h5"
    driver.run(load_config(overrides=SMALL + ["recording.flush_ms=40"]), out)
    with h5py.File(path) as a, h5py.File(out) as b:
        for name in ("spikes/wholebrain/timestamps", "spikes/wholebrain/node_ids", "rates/population_hz"):
            np.testing.assert_array_equal(a[name][()], b[name][()])


def test_existing_output_needs_overwrite(run_file):
    path, _ = run_file
    with pytest.raises(ResourceError, match="exists"):
        driver.run(load_config(overrides=SMALL), path)


def test_failed_run_leaves_no_file(tmp_path):
    out = tmp_path / "bad.h5"
    with pytest.raises(ConfigError, match="multiple of simulation.dt_ms"):
        driver.run(load_config(overrides=SMALL + ["simulation.t_ms=10.05"]), out)
    with pytest.raises(ConfigError, match="too small"):
        driver.run(load_config(overrides=SMALL + ["wholebrain.n_neurons=300"]), out)
    assert list(tmp_path.iterdir()) == []


def test_pd14_run_without_spike_recording(tmp_path):
    out = tmp_path / "pd14.h5"
    s = driver.run(load_config(overrides=["model=pd14", "pd14.n_scale=0.02", "pd14.k_scale=0.1", "simulation.t_ms=50",
                                          "recording.spikes=false", "recording.progress=false"]), out)
    with h5py.File(out) as f:
        assert len(f["spikes/pd14/node_ids"]) == 0
        assert f["rates/population_hz"].shape == (50, 8)
        assert list(f["network/regions"].asstr()[()]) == ["L23", "L4", "L5", "L6"]
        assert json.loads(f["summary"][()])["n_spikes"] == s["n_spikes"] > 0


def test_spikes_sort_in_bounded_memory(tmp_path):
    """Sorting a rank's spikes by (gid, time) in windows of neurons gives the one-pass result, block by block."""
    from dtb.context import Context
    from dtb.io.recording import Recorder

    rec = Recorder(Context.serial(threads=1), tmp_path / "parts", np.array([0, 500, 1200]), 0.1, 10)
    rec.start()
    r = np.random.default_rng(0)
    for epoch in range(40):
        steps = r.integers(epoch * 10, epoch * 10 + 10, 300)
        gids = r.integers(0, 1200, 300)
        order = np.lexsort((gids, steps))
        rec.spikes(steps[order], gids[order])
        if epoch % 5 == 4:
            rec.flush((epoch + 1) * 10)
        if epoch % 13 == 12:
            rec.next_segment()  # spikes spread over several segment files
    rec.flush(400, final=True)
    rec.close()
    local = np.arange(1200, dtype=np.int64)
    (whole,) = list(rec.sorted_spikes(local, 10**9))
    assert len(whole[0]) == 12_000 and rec.segment == 4
    np.testing.assert_array_equal(np.lexsort((whole[0], whole[1])), np.arange(12_000))
    blocks = list(rec.sorted_spikes(local, 1000))
    assert len(blocks) >= 12 and max(len(t) for t, _ in blocks) <= 1000
    for got, want in zip((np.concatenate([b[k] for b in blocks]) for k in (0, 1)), whole):
        np.testing.assert_array_equal(got, want)
    with h5py.File(tmp_path / "out.h5", "w") as f:
        gids, counts = rec.finish_spikes(np.array([[0, 1200]]), local, max_spikes=700).write(f)
        np.testing.assert_array_equal(f["timestamps"][()], whole[0])
        np.testing.assert_array_equal(f["node_ids"][()], whole[1])
    np.testing.assert_array_equal(np.repeat(gids, counts), whole[1].astype(np.int64))


def test_libsonata_reads_the_spikes(run_file):
    """The reference SONATA reader opens the spike report: populations, sorting, every spike."""
    libsonata = pytest.importorskip("libsonata")
    path, summary = run_file
    report = libsonata.SpikeReader(str(path))
    assert report.get_population_names() == ["wholebrain"]
    pop = report["wholebrain"]
    assert pop.sorting == "by_id"
    spikes = pop.get()
    assert len(spikes) == summary["n_spikes"]
    with h5py.File(path) as f:
        ids = f["spikes/wholebrain/node_ids"][()]
    np.testing.assert_array_equal(np.sort([s[0] for s in spikes]), np.sort(ids))
