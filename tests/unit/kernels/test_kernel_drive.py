"""The external Poisson drive of lif_cond and the per-neuron stimulus current of both models.

The CPU kernels are checked against plain-Python reference loops (the same random numbers, drawn
per neuron and step), the drive against its mean input, and the CUDA kernels' host build
(`HostDevice`, needs nvcc) against the CPU kernels. Everything calls the kernels directly.
"""

import math
import shutil

import numpy as np
import pytest

from dtb.kernels import cpu, rng
from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS, LIF_GAINS, IafPscExp, LifCond

DT = 0.1
SEED = 11
K = 16  # Poisson table size; a population with a larger lam takes the exact sampler beyond it
L = {c: i for i, c in enumerate(LIF_COLUMNS)}
IA = {c: i for i, c in enumerate(IAF_COLUMNS)}


# ---------------------------------------------------------------- reference loops (plain Python)

def _uniform(seed, gid, t):
    """The drive's uniform of (gid, step): `rng.u01_53` of the first two POISSON words."""
    w = rng.random_words(seed, rng.POISSON, 0, np.array([gid]), t)[0]
    hi, lo = int(w[0]), int(w[1])
    return (float((hi << 21) ^ (lo >> 11)) + 0.5) * 2.0**-53


def _poisson(lam, u):
    """Inversion against the cumulative table (as `cpu.poisson_tables` builds it), the exact sampler beyond."""
    pk = math.exp(-lam)
    acc = pk
    for k in range(K):
        if u <= acc:
            return k
        pk *= lam / (k + 1)
        acc += pk
    return int(rng.poisson(lam, u))


def ref_lif(t0, m, seed, gids, pop, params, v, j, i_bg, ref, gain, i_stim, inbuf, features=True):
    """lif_cond, one neuron and step at a time; ``features=False``: the model without drive and stimulus terms."""
    spikes = []
    for s in range(m):
        t = t0 + s
        z = rng.normals(seed, rng.NOISE, gids, t)
        for n in range(len(v)):
            pr = params[pop[n]]
            vn, r = v[n], ref[n]
            ja, jn, jga, jgb = j[:, n]
            if r == 0:
                ga = pr[L["g_ampa"]] * gain[0, n] * ja
                gn = pr[L["g_nmda"]] * gain[1, n] * jn
                gga = pr[L["g_gaba_a"]] * gain[2, n] * jga
                ggb = pr[L["g_gaba_b"]] * gain[3, n] * jgb
                gsum = pr[L["g_l"]] + ga + gn + gga + ggb
                num = (pr[L["g_l"]] * pr[L["v_l_mv"]] + ga * pr[L["e_ampa_mv"]] + gn * pr[L["e_nmda_mv"]]
                       + gga * pr[L["e_gaba_a_mv"]] + ggb * pr[L["e_gaba_b_mv"]] + pr[L["i_ext"]])
                if features:
                    num = num + i_stim[n]
                veq = (num + i_bg[n]) / gsum
                vn = veq + (vn - veq) * math.exp(-gsum * pr[L["dt_over_c"]])
            else:
                r -= 1
            mu = pr[L["ou_mu"]] * gain[4, n]
            i_bg[n] = mu + (i_bg[n] - mu) * pr[L["ou_decay"]] + pr[L["ou_noise"]] * z[n]
            x_e = float(inbuf[s, 0, n])
            x_i = float(inbuf[s, 1, n])
            if features and pr[L["poisson_lam"]] > 0.0:
                x_e += _poisson(pr[L["poisson_lam"]], _uniform(seed, gids[n], t)) * pr[L["w_ext"]]
            j[:, n] = (ja * pr[L["d_ampa"]] + x_e, jn * pr[L["d_nmda"]] + x_e,
                       jga * pr[L["d_gaba_a"]] + x_i, jgb * pr[L["d_gaba_b"]] + x_i)
            if vn >= pr[L["v_th_mv"]]:
                r = int(pr[L["ref_steps"]])
                vn = pr[L["v_reset_mv"]]
                spikes.append((t, n))
            v[n], ref[n] = vn, r
    return spikes


