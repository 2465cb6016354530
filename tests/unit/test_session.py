"""The public API: dtb.Network, dtb.Session (repeatable run, record, stimulate, resume) and open_run."""

import warnings

import h5py
import numpy as np
import pytest

import dtb
from dtb.errors import ConfigError, DTBError, UsageError


def ei_network(seed=1, drive=True):
    net = dtb.Network(seed=seed, dt_ms=0.1)
    e = net.population("E", 800, model="lif_cond")
    i = net.population("I", 200, model="lif_cond")
    net.connect(e, [e, i], rule="fixed_in_degree", k=80, weight=0.4, delay_ms=1.5)
    net.connect(i, [e, i], rule="fixed_in_degree", k=20, weight=2.0, delay_ms=0.8)
    if drive:
        net.drive([e, i], rate_hz=8.0, k=100, weight=0.4)
    return net, e, i


def spikes(path, model="network"):
    with h5py.File(path) as f:
        return f[f"spikes/{model}/timestamps"][()], f[f"spikes/{model}/node_ids"][()]


def test_the_issue_script_runs_as_written(tmp_path):
    net, e, i = ei_network()
    s = dtb.Session(net, out=tmp_path / "mine.h5", backend="cpu", progress=False)
    s.record(spikes=[e, i], state={"v_mv": e[:10]}, rate_bin_ms=1.0)
    s.stimulate(e[:100], amplitude=2.0, start_ms=100.0, stop_ms=150.0)
    s.run(100.0)
    s.run(100.0)
    summary = s.close()
    assert summary["t_ms"] == 200.0 and summary["n_spikes"] > 500
    with dtb.open_run(tmp_path / "mine.h5") as r:
        v = r.state["v_mv"]
        assert v.shape == (2000, 10) and v.attrs["units"] == "mV"
        np.testing.assert_array_equal(v.neuron.values, np.arange(10))
        np.testing.assert_allclose(v.time.values[[0, -1]], [0.1, 200.0])
        assert -80 < float(v.min()) and float(v.max()) < -49  # between reversal and threshold
        assert r.rates.shape == (200, 2) and r.n_spikes == summary["n_spikes"]
        assert r.config is None  # built in Python: no config to store
        t, ids = r.spikes.times_ms.compute(), r.spikes.node_ids.compute()
    # against the same network unstimulated: bitwise the same until the stimulus starts, then the first
    # 100 E neurons fire far more inside its window
    with dtb.Session(net, out=tmp_path / "plain.h5", progress=False) as s:
        s.run(200.0)
    with dtb.open_run(tmp_path / "plain.h5") as r:
        t0, ids0 = r.spikes.times_ms.compute(), r.spikes.node_ids.compute()
    np.testing.assert_array_equal(np.sort(t[t <= 100.1]), np.sort(t0[t0 <= 100.1]))
    inside = (t > 100.1) & (t <= 150) & (ids < 100)
    inside0 = (t0 > 100.1) & (t0 <= 150) & (ids0 < 100)
    assert inside.sum() > 3 * max(1, inside0.sum())


def test_two_runs_are_bitwise_one_run_and_resume_continues(tmp_path):
    net, e, i = ei_network()
    with dtb.Session(net, out=tmp_path / "one.h5", progress=False) as s:
        s.run(200.0)
    s = dtb.Session(net, out=tmp_path / "two.h5", progress=False, checkpoint_ms=50.0)
    s.run(100.0)
    s.run(100.0)
    s.close()
    for a, b in zip(spikes(tmp_path / "one.h5"), spikes(tmp_path / "two.h5")):
        np.testing.assert_array_equal(a, b)

    class Stop(Exception):
        pass

    def stop(step):
        if step == 1000:
            raise Stop

    s = dtb.Session(net, out=tmp_path / "three.h5", progress=False, checkpoint_ms=50.0)
    s.on_checkpoint = stop
    with pytest.raises(Stop):
        s.run(200.0)
    assert not (tmp_path / "three.h5").exists() and (tmp_path / "three.h5.partial").exists()
    changed, *_ = ei_network(seed=1, drive=False)
    changed.drive(changed["E"], rate_hz=9.0, k=100, weight=0.4)
    changed.drive(changed["I"], rate_hz=8.0, k=100, weight=0.4)
    with pytest.raises(ConfigError, match="the network differs"):
        dtb.Session(changed, out=tmp_path / "three.h5", resume=True, progress=False).run(100.0)
    s = dtb.Session(net, out=tmp_path / "three.h5", resume=True, progress=False, checkpoint_ms=50.0)
    s.prepare()
    assert s.t_ms == 100.0
    s.run(100.0)
    assert s.close()["resumed_at_ms"] == 100.0
    for a, b in zip(spikes(tmp_path / "one.h5"), spikes(tmp_path / "three.h5")):
        np.testing.assert_array_equal(a, b)


