"""Single neurons through the CPU kernels, against analytic solutions."""

import math

import numpy as np
import pytest

from dtb.kernels import cpu
from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS, LIF_GAINS, IafPscExp, LifCond

DT = 0.1
NO_DRIVE = cpu.poisson_tables(np.zeros(1), 16)  # the Poisson tables of one population without external drive


def _run_iaf(params_row, n_steps, inputs=None, v0=0.0):
    """Advance one iaf_psc_exp neuron; inputs: {step: (ex_pA, in_pA)}. Returns V trace (rel. E_L) and spikes."""
    v = np.array([v0])
    i_ex, i_in, ref = np.zeros(1), np.zeros(1), np.zeros(1, np.int32)
    trace, spikes = [], []
    for t in range(n_steps):
        inbuf = np.zeros((1, 2, 1), np.float32)
        if inputs and t in inputs:
            inbuf[0, :, 0] = inputs[t]
        out_lid, out_step = np.empty(1, np.int64), np.empty(1, np.int64)
        n = cpu.advance_iaf_psc_exp(t, 1, 1, np.zeros(1, np.int64), np.zeros(1, np.int32), params_row[None, :],
                                    np.ones((1, 4)), v, i_ex, i_in, ref, np.zeros(1), inbuf, cpu.blocks(1, 1),
                                    np.zeros(1, np.uint64), np.zeros(1), out_lid, out_step)
        trace.append(v[0])
        if n:
            spikes.append(int(out_step[0]))
    return np.array(trace), spikes


def test_iaf_current_step_exact():
    nrn = IafPscExp(i_e_pa=300.0, v_th_mv=1e9)
    trace, _ = _run_iaf(nrn.table_row(DT), 500)
    t = (np.arange(500) + 1) * DT
    expect = 300.0 * nrn.tau_m_ms / nrn.c_m_pf * (1 - np.exp(-t / nrn.tau_m_ms))
    np.testing.assert_allclose(trace, expect, rtol=1e-6, atol=0)


@pytest.mark.parametrize("tau_syn", [0.5, 2.0, 10.0])
def test_iaf_single_synaptic_input_exact(tau_syn):
    nrn = IafPscExp(tau_syn_ex_ms=tau_syn, v_th_mv=1e9)
    w, k = 87.81, 5
    trace, _ = _run_iaf(nrn.table_row(DT), 600, inputs={k: (w, 0.0)})
    # the current jumps at the end of step k, i.e. at time (k + 1) dt
    s = (np.arange(600) + 1) * DT - (k + 1) * DT
    tau, c = nrn.tau_m_ms, nrn.c_m_pf
    w = float(np.float32(w))  # inputs travel as float32
    if tau_syn == tau:  # the degenerate alpha-shaped case
        psp = w / c * s * np.exp(-s / tau)
    else:
        psp = w * tau * tau_syn / (c * (tau - tau_syn)) * (np.exp(-s / tau) - np.exp(-s / tau_syn))
    expect = np.where(s > 0, psp, 0.0)
    assert np.all(trace[: k + 1] == 0)
    np.testing.assert_allclose(trace[k + 1:], expect[k + 1:], rtol=1e-6)
    assert 0.14 < trace.max() < 0.16 or tau_syn != 0.5  # the PD14 weight gives a 0.15 mV PSP


def test_iaf_inhibitory_input_mirrors_excitatory():
    nrn = IafPscExp(v_th_mv=1e9)
    exc, _ = _run_iaf(nrn.table_row(DT), 200, inputs={3: (50.0, 0.0)})
    inh, _ = _run_iaf(nrn.table_row(DT), 200, inputs={3: (0.0, -50.0)})
    np.testing.assert_allclose(inh, -exc, rtol=1e-12)