def ref_iaf(t0, m, seed, gids, pop, params, v, i_ex, i_in, ref, i_stim, inbuf):
    spikes = []
    for s in range(m):
        t = t0 + s
        for n in range(len(v)):
            pr = params[pop[n]]
            vn, r = v[n], ref[n]
            if r == 0:
                vn = (pr[IA["p22"]] * vn + pr[IA["p21_ex"]] * i_ex[n] + pr[IA["p21_in"]] * i_in[n]
                      + pr[IA["p20"]] * (pr[IA["i_e_pa"]] + i_stim[n]))
            else:
                r -= 1
            x_ex = float(inbuf[s, 0, n])
            if pr[IA["poisson_lam"]] > 0.0:
                x_ex += _poisson(pr[IA["poisson_lam"]], _uniform(seed, gids[n], t)) * pr[IA["w_ext_pa"]]
            i_ex[n] = i_ex[n] * pr[IA["p11_ex"]] + x_ex
            i_in[n] = i_in[n] * pr[IA["p11_in"]] + float(inbuf[s, 1, n])
            if vn >= pr[IA["theta_mv"]]:
                r = int(pr[IA["ref_steps"]])
                vn = pr[IA["v_reset_mv"]]
                spikes.append((t, n))
            v[n], ref[n] = vn, r
    return spikes


# ---------------------------------------------------------------- kernels

def run_lif(t0, m, seed, gids, pop, params, st, i_stim, inbuf, n_blocks=2):
    n = len(gids)
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_lif_cond(t0, m, seed, gids, pop, params, cpu.poisson_tables(params[:, L["poisson_lam"]], K),
                             st["v"], st["j"], st["i_bg"], st["ref"], st["gain"], i_stim, inbuf,
                             cpu.blocks(n, n_blocks), np.zeros(n, np.uint64), np.zeros((4, n), np.uint32),
                             out_lid, out_step)
    return list(zip(out_step[:k].tolist(), out_lid[:k].tolist()))


def run_iaf(t0, m, seed, gids, pop, params, st, i_stim, inbuf, n_blocks=2):
    n = len(gids)
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_iaf_psc_exp(t0, m, seed, gids, pop, params, cpu.poisson_tables(params[:, IA["poisson_lam"]], K),
                                st["v"], st["i_ex"], st["i_in"], st["ref"], i_stim, inbuf, cpu.blocks(n, n_blocks),
                                np.zeros(n, np.uint64), np.zeros(n), out_lid, out_step)
    return list(zip(out_step[:k].tolist(), out_lid[:k].tolist()))


def lif_setup(n, lams=(0.4, 0.0, 20.0), w_ext=(0.05, 0.5, 0.004), stim=True, seed=0):
    """n neurons over len(lams) populations (pop p: drive lams[p], w_ext[p]); state, stimulus, input."""
    r = np.random.default_rng(seed)
    params = np.stack([LifCond().table_row(DT, poisson_lam=lam, w_ext=w) for lam, w in zip(lams, w_ext)])
    gids = (1000 + 7 * np.arange(n)).astype(np.int64)
    pop = (np.arange(n) % len(lams)).astype(np.int32)
    st = dict(v=r.uniform(-65.0, -50.5, n), j=r.uniform(0.0, 0.05, (4, n)) * [[1], [1], [0.1], [0.1]],
              i_bg=r.normal(0.5, 0.1, n),
              ref=r.integers(0, 3, n).astype(np.int32), gain=r.uniform(0.8, 1.2, (len(LIF_GAINS), n)))
    i_stim = np.where(np.arange(n) % 4 < 2, r.uniform(0.3, 1.0, n), 0.0) if stim else np.zeros(n)
    return gids, pop, params, st, i_stim