def test_selective_recording_keeps_the_rates_of_all(tmp_path):
    net, e, i = ei_network()
    with dtb.Session(net, out=tmp_path / "all.h5", progress=False) as s:
        s.run(100.0)
    with dtb.Session(net, out=tmp_path / "i.h5", progress=False) as s:
        s.record(spikes=["I"])
        s.run(100.0)
    t_all, ids_all = spikes(tmp_path / "all.h5")
    t_i, ids_i = spikes(tmp_path / "i.h5")
    keep = ids_all >= 800
    np.testing.assert_array_equal(ids_i, ids_all[keep])
    np.testing.assert_array_equal(t_i, t_all[keep])
    with h5py.File(tmp_path / "all.h5") as a, h5py.File(tmp_path / "i.h5") as b:
        np.testing.assert_array_equal(a["rates/population_hz"][()], b["rates/population_hz"][()])


def test_a_network_without_drive_warns_and_fires_nothing(tmp_path):
    net, e, i = ei_network(drive=False)
    with pytest.warns(UserWarning, match="no population of this network has a drive"):
        with dtb.Session(net, out=tmp_path / "quiet.h5", progress=False) as s:
            s.run(50.0)
    assert dtb.read_summary(tmp_path / "quiet.h5")["n_spikes"] == 0
    net, e, i = ei_network()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dtb.Session(net, progress=False).run(10.0)  # driven: no warning, and no file


def test_misuse_raises_dtb_errors(tmp_path):
    net, e, i = ei_network()
    with pytest.raises(UsageError):
        dtb.Session("not a network")
    with pytest.raises(UsageError, match="whole populations"):
        net.connect(e[:10], i, k=5, weight=0.1, delay_ms=1.0)
    with pytest.raises(ConfigError, match="needs k"):
        net.connect(e, i, weight=0.1, delay_ms=1.0)
    with pytest.raises(ConfigError, match="one model per network"):
        net.population("X", 10, model="iaf_psc_exp")
    with pytest.raises(ConfigError, match="has no parameter tau_m_ms"):
        net.population("Y", 10, model="lif_cond", tau_m_ms=20.0)
    with pytest.raises(ConfigError, match="no population 'Z'"):
        net["Z"]
    for bad in (float("nan"), float("inf"), "10", 1e15, -1.0):  # simulation.t_ms's bounds
        with pytest.raises(ConfigError, match=r"Session.run: t_ms = .*: must be a number > 0 and <= 1e\+09"):
            dtb.Session(net, progress=False).run(bad)
    with pytest.raises(UsageError, match="must be a whole number >= 0"):
        dtb.Session(net, progress=False).run_steps(2.5)
    lone = dtb.Network()
    lone.population("E", 10)
    with pytest.raises(ConfigError, match="the network has no connection"):
        dtb.Session(lone, progress=False)
    s = dtb.Session(net, progress=False)
    with pytest.raises(ConfigError, match="no variable 'i_ex_pa'"):
        s.record(state={"i_ex_pa": e[:3]})
    s.run(1.0)
    with pytest.raises(UsageError, match="before the first run"):
        s.record(spikes=False)
    with pytest.raises(ConfigError, match="positive multiple"):
        s.run(0.05)
    assert issubclass(UsageError, DTBError)


def test_builtin_models_take_per_region_parameters():
    a = dtb.wholebrain(n_neurons=2000, in_degree=20).recipe()
    labels = a.regions
    b = dtb.wholebrain(n_neurons=2000, in_degree=20, bg_mu_mv_ms={labels[3]: 0.9}).recipe()
    mus = [p.neuron.ou_mu for p in b.populations]
    assert mus[6] == mus[7] == 0.9 and mus[0] == 0.7
    c = dtb.wholebrain(n_neurons=2000, in_degree=20, bg_mu_mv_ms=np.linspace(0.5, 0.9, len(labels))).recipe()
    assert c.populations[-1].neuron.ou_mu == 0.9
    with pytest.raises(ConfigError, match="3 values for"):
        dtb.wholebrain(n_neurons=2000, bg_mu_mv_ms=[1, 2, 3])
    with pytest.raises(ConfigError, match="no region 'Nowhere'"):
        dtb.wholebrain(n_neurons=2000, bg_mu_mv_ms={"Nowhere": 1.0})
    with pytest.raises(ConfigError, match="unknown parameter"):
        dtb.pd14(n_sale=0.1)
    assert dtb.pd14(n_scale=0.02).recipe().neuron_model == "iaf_psc_exp"
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() == dtb.wholebrain(n_neurons=2000,
                                                                                    in_degree=20).recipe().fingerprint()