def test_iaf_refractoriness_and_reset():
    nrn = IafPscExp(i_e_pa=1000.0)
    row = nrn.table_row(DT)
    trace, spikes = _run_iaf(row, 3000)
    ref_steps = int(row[IAF_COLUMNS.index("ref_steps")])
    assert len(spikes) > 5
    for s in spikes:
        # held at reset for t_ref after the spike step, then free again
        assert np.all(trace[s: s + ref_steps + 1] == nrn.v_reset_mv - nrn.e_l_mv)
        assert trace[s + ref_steps + 1] > trace[s]
    isi = np.diff(spikes)
    assert np.all(isi == isi[0]) and isi[0] > ref_steps
    # analytic period: t_ref + time to climb from reset to threshold under I_e
    v_inf = 1000.0 * nrn.tau_m_ms / nrn.c_m_pf
    t_climb = -nrn.tau_m_ms * math.log(1 - (nrn.v_th_mv - nrn.e_l_mv) / v_inf)
    assert abs(isi[0] * DT - (nrn.t_ref_ms + t_climb)) <= 2 * DT


def _run_lif(row, n_steps, inputs=None, v0=-70.0, i_bg0=None):
    v = np.array([v0])
    j = np.zeros((4, 1))
    i_bg = np.array([row[LIF_COLUMNS.index("ou_mu")] if i_bg0 is None else i_bg0])
    ref = np.zeros(1, np.int32)
    vs, js, spikes = [], [], []
    for t in range(n_steps):
        inbuf = np.zeros((1, 2, 1), np.float32)
        if inputs and t in inputs:
            inbuf[0, :, 0] = inputs[t]
        out_lid, out_step = np.empty(1, np.int64), np.empty(1, np.int64)
        n = cpu.advance_lif_cond(t, 1, 1, np.zeros(1, np.int64), np.zeros(1, np.int32), row[None, :], NO_DRIVE, v,
                                 j, i_bg, ref, np.ones((5, 1)), np.zeros(1), inbuf, cpu.blocks(1, 1),
                                 np.zeros(1, np.uint64), np.zeros((4, 1), np.uint32), out_lid, out_step)
        vs.append(v[0])
        js.append(j[:, 0].copy())
        if n:
            spikes.append(int(out_step[0]))
    return np.array(vs), np.array(js), spikes


def test_lif_receptor_traces_decay_exactly():
    nrn = LifCond(ou_sigma=0.0, ou_mu=0.0, v_th_mv=1e9)
    _, js, _ = _run_lif(nrn.table_row(DT), 800, inputs={10: (0.7, 1.3)})
    taus = (nrn.tau_ampa_ms, nrn.tau_nmda_ms, nrn.tau_gaba_a_ms, nrn.tau_gaba_b_ms)
    jump = [float(np.float32(x)) for x in (0.7, 0.7, 1.3, 1.3)]  # inputs travel as float32
    n = np.arange(800)
    for c in range(4):
        expect = np.where(n >= 10, jump[c] * np.exp(-(n - 10) * DT / taus[c]), 0.0)
        np.testing.assert_allclose(js[:, c], expect, rtol=1e-12, atol=1e-300)


def test_lif_leak_relaxation_exact():
    nrn = LifCond(ou_sigma=0.0, ou_mu=0.45, v_th_mv=1e9)
    vs, _, _ = _run_lif(nrn.table_row(DT), 1000, v0=-70.0)
    v_inf = nrn.v_l_mv + 0.45 / nrn.g_l
    t = (np.arange(1000) + 1) * DT
    np.testing.assert_allclose(vs, v_inf + (-70.0 - v_inf) * np.exp(-nrn.g_l * t / nrn.c), rtol=1e-9)


def test_lif_conductance_pulls_towards_reversal():
    nrn = LifCond(ou_sigma=0.0, ou_mu=0.0, v_th_mv=1e9)
    base, _, _ = _run_lif(nrn.table_row(DT), 300, v0=-60.0)
    exc, _, _ = _run_lif(nrn.table_row(DT), 300, v0=-60.0, inputs={5: (1.0, 0.0)})
    inh, _, _ = _run_lif(nrn.table_row(DT), 300, v0=-60.0, inputs={5: (0.0, 1.0)})
    assert np.all(exc[:6] == base[:6]) and np.all(inh[:6] == base[:6])
    assert np.all(exc[7:] > base[7:]) and np.all(inh[7:] < base[7:])