def iaf_setup(n, seed=0):
    r = np.random.default_rng(seed)
    params = np.stack([IafPscExp().table_row(DT, poisson_lam=0.9, w_ext_pa=87.8), IafPscExp().table_row(DT)])
    gids = (500 + 3 * np.arange(n)).astype(np.int64)
    pop = (np.arange(n) % 2).astype(np.int32)
    st = dict(v=r.uniform(0.0, 14.5, n), i_ex=r.uniform(0, 200, n), i_in=r.uniform(-200, 0, n),
              ref=r.integers(0, 3, n).astype(np.int32))
    i_stim = np.where(np.arange(n) % 3 > 0, r.uniform(100.0, 600.0, n), 0.0)
    return gids, pop, params, st, i_stim


def lif_input(seed, shape):
    """Synaptic input of lif_cond (trace jumps), inhibition weaker than excitation, float32."""
    x = np.random.default_rng(seed).exponential(0.02, shape)
    x[..., 1, :] *= 0.05
    return x.astype(np.float32)


def copy(st):
    return {k: v.copy() for k, v in st.items()}


def assert_states(got, want, keys, rtol=1e-12):
    for key in keys:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=rtol, err_msg=key)
    np.testing.assert_array_equal(got["ref"], want["ref"])


# ---------------------------------------------------------------- CPU kernels against the references

def test_lif_drive_and_stimulus_match_the_reference():
    n, m = 12, 20
    gids, pop, params, st, i_stim = lif_setup(n)
    mine, want = copy(st), copy(st)
    inputs = lif_input(1, (6, m, 2, n))
    got_spikes, want_spikes = [], []
    for e in range(6):
        got_spikes += run_lif(e * m, m, SEED, gids, pop, params, mine, i_stim, inputs[e].copy())
        want_spikes += ref_lif(e * m, m, SEED, gids, pop, params, want["v"], want["j"], want["i_bg"], want["ref"],
                               want["gain"], i_stim, inputs[e])
    assert got_spikes == sorted(want_spikes) and len(got_spikes) > 5
    assert_states(mine, want, ("v", "j", "i_bg"))
    # the check has teeth: without the drive and the stimulus the neurons end elsewhere
    plain = copy(st)
    for e in range(6):
        ref_lif(e * m, m, SEED, gids, pop, params, plain["v"], plain["j"], plain["i_bg"], plain["ref"],
                plain["gain"], i_stim, inputs[e], features=False)
    driven = pop != 1
    assert np.all(np.abs(plain["j"][0, driven] - want["j"][0, driven]) > 1e-6)
    assert np.array_equal(plain["j"][:, ~driven], want["j"][:, ~driven])
    stim = i_stim > 0
    assert np.all(np.abs(plain["v"][stim] - want["v"][stim]) + np.abs(plain["ref"][stim] - want["ref"][stim]) > 0)


def test_lif_without_drive_and_stimulus_is_the_plain_model():
    """poisson_lam = 0 and i_stim = 0: bitwise the spikes and states of the model without those terms."""
    n, m = 12, 25
    gids, pop, params, st, i_stim = lif_setup(n, lams=(0.0, 0.0), w_ext=(0.3, 0.0), stim=False)
    params = np.ascontiguousarray(params)
    params[:, L["ou_mu"]] = 1.2  # some spikes
    mine, want = copy(st), copy(st)
    inputs = lif_input(2, (3, m, 2, n))
    got_spikes, want_spikes = [], []
    for e in range(3):
        got_spikes += run_lif(e * m, m, SEED, gids, pop, params, mine, i_stim, inputs[e].copy())
        want_spikes += ref_lif(e * m, m, SEED, gids, pop, params, want["v"], want["j"], want["i_bg"], want["ref"],
                               want["gain"], i_stim, inputs[e], features=False)
    assert got_spikes == sorted(want_spikes) and len(got_spikes) > 3
    for key in ("v", "j", "i_bg", "ref"):
        assert np.array_equal(mine[key], want[key]), key