def test_the_config_reads_per_region_values_state_stimuli_and_old_names(tmp_path):
    from dtb.config import load_config
    from dtb.model.registry import network_from_config

    labels = network_from_config(load_config(overrides=["wholebrain.n_neurons=2000"])).recipe().regions
    (tmp_path / "mu.tsv").write_text(f"region\tmu\n{labels[0]}\t0.8\n{labels[5]}\t0.6\n")
    (tmp_path / "run.toml").write_text(f"""
model = "wholebrain"
[wholebrain]
n_neurons = 2000
in_degree = 20
bg_mu_mv_ms = "mu.tsv"
[simulation]
t_ms = 40
[recording]
progress = false
spikes = ["{labels[0]}.E", "{labels[1]}"]
state = {{v_mv = {{populations = ["{labels[0]}.E"], every_ms = 2.0, max_neurons = 3}}}}
[[stimulus]]
populations = ["{labels[0]}.E"]
amplitude = 1.5
start_ms = 10
stop_ms = 20
""")
    cfg = load_config(tmp_path / "run.toml")
    recipe = network_from_config(cfg).recipe()
    mus = [p.neuron.ou_mu for p in recipe.populations]
    assert mus[0] == 0.8 and mus[10] == 0.6 and mus[2] == 0.7
    summary = dtb.run(cfg, tmp_path / "r.h5")
    assert summary["recorded_populations"] == [f"{labels[0]}.E", f"{labels[1]}.E", f"{labels[1]}.I"]
    with dtb.open_run(tmp_path / "r.h5") as r:
        assert r.state["v_mv"].shape == (20, 3)
        ids = r.spikes.node_ids.compute()
        assert set(np.unique(np.searchsorted(recipe.offsets, ids, side="right") - 1)) <= {0, 2, 3}
    with pytest.warns(FutureWarning, match="wholebrain.bg_mu is deprecated, use wholebrain.bg_mu_mv_ms"):
        old = load_config(overrides=["wholebrain.bg_mu=0.6"])
    assert old.wholebrain.bg_mu_mv_ms == 0.6
    for bad, msg in ((["recording.spikes=[1]"], "list of population names"),
                     (["wholebrain.bg_mu_mv_ms=[]"], "empty"),
                     (["wholebrain.bg_mu_mv_ms=[1e9]"], r"bg_mu_mv_ms\[0\]")):
        with pytest.raises(ConfigError, match=msg):
            load_config(overrides=bad)
    (tmp_path / "bad.toml").write_text("[[stimulus]]\npopulations = ['x']\namplitude = 1\nstart_ms = 5\n")
    with pytest.raises(ConfigError, match="needs exactly the keys"):
        load_config(tmp_path / "bad.toml")


def test_progress_in_a_log_is_plain_lines(monkeypatch, capsys):
    """Not on a terminal (a batch log), progress is whole lines, not carriage returns."""
    from dtb.session import Progress

    monkeypatch.setattr(Progress, "LOG_EVERY_S", 0.0)
    p = Progress(True)
    update = p("simulate", 100, unit="step")
    update(40)
    update(60)
    p.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("dtb: simulate 40% (40/100 step), 0 s, about 0 s left")
    assert lines[1].startswith("dtb: simulate 100% (100/100 step)")


def test_a_first_run_says_that_it_compiles(tmp_path, monkeypatch, capsys):
    from dtb.kernels import cpu

    net = ei_network()[0]
    with dtb.Session(net, out=tmp_path / "warm.h5") as s:
        s.run(5.0)
    assert cpu.kernels_to_compile() == 0  # what a run compiled is in numba's cache now
    assert "compiling" not in capsys.readouterr().err
    monkeypatch.setattr(cpu, "kernels_to_compile", lambda: 3)
    with dtb.Session(net, out=tmp_path / "cold.h5") as s:
        s.run(5.0)
    assert "dtb: compiling the CPU kernels for this machine (first run only" in capsys.readouterr().err


def test_population_tables_that_cannot_fit_are_refused_before_partitioning(tmp_path, monkeypatch):
    """Every rank holds the sparse population tables while it partitions: a network of more connected population
    pairs than they fit is refused before they are allocated, saying that more ranks would not help."""
    import dtb.memory

    from dtb.model.recipe import Population, Projection, Recipe

    n = 1000  # every population from every other: a million pairs x 64 bytes = 61 MiB
    every = np.arange(n)
    net = Recipe(model="dense", populations=tuple(Population(f"P{k}", 2, True, 0) for k in range(n)),
                 projections=tuple(Projection(k, every, np.full(n, 1 / n), indegree=1, weight_mean=0.1,
                                              delay_ms=np.ones(n)) for k in range(n)), regions=("R",), dt_ms=0.1)
    monkeypatch.setattr(dtb.memory, "available_bytes", lambda: 220 * 2**20)  # base 200 MiB + tables > 220 MiB
    with pytest.raises(dtb.errors.ResourceError, match="its 1,000,000 connected population pairs need population "
                                                       "tables of 61 MiB.*more ranks do not help"):
        dtb.Session(net, out=tmp_path / "r.h5", progress=False).run(1.0)
    assert list(tmp_path.iterdir()) == []