def test_lif_refractory_hold():
    nrn = LifCond(ou_sigma=0.0, ou_mu=1.5)
    row = nrn.table_row(DT)
    vs, _, spikes = _run_lif(row, 2000)
    ref_steps = int(row[LIF_COLUMNS.index("ref_steps")])
    assert len(spikes) > 3
    for s in spikes:
        assert np.all(vs[s: s + ref_steps + 1] == nrn.v_reset_mv)
    assert np.all(np.diff(spikes) > ref_steps)


def test_ou_background_statistics():
    nrn = LifCond(ou_mu=0.5, ou_sigma=0.2, ou_tau_ms=5.0, v_th_mv=1e9)
    row = nrn.table_row(DT)
    n = 4000
    v, j, i_bg = np.full(n, -70.0), np.zeros((4, n)), np.full(n, 0.5)
    ref = np.zeros(n, np.int32)
    samples = []
    gids = np.arange(n, dtype=np.int64)
    for e in range(40):
        inbuf = np.zeros((50, 2, n), np.float32)
        cpu.advance_lif_cond(e * 50, 50, 3, gids, np.zeros(n, np.int32), row[None, :], NO_DRIVE, v, j, i_bg, ref,
                             np.ones((5, n)), np.zeros(n), inbuf, cpu.blocks(n, 4), np.zeros(n, np.uint64),
                             np.zeros((4, n), np.uint32),
                             np.empty(n * 50, np.int64), np.empty(n * 50, np.int64))
        samples.append(i_bg.copy())
    s = np.array(samples[5:])
    assert abs(s.mean() - 0.5) < 0.01
    assert abs(s.std() - 0.2) < 0.01
    # lag-one-epoch (5 ms = tau) autocorrelation e^-1
    r = np.corrcoef(s[:-1].ravel(), s[1:].ravel())[0, 1]
    assert abs(r - math.exp(-1)) < 0.03


def test_lif_gains_equal_scaled_parameters():
    """A neuron's gains act exactly as its population's conductances and OU mean scaled by them."""
    nrn = LifCond()
    row = nrn.table_row(DT)
    n, m = 300, 40
    rs = np.random.default_rng(5)
    gain = rs.uniform(0.5, 2.0, (len(LIF_GAINS), n))
    scaled = np.tile(row, (n, 1))
    for k, name in enumerate(LIF_GAINS):
        col = LIF_COLUMNS.index("ou_mu" if name == "i_bg" else name)
        scaled[:, col] *= gain[k]
    gids = np.arange(n, dtype=np.int64)
    inbuf = rs.uniform(0, 0.5, (m, 2, n)).astype(np.float32)
    v_start = rs.uniform(-60.0, -50.5, n)
    out = []
    for pop, params, g in ((np.zeros(n, np.int32), row[None, :], gain),
                           (np.arange(n, dtype=np.int32), scaled, np.ones((len(LIF_GAINS), n)))):
        v, j, i_bg = v_start.copy(), np.zeros((4, n)), np.full(n, 0.5)
        lids = np.empty(n * m, np.int64)
        cnt = cpu.advance_lif_cond(0, m, 3, gids, pop, params, cpu.poisson_tables(np.zeros(len(params)), 16), v, j,
                                   i_bg, np.zeros(n, np.int32), g, np.zeros(n), inbuf.copy(), cpu.blocks(n, 3),
                                   np.zeros(n, np.uint64), np.zeros((4, n), np.uint32), lids,
                                   np.empty(n * m, np.int64))
        out.append((v, j, i_bg, lids[:cnt]))
    for a, b in zip(*out):
        assert np.array_equal(a, b)
    assert len(out[0][3]) > 0
