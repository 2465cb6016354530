"""Malformed input through the Python API, table-driven: the same values the configuration refuses are refused
by `dtb.Network`, the neuron models, `dtb.wholebrain`/`dtb.pd14`, `dtb.Session` and `dtb.open_run`, each with a
`DTBError` naming the argument, before anything is built or written (test_bad_input.py holds the command line's
table)."""

import collections
import shutil
import warnings

import numpy as np
import pytest

from helpers import write_connectome
import dtb
from dtb.errors import ConfigError, DataError, DTBError, ResourceError, UsageError
from dtb.model.neurons import IafPscExp, LifCond
from dtb.model.neurons import LIF_GAINS


def one_population(**kw):
    net = dtb.Network(seed=1, dt_ms=0.1)
    return net, net.population("E", 50, model="lif_cond", **kw)


def iaf_network():
    net = dtb.Network(seed=1, dt_ms=0.1)
    net.population("E", 50, model="iaf_psc_exp")
    return net


def connect(**kw):
    net, e = one_population()
    net.connect(e, e, **{**dict(rule="fixed_in_degree", k=5, weight=0.4, delay_ms=1.5), **kw})


def drive(**kw):
    net, e = one_population()
    net.drive([e], **{**dict(rate_hz=8.0, k=100, weight=0.4), **kw})


def session(**kw):
    net, e = one_population()
    net.connect(e, e, rule="fixed_in_degree", k=5, weight=0.4, delay_ms=1.5)
    return dtb.Session(net, progress=False, **{"backend": "cpu", **kw})


def small_brain():
    return dtb.wholebrain(n_neurons=2000, in_degree=10)