def test_iaf_stimulus_matches_the_reference():
    n, m = 12, 20
    gids, pop, params, st, i_stim = iaf_setup(n)
    mine, want = copy(st), copy(st)
    inputs = np.random.default_rng(3).normal(20.0, 80.0, (4, m, 2, n)).astype(np.float32)
    got_spikes, want_spikes = [], []
    for e in range(4):
        got_spikes += run_iaf(e * m, m, SEED, gids, pop, params, mine, i_stim, inputs[e].copy())
        want_spikes += ref_iaf(e * m, m, SEED, gids, pop, params, want["v"], want["i_ex"], want["i_in"],
                               want["ref"], i_stim, inputs[e])
    assert got_spikes == sorted(want_spikes) and len(got_spikes) > 5
    assert_states(mine, want, ("v", "i_ex", "i_in"))
    # the stimulus matters: without it the stimulated neurons end elsewhere
    plain = copy(st)
    for e in range(4):
        ref_iaf(e * m, m, SEED, gids, pop, params, plain["v"], plain["i_ex"], plain["i_in"], plain["ref"],
                np.zeros(n), inputs[e])
    stim = i_stim > 0
    assert np.all(np.abs(plain["v"][stim] - want["v"][stim]) + np.abs(plain["ref"][stim] - want["ref"][stim]) > 0)
    assert np.array_equal(plain["v"][~stim], want["v"][~stim])


def test_lif_drive_makes_silent_neurons_fire_at_the_rate_of_its_mean_input():
    nrn = LifCond(ou_mu=0.0, ou_sigma=0.0)
    n, m, epochs = 200, 50, 300  # 1.5 s
    lam, w = 2.0, 0.0172  # 20 kHz of small external spikes
    out = {}
    for drive in (False, True):
        params = nrn.table_row(DT, poisson_lam=lam if drive else 0.0, w_ext=w)[None, :]
        st = dict(v=np.full(n, nrn.v_l_mv), j=np.zeros((4, n)), i_bg=np.zeros(n), ref=np.zeros(n, np.int32),
                  gain=np.ones((len(LIF_GAINS), n)))
        gids, pop = np.arange(n, dtype=np.int64), np.zeros(n, np.int32)
        n_spikes, j_mean = 0, []
        for e in range(epochs):
            n_spikes += len(run_lif(e * m, m, SEED, gids, pop, params, st, np.zeros(n),
                                    np.zeros((m, 2, n), np.float32), n_blocks=3))
            if e >= epochs // 3:
                j_mean.append(st["j"][:2].mean(axis=1))
        out[drive] = n_spikes, np.mean(j_mean, axis=0)
    assert out[False][0] == 0  # no background, no input: silent
    row = nrn.table_row(DT)
    # the traces' mean is the drive's mean input lam w / (1 - decay) ...
    j_expect = lam * w / (1.0 - row[[L["d_ampa"], L["d_nmda"]]])
    np.testing.assert_allclose(out[True][1], j_expect, rtol=0.03)
    # ... and the rate that of a neuron under the mean conductances: t_ref + the climb from reset to threshold
    g_syn = nrn.g_ampa * j_expect[0] + nrn.g_nmda * j_expect[1]
    g = nrn.g_l + g_syn
    v_inf = nrn.g_l * nrn.v_l_mv / g  # both reversal potentials 0 mV
    assert v_inf > nrn.v_th_mv + 5
    period_ms = nrn.t_ref_ms + nrn.c / g * math.log((v_inf - nrn.v_reset_mv) / (v_inf - nrn.v_th_mv))
    rate_expect = 1000.0 / period_ms
    rate = out[True][0] / n / (epochs * m * DT / 1000.0)
    assert 0.75 * rate_expect < rate < 1.3 * rate_expect, (rate, rate_expect)


# ---------------------------------------------------------------- the CUDA kernels' host build

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on this machine")


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    from dtb.kernels.gpu import HostDevice

    return HostDevice(cache_dir=tmp_path_factory.mktemp("cuda"))


def to_fixed(inbuf):
    """float32 input as the delivery kernel accumulates it (weight x 2**32, int64 bits in uint64)."""
    return np.rint(inbuf.astype(np.float64) * 2.0**32).astype(np.int64).view(np.uint64)


def on_fixed_grid(inbuf):
    """float32 input that the fixed-point accumulator holds exactly."""
    return (to_fixed(inbuf).view(np.int64) / 2.0**32).astype(np.float32)


def launch_epoch(device, name, t0, m, n, args):
    """One epoch of a neuron kernel (parity 0, local, no neuron with targets); its spikes (step, lid), sorted."""
    cap = n * m
    counts = np.zeros(4, np.int64)
    pend = np.zeros((2, 3, cap), np.int64)
    rec = np.full((2, cap), -5, np.int64)
    clock = np.array([t0, -5], np.int64)
    queue = (np.int32(1), counts, np.int64(cap), pend, np.full(n, -1, np.int64), np.zeros(1, np.int64),
             np.int64(cap), rec)
    device.launch(name, n, np.int32(0), clock, np.int32(m), np.uint64(SEED), np.int64(n), *args, *queue)
    assert counts[3] == 0 and counts[1] == 0 and clock[1] == t0 + m
    steps, lids = rec[0, : counts[2]], rec[1, : counts[2]]
    order = np.lexsort((lids, steps))
    return list(zip(steps[order].tolist(), lids[order].tolist()))


@needs_nvcc
@pytest.mark.parametrize("n", [1, 37, 300])
def test_cuda_lif_drive_and_stimulus_equal_the_cpu_kernel(device, n):
    m = 17
    gids, pop, params, st, i_stim = lif_setup(n, seed=n)
    cdf = np.ascontiguousarray(cpu.poisson_tables(params[:, L["poisson_lam"]], K))
    mine = copy(st)
    zig = [np.ascontiguousarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
    total = 0
    for e in range(3):
        inbuf = on_fixed_grid(lif_input(e, (m, 2, n)))
        want = run_lif(e * m, m, SEED, gids, pop, params, st, i_stim, inbuf.copy())
        acc = to_fixed(inbuf)
        got = launch_epoch(device, "advance_lif_cond", e * m, m, n,
                           (gids, pop, params, cdf, np.int64(K), mine["v"], mine["j"], mine["i_bg"], mine["ref"],
                            mine["gain"], i_stim, acc, *zig))
        assert not acc.any()  # input consumed
        assert got == want
        assert_states(mine, st, ("v", "j", "i_bg"), rtol=1e-13)
        total += len(want)
    assert total > 0 or n == 1


@needs_nvcc
@pytest.mark.parametrize("n", [1, 37, 300])
def test_cuda_iaf_stimulus_equals_the_cpu_kernel(device, n):
    m = 15
    gids, pop, params, st, i_stim = iaf_setup(n, seed=n)
    cdf = np.ascontiguousarray(cpu.poisson_tables(params[:, IA["poisson_lam"]], K))
    mine = copy(st)
    total = 0
    for e in range(3):
        inbuf = on_fixed_grid(np.random.default_rng(e).normal(20.0, 80.0, (m, 2, n)))
        want = run_iaf(e * m, m, SEED, gids, pop, params, st, i_stim, inbuf.copy())
        acc = to_fixed(inbuf)
        got = launch_epoch(device, "advance_iaf_psc_exp", e * m, m, n,
                           (gids, pop, params, cdf, np.int64(K), mine["v"], mine["i_ex"], mine["i_in"], mine["ref"],
                            i_stim, acc))
        assert not acc.any()
        assert got == want
        assert_states(mine, st, ("v", "i_ex", "i_in"), rtol=1e-13)
        total += len(want)
    assert total > 0 or n == 1