N_REG = 94
CASES = {
    # the network
    "time step as text": (lambda: dtb.Network(seed=1, dt_ms="0.1"), "dt_ms = '0.1': must be a finite number"),
    "time step NaN": (lambda: dtb.Network(seed=1, dt_ms=float("nan")), "dt_ms = nan: must be a finite number"),
    "network name a number": (lambda: dtb.Network(seed=1, name=3), "name = 3: must be a non-empty string"),
    "population of 10.5": (lambda: dtb.Network(seed=1).population("E", 10.5, model="lif_cond"),
                           "population 'E': size = 10.5: must be an integer >= 1"),
    "empty population": (lambda: dtb.Network(seed=1).population("E", 0, model="lif_cond"),
                         "population 'E': size = 0: must be an integer >= 1"),
    "population named by a number": (lambda: dtb.Network(seed=1).population(5, 10, model="lif_cond"),
                                     "population name 5: must be a non-empty string"),
    "negative spread of v0": (lambda: one_population(v0_sd_mv=-1), "v0_sd_mv = -1: must be >= 0"),
    "parameter of another model": (lambda: one_population(tau_m_ms=10.0), "lif_cond has no parameter tau_m_ms"),
    "capacitance NaN": (lambda: dtb.Network(seed=1).population("E", 10, model="iaf_psc_exp", c_m_pf=float("nan")),
                        "iaf_psc_exp: c_m_pf = nan: must be a finite number"),
    "reset above threshold": (lambda: dtb.Network(seed=1).population("E", 10, model="iaf_psc_exp", v_reset_mv=-40.0,
                                                                   v_th_mv=-50.0),
                              "v_reset_mv = -40 must be below v_th_mv = -50"),
    "negative in-degree": (lambda: connect(k=-1), "needs k = -1: must be an integer >= 1"),
    "weight as text": (lambda: connect(weight="x"), "connect: weight = 'x': must be a finite number"),
    "negative delay": (lambda: connect(delay_ms=-1), "connect: delay_ms = -1: at least one step"),
    "negative weight spread": (lambda: connect(weight_sd=-1), "connect: weight_sd = -1: must be >= 0"),
    "negative drive rate": (lambda: drive(rate_hz=-8.0), "drive: rate_hz = -8.0: must be >= 0"),
    "drive of 1.5 inputs": (lambda: drive(k=1.5), "drive: k = 1.5: must be an integer >= 1"),
    "drive at 1e308 Hz": (lambda: drive(rate_hz=1e308), "drive: rate_hz = 1e+308: must be a number >= 0 and <= 10000"),
    "OU drive of zero time constant": (lambda: drive(ou_tau_ms=0), "drive: ou_tau_ms = 0.0: must be a number > 0"),
    "a population of another network": (lambda: dtb.Network(seed=1).connect(one_population()[1], one_population()[1],
                                                                            k=5, weight=0.4, delay_ms=1.5),
                                         "connect sources: population 'E' is not one of this network's"),
    "neuron 500 of 50": (lambda: one_population()[1][500], "population 'E'[500]: index 500 is out of range"),
    "neurons 0 and 999 of 50": (lambda: one_population()[1][[0, 999]], "an index is outside 0 to 49"),
    "no neuron": (lambda: one_population()[1][500:600], "population 'E'[slice(500, 600, None)]: selects no neuron"),
    "population of True neurons": (lambda: dtb.Network(seed=1).population("A", True),
                                   "population 'A': size = True: must be an integer >= 1"),
    "negative lif_cond weight": (lambda: connect(weight=-1.0), "connect: weight (lif_cond) = -1.0: must be a number"),
    "iaf_psc_exp weight of 1e308 pA": (lambda: (lambda n: n.connect(n.populations[0], n.populations[0], k=5,
                                                                    weight=1e308, delay_ms=1.5))(iaf_network()),
                                       "connect: weight = 1e+308: must be a current of at most 1e+06 pA"),
    "neuron 1.5": (lambda: one_population()[1][1.5], "population 'E'[1.5]: index it by integers or a slice"),
    "neuron 'a'": (lambda: one_population()[1]["a"], "population 'E'['a']: index it by integers or a slice"),
    "network seed True": (lambda: dtb.Network(seed=True), "seed = True: must be an integer in [0, 2**32)"),
    "a connectome path of 5": (lambda: dtb.wholebrain(connectome=5), "the connectome path 5: must be a file name"),
    "overwrite 'no'": (lambda: session(overwrite="no"), "Session: overwrite = 'no': must be True or False"),
    # the neuron models themselves
    "zero membrane time constant": (lambda: IafPscExp(tau_m_ms=0.0), "iaf_psc_exp: tau_m_ms = 0: must be > 0"),
    "negative refractory time": (lambda: LifCond(t_ref_ms=-1.0), "lif_cond: t_ref_ms = -1: must be >= 0"),
    # the built-in models
    "a microcircuit five times full size": (lambda: dtb.pd14(n_scale=5), "n_scale = 5.0: must be a number > 0 and <= 1"),
    "a microcircuit without a layer": (lambda: dtb.pd14(n_scale=1e-9), "leaves L23E without a neuron"),
    "more inputs than neurons": (lambda: dtb.wholebrain(n_neurons=1000, in_degree=2000),
                                 "in_degree = 2,000 exceeds wholebrain.n_neurons = 1,000"),
    # the session
    "unknown exchange": (lambda: session(exchange="x"), "simulation.exchange = 'x': must be one of"),
    "unknown backend": (lambda: session(backend="tpu"), "simulation.backend = 'tpu': must be one of"),
    "negative checkpoint interval": (lambda: session(checkpoint_ms=-1), "simulation.checkpoint_ms = -1.0: must be"),
    "negative gain spread": (lambda: session(gain_spread=-1), "(gain_spread) = -1.0: must be a number >= 0"),
    "session seed as text": (lambda: session(seed="x"), "simulation.seed = 'x'"),
    "rates 'no'": (lambda: session().record(rates="no"), "Session.record: rates = 'no': must be True or False"),
    "negative BOLD epsilon": (lambda: session().record(bold_eps=-1), "Session.record: bold_eps = -1: must be"),
    "stimulus amplitude as text": (lambda: session().stimulate(0, "1", 0.0, 10.0), "stimulus: need a finite amplitude"),
    "recording fractional gids": (lambda: session().record(spikes=[np.array([1.7])]),
                                  "recording.spikes: array([1.7]) is no population or region"),
    "run of 1e15 ms": (lambda: session().run(1e15), "Session.run: t_ms = 1000000000000000.0: must be a number > 0"),
    "run of 0 ms": (lambda: session().run(0), "Session.run: t_ms = 0.0: must be a number > 0"),
    "region gains of another shape": (lambda: dtb.Session(small_brain(), backend="cpu", progress=False,
                                                          region_gains=np.ones((2, 2))),
                                      f"region gains have shape (2, 2), expected ({len(LIF_GAINS)}, {N_REG})"),
    "negative region gains": (lambda: dtb.Session(small_brain(), backend="cpu", progress=False,
                                                  region_gains=-np.ones((len(LIF_GAINS), N_REG))),
                              "region gains"),
    # reading
    "open no path": (lambda: dtb.open_run(None), "open_run: path None is not a file name"),
    "open in blocks of 0 spikes": (lambda: dtb.open_run("x.h5", chunk_spikes=0),
                                   "chunk_spikes = 0: must be an integer >= 1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_api_refuses_what_the_configuration_refuses(tmp_path, monkeypatch, name):
    call, needle = CASES[name]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DTBError) as err:
        call()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert isinstance(err.value, (ConfigError, UsageError, DataError))
    assert list(tmp_path.iterdir()) == []


def test_region_gains_are_checked_between_runs_too():
    with dtb.Session(small_brain(), backend="cpu", progress=False) as s:
        for bad in (np.ones((2, 2)), np.full((len(LIF_GAINS), N_REG), np.nan), np.zeros((len(LIF_GAINS), N_REG))):
            with pytest.raises(ConfigError, match="region gains"):
                s.set_region_gains(bad)
        s.set_region_gains(np.full((len(LIF_GAINS), N_REG), 1.1))  # a good one still goes in


def test_a_connectome_without_any_connection_between_regions_is_refused(tmp_path):
    path = write_connectome(tmp_path / "c.h5", sc=np.zeros((4, 4)), len_mm=np.zeros((4, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone: not the warnings found on the way to it
        with pytest.raises(ConfigError, match="no connection between two regions"):
            dtb.wholebrain(str(path), subject="s1", n_neurons=2000, in_degree=10)


def test_records_that_cannot_fit_the_disk_are_refused_before_the_first_step_and_leave_nothing(tmp_path,
                                                                                               monkeypatch):
    """The rates of 1,000 ms in 1 ms bins need a few kB; a disk with 100 bytes free refuses them with the numbers,
    and the run leaves no file (not its temporary one, not its lock)."""
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    net, e = one_population()
    net.connect(e, e, rule="fixed_in_degree", k=5, weight=0.4, delay_ms=1.5)
    net.drive([e], rate_hz=8.0, k=100, weight=0.4)
    with pytest.raises(ResourceError, match=r"not enough disk for this run: .* which has 0.0 MiB free"):
        with dtb.Session(net, out=tmp_path / "r.h5", backend="cpu", progress=False) as s:
            s.record(spikes=[e], rate_bin_ms=1.0)
            s.run(1000.0)
    assert list(tmp_path.iterdir()) == []


def test_views_of_a_billion_neurons_index_without_an_array_of_them():
    """Slices of a whole population stay ranges, and index like numpy's arange would."""
    a = dtb.Network(seed=1).population("A", 10**9, model="lif_cond")
    assert len(a) == len(a[:]) == 10**9 and a[:].select == range(10**9)
    v = a[10:20:3]
    assert v.select == range(10, 20, 3) and list(v._local()) == [10, 13, 16, 19]
    assert v[1].select == (13,) and v[[0, -1]].select == (10, 19) and a[-1].select == (10**9 - 1,)
    net, e = one_population()
    net.connect(e, e, rule="fixed_in_degree", k=5, weight=0.4, delay_ms=1.5)
    np.testing.assert_array_equal(e[5:40:7].gids(net.recipe()), np.arange(50)[5:40:7])
