"""CPU kernels (numba) for one epoch of neuron updates and for spike delivery.

Conventions shared with the CUDA kernels:

- A neuron that crosses threshold during step ``t`` (advancing from ``t dt`` to
  ``(t + 1) dt``) emits a spike *at step t*, recorded at ``(t + 1) dt`` ms.
- A spike of step ``t`` through a synapse of delay ``d`` is added to the target's
  input of step ``t + d``: the synaptic current/trace jumps at the end of that step
  and V feels it from step ``t + d + 1`` on (as in NEST).
- ``inbuf[k, receptor, lid]`` (float32) holds the input of step ``e0 + k`` of the
  current epoch; receptor 0 is excitatory, 1 inhibitory.
- Spikes leave an epoch ordered by (step, lid), which on every rank is (step, gid) order.

Neurons are processed in cache-sized blocks in parallel. Inside a block each step
first draws every neuron's random numbers in a separate loop (which the compiler
vectorises), then updates the neurons; a bit per (neuron, step) marks spikes, and
the epoch's spikes are written out in (step, lid) order at the end.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from dtb.kernels import rng
from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS

MAX_EPOCH_STEPS = 64  # one bit per step in a uint64 mask

# column positions of the per-population parameter tables (compile-time constants for numba)
_IAF_P22 = IAF_COLUMNS.index('p22')
_IAF_P21_EX = IAF_COLUMNS.index('p21_ex')
_IAF_P21_IN = IAF_COLUMNS.index('p21_in')
_IAF_P20 = IAF_COLUMNS.index('p20')
_IAF_P11_EX = IAF_COLUMNS.index('p11_ex')
_IAF_P11_IN = IAF_COLUMNS.index('p11_in')
_IAF_THETA_MV = IAF_COLUMNS.index('theta_mv')
_IAF_V_RESET_MV = IAF_COLUMNS.index('v_reset_mv')
_IAF_I_E_PA = IAF_COLUMNS.index('i_e_pa')
_IAF_REF_STEPS = IAF_COLUMNS.index('ref_steps')
_IAF_POISSON_LAM = IAF_COLUMNS.index('poisson_lam')
_IAF_W_EXT_PA = IAF_COLUMNS.index('w_ext_pa')
_IAF_E_L_MV = IAF_COLUMNS.index('e_l_mv')
_LIF_G_L = LIF_COLUMNS.index('g_l')
_LIF_V_L_MV = LIF_COLUMNS.index('v_l_mv')
_LIF_V_TH_MV = LIF_COLUMNS.index('v_th_mv')
_LIF_V_RESET_MV = LIF_COLUMNS.index('v_reset_mv')
_LIF_REF_STEPS = LIF_COLUMNS.index('ref_steps')
_LIF_I_EXT = LIF_COLUMNS.index('i_ext')
_LIF_G_AMPA = LIF_COLUMNS.index('g_ampa')
_LIF_G_NMDA = LIF_COLUMNS.index('g_nmda')
_LIF_G_GABA_A = LIF_COLUMNS.index('g_gaba_a')
_LIF_G_GABA_B = LIF_COLUMNS.index('g_gaba_b')
_LIF_E_AMPA_MV = LIF_COLUMNS.index('e_ampa_mv')
_LIF_E_NMDA_MV = LIF_COLUMNS.index('e_nmda_mv')
_LIF_E_GABA_A_MV = LIF_COLUMNS.index('e_gaba_a_mv')
_LIF_E_GABA_B_MV = LIF_COLUMNS.index('e_gaba_b_mv')
_LIF_D_AMPA = LIF_COLUMNS.index('d_ampa')
_LIF_D_NMDA = LIF_COLUMNS.index('d_nmda')
_LIF_D_GABA_A = LIF_COLUMNS.index('d_gaba_a')
_LIF_D_GABA_B = LIF_COLUMNS.index('d_gaba_b')
_LIF_OU_MU = LIF_COLUMNS.index('ou_mu')
_LIF_OU_DECAY = LIF_COLUMNS.index('ou_decay')
_LIF_OU_NOISE = LIF_COLUMNS.index('ou_noise')
_LIF_DT_OVER_C = LIF_COLUMNS.index('dt_over_c')
_LIF_POISSON_LAM = LIF_COLUMNS.index('poisson_lam')
_LIF_W_EXT = LIF_COLUMNS.index('w_ext')


@nb.njit(cache=True)
def _compact(t0, m, n, mask, out_lid, out_step):
    """Write the fired (neuron, step) pairs in (step, lid) order; return the count.

    Serial: one pass over a bit mask per step costs far less than the update.
    """
    pos = 0
    for s in range(m):
        bit = np.uint64(1) << np.uint64(s)
        for i in range(n):
            if mask[i] & bit:
                out_lid[pos] = i
                out_step[pos] = t0 + s
                pos += 1
    return pos


@nb.njit(cache=True)
def poisson_tables(lam, size):
    """Cumulative Poisson(lam[p]) probabilities for inversion, shape (len(lam), size), float64.

    Row p holds P(X <= k) for k < size; draws beyond the table fall back to `rng.poisson`.
    """
    out = np.ones((lam.shape[0], size))
    for p in range(lam.shape[0]):
        if lam[p] <= 0.0:
            continue
        pk = math.exp(-lam[p])
        acc = pk
        for k in range(size):
            out[p, k] = acc
            pk *= lam[p] / (k + 1)
            acc += pk
    return out


@nb.njit(inline="always", cache=True)
def _poisson_from_table(cdf, lam, u):
    k = 0
    n = cdf.shape[0]
    while k < n - 1 and u > cdf[k]:
        k += 1
    if k == n - 1 and u > cdf[k]:
        return rng.poisson(lam, u)
    return k


BLOCK_NEURONS = 4096  # a block's state stays in the core's cache for the whole epoch


def blocks(n: int, n_blocks: int) -> np.ndarray:
    """[lo, hi) neuron ranges of ``n_blocks`` near-equal blocks, shape (n_blocks, 2), int64."""
    b = (np.arange(n_blocks + 1, dtype=np.int64) * n) // n_blocks
    return np.stack([b[:-1], b[1:]], axis=1)


@nb.njit(parallel=True, cache=True)
def advance_iaf_psc_exp(t0, m, seed, gids, pop, params, poisson_cdf, v, i_ex, i_in, ref, i_stim, inbuf, lo_hi,
                        mask, scratch, out_lid, out_step):
    """Advance ``iaf_psc_exp`` neurons by ``m`` steps from step ``t0`` (exact integration).

    Parameters
    ----------
    t0, m : int
        First step and number of steps (m <= 64).
    seed : int
    gids : ndarray, shape (N,), int64
    pop : ndarray, shape (N,), int32
    params : ndarray, shape (n_pop, len(IAF_COLUMNS)), float64
    poisson_cdf : ndarray, shape (n_pop, K), float64
        `poisson_tables` of the populations' external drive.
    v : ndarray, shape (N,), float64
        Membrane potential relative to E_L (mV); updated in place.
    i_ex, i_in : ndarray, shape (N,), float64
        Synaptic currents (pA); updated in place.
    ref : ndarray, shape (N,), int32
        Refractory steps left; updated in place.
    i_stim : ndarray, shape (N,), float64
        Stimulus current of each neuron (pA), added to the population's constant
        current ``i_e_pa`` over the whole epoch; zeros leave the results bitwise unchanged.
    inbuf : ndarray, shape (>= m, 2, N), float32
        Synaptic input per step (pA).
    lo_hi : ndarray, shape (n_blocks, 2), int64
    mask : ndarray, shape (N,), uint64
        Scratch: fired steps of each neuron.
    scratch : ndarray, shape (N,), float64
        Scratch: this step's uniforms.
    out_lid, out_step : ndarray, int64
        Spikes out, in (step, lid) order; capacity ``N * ceil(m / (ref_steps + 1))``.

    Returns
    -------
    int
        Number of spikes.
    """
    k0, k1 = rng.key(seed, rng.POISSON, 0)
    drive = False
    for p in range(params.shape[0]):
        drive = drive or params[p, _IAF_POISSON_LAM] > 0.0
    for b in nb.prange(lo_hi.shape[0]):
        lo = lo_hi[b, 0]
        hi = lo_hi[b, 1]
        for n in range(lo, hi):
            mask[n] = 0
        for s in range(m):
            if drive:
                # a separate, vectorisable pass draws this step's uniforms
                for n in range(lo, hi):
                    w0, w1, _, _ = rng.draw(k0, k1, gids[n], t0 + s)
                    scratch[n] = rng.u01_53(w0, w1)
            for n in range(lo, hi):
                pr = params[pop[n]]
                vn = v[n]
                r = ref[n]
                if r == 0:
                    vn = (pr[_IAF_P22] * vn + pr[_IAF_P21_EX] * i_ex[n] + pr[_IAF_P21_IN] * i_in[n]
                          + pr[_IAF_P20] * (pr[_IAF_I_E_PA] + i_stim[n]))
                else:
                    r -= 1
                x_ex = np.float64(inbuf[s, 0, n])
                if pr[_IAF_POISSON_LAM] > 0.0:
                    k = _poisson_from_table(poisson_cdf[pop[n]], pr[_IAF_POISSON_LAM], scratch[n])
                    x_ex += k * pr[_IAF_W_EXT_PA]
                i_ex[n] = i_ex[n] * pr[_IAF_P11_EX] + x_ex
                i_in[n] = i_in[n] * pr[_IAF_P11_IN] + np.float64(inbuf[s, 1, n])
                if vn >= pr[_IAF_THETA_MV]:
                    r = np.int32(pr[_IAF_REF_STEPS])
                    vn = pr[_IAF_V_RESET_MV]
                    mask[n] |= np.uint64(1) << np.uint64(s)
                v[n] = vn
                ref[n] = r
    return _compact(t0, m, v.shape[0], mask, out_lid, out_step)


@nb.njit(parallel=True, cache=True)
def advance_lif_cond(t0, m, seed, gids, pop, params, poisson_cdf, v, j, i_bg, ref, gain, i_stim, inbuf, lo_hi, mask,
                     scratch, out_lid, out_step):
    """Advance DTB ``lif_cond`` neurons by ``m`` steps from step ``t0``.

    V takes an exponential-Euler step (exact for the conductances held over the
    step); the receptor traces decay exactly and jump by the arriving weights; the
    OU background current takes its exact update with one normal per (gid, step).
    A population with ``poisson_lam > 0`` also gets an external Poisson drive: each
    step, k ~ Poisson(poisson_lam) per neuron (one uniform per (gid, step), as in
    `advance_iaf_psc_exp`), adding ``k * w_ext`` to the excitatory input.

    Parameters
    ----------
    t0, m : int
        First step and number of steps (m <= 64).
    seed : int
    gids : ndarray, shape (N,), int64
    pop : ndarray, shape (N,), int32
    params : ndarray, shape (n_pop, len(LIF_COLUMNS)), float64
    poisson_cdf : ndarray, shape (n_pop, K), float64
        `poisson_tables` of the populations' ``poisson_lam`` (external drive).
    v : ndarray, shape (N,), float64
        Membrane potential (mV); updated in place.
    j : ndarray, shape (4, N), float64
        Receptor traces AMPA, NMDA, GABA-A, GABA-B (1); updated in place.
    i_bg : ndarray, shape (N,), float64
        OU background current (mV/ms); updated in place.
    ref : ndarray, shape (N,), int32
        Refractory steps left; updated in place.
    gain : ndarray, shape (len(LIF_GAINS), N), float64
        Per-neuron multipliers of the population's AMPA, NMDA, GABA-A and GABA-B
        conductances and of the OU mean (region hyperparameter x neuron-level spread).
    i_stim : ndarray, shape (N,), float64
        Stimulus current of each neuron (mV/ms, as ``i_ext``: C = 1), held over the
        epoch; zeros leave the results bitwise unchanged.
    inbuf : ndarray, shape (>= m, 2, N), float32
        Synaptic input per step (weights, the units of the traces).
    lo_hi : ndarray, shape (n_blocks, 2), int64
    mask : ndarray, shape (N,), uint64
        Scratch: fired steps of each neuron.
    scratch : ndarray, shape (4, N), uint32
        Scratch: this step's random words, rows 0-1 the OU noise's, rows 2-3 the
        Poisson drive's (written only when some population has a drive).
    out_lid, out_step : ndarray, int64
        Spikes out, in (step, lid) order; capacity ``N * ceil(m / (ref_steps + 1))``.

    Returns
    -------
    int
        Number of spikes.
    """
    k0, k1 = rng.key(seed, rng.NOISE, 0)
    p0, p1 = rng.key(seed, rng.POISSON, 0)
    # with no drive anywhere no Poisson words are drawn: the results are bitwise those without the feature
    drive = False
    for p in range(params.shape[0]):
        drive = drive or params[p, _LIF_POISSON_LAM] > 0.0
    if drive and scratch.shape[0] < 4:
        raise ValueError("advance_lif_cond: a Poisson drive needs scratch of shape (4, N)")
    for b in nb.prange(lo_hi.shape[0]):
        lo = lo_hi[b, 0]
        hi = lo_hi[b, 1]
        for n in range(lo, hi):
            mask[n] = 0
        for s in range(m):
            t = t0 + s
            # Philox alone vectorises; the ziggurat's rare slow path would stop that
            for n in range(lo, hi):
                w0, w1, _, _ = rng.draw(k0, k1, gids[n], t)
                scratch[0, n] = w0
                scratch[1, n] = w1
            if drive:
                # the drive's uniform per (gid, step), from the same stream as iaf_psc_exp's drive, in its own
                # vectorisable pass; neurons of populations without a drive ignore theirs
                for n in range(lo, hi):
                    w0, w1, _, _ = rng.draw(p0, p1, gids[n], t)
                    scratch[2, n] = w0
                    scratch[3, n] = w1
            for n in range(lo, hi):
                z = rng.normal(seed, rng.NOISE, gids[n], t, np.uint64(scratch[0, n]), np.uint64(scratch[1, n]))
                pr = params[pop[n]]
                vn = v[n]
                ja = j[0, n]
                jn = j[1, n]
                jga = j[2, n]
                jgb = j[3, n]
                r = ref[n]
                if r == 0:
                    # conductance of each receptor (same operation order as the plain formula)
                    ga = pr[_LIF_G_AMPA] * gain[0, n] * ja
                    gn = pr[_LIF_G_NMDA] * gain[1, n] * jn
                    gga = pr[_LIF_G_GABA_A] * gain[2, n] * jga
                    ggb = pr[_LIF_G_GABA_B] * gain[3, n] * jgb
                    gsum = pr[_LIF_G_L] + ga + gn + gga + ggb
                    veq = (pr[_LIF_G_L] * pr[_LIF_V_L_MV] + ga * pr[_LIF_E_AMPA_MV] + gn * pr[_LIF_E_NMDA_MV]
                           + gga * pr[_LIF_E_GABA_A_MV] + ggb * pr[_LIF_E_GABA_B_MV] + pr[_LIF_I_EXT] + i_stim[n]
                           + i_bg[n]) / gsum
                    vn = veq + (vn - veq) * math.exp(-gsum * pr[_LIF_DT_OVER_C])
                else:
                    r -= 1
                mu = pr[_LIF_OU_MU] * gain[4, n]
                i_bg[n] = mu + (i_bg[n] - mu) * pr[_LIF_OU_DECAY] + pr[_LIF_OU_NOISE] * z
                x_e = np.float64(inbuf[s, 0, n])
                x_i = np.float64(inbuf[s, 1, n])
                if pr[_LIF_POISSON_LAM] > 0.0:
                    # external spikes arrive like synaptic excitatory input: both AMPA and NMDA jump
                    u = rng.u01_53(np.uint64(scratch[2, n]), np.uint64(scratch[3, n]))
                    k = _poisson_from_table(poisson_cdf[pop[n]], pr[_LIF_POISSON_LAM], u)
                    x_e += k * pr[_LIF_W_EXT]
                j[0, n] = ja * pr[_LIF_D_AMPA] + x_e
                j[1, n] = jn * pr[_LIF_D_NMDA] + x_e
                j[2, n] = jga * pr[_LIF_D_GABA_A] + x_i
                j[3, n] = jgb * pr[_LIF_D_GABA_B] + x_i
                if vn >= pr[_LIF_V_TH_MV]:
                    r = np.int32(pr[_LIF_REF_STEPS])
                    vn = pr[_LIF_V_RESET_MV]
                    mask[n] |= np.uint64(1) << np.uint64(s)
                v[n] = vn
                ref[n] = r
    return _compact(t0, m, v.shape[0], mask, out_lid, out_step)


@nb.njit(cache=True)
def deliver(e0, m, n_pend, pend_slot, pend_step, pend_row, slot_row_ptr, row_ptr, row_delay, post, post_bits,
            weight, weight_table, slot_receptor, inbuf):
    """Deliver every pending spike's rows that arrive inside the epoch ``[e0, e0 + m)``.

    Pending spikes are kept in arrival order (epoch received, then step, then source
    gid), which is the same on every partition, and each spike's rows in increasing
    delay, so every target's input sums in the same order on any number of ranks.
    Spikes with rows left stay pending (compacted in place, order kept).

    Parameters
    ----------
    e0, m : int
        Epoch start step and length.
    n_pend : int
        Pending spikes: ``pend_slot`` (slot), ``pend_step`` (emission step),
        ``pend_row`` (next row to deliver), arrays of int64.
    post, post_bits, weight, weight_table : ndarray, int, ndarray, ndarray
        Synapse words (uint32: target id in the low ``post_bits`` bits, weight code above) and
        the float32 table the codes index; or, with an empty table, target ids and float32
        weights (`dtb.network.LocalNetwork`).
    inbuf : ndarray, shape (>= m, 2, N), float32
        Input of the epoch's steps; added to.

    Returns
    -------
    int
        Pending spikes left.
    """
    end = e0 + m
    target_mask = (np.int64(1) << post_bits) - 1
    k = 0
    for p in range(n_pend):
        s = pend_slot[p]
        t = pend_step[p]
        r = pend_row[p]
        r_end = slot_row_ptr[s + 1]
        rc = slot_receptor[s]
        while r < r_end:
            arrival = t + np.int64(row_delay[r])
            if arrival >= end:
                break
            off = arrival - e0
            if weight_table.shape[0] == 0:
                for q in range(row_ptr[r], row_ptr[r + 1]):
                    inbuf[off, rc, post[q]] += weight[q]
            else:
                for q in range(row_ptr[r], row_ptr[r + 1]):
                    x = np.int64(post[q])
                    inbuf[off, rc, x & target_mask] += weight_table[x >> post_bits]
            r += 1
        if r < r_end:
            pend_slot[k] = s
            pend_step[k] = t
            pend_row[k] = r
            k += 1
    return k


@nb.njit(cache=True)
def enqueue(steps, gids, slot_gids, slot_row_ptr, n_pend, pend_slot, pend_step, pend_row):
    """Append received spikes that have local targets to the pending queue.

    Parameters
    ----------
    steps, gids : ndarray, int64
        Received spikes in (step, gid) order.
    slot_gids : ndarray, shape (S,), int64
        Sorted source gids with local targets.

    Returns
    -------
    int
        New number of pending spikes (the arrays must have room for all of ``gids``).
    """
    k = n_pend
    n_slots = slot_gids.shape[0]
    for i in range(gids.shape[0]):
        s = np.searchsorted(slot_gids, gids[i])
        if s < n_slots and slot_gids[s] == gids[i]:
            pend_slot[k] = s
            pend_step[k] = steps[i]
            pend_row[k] = slot_row_ptr[s]
            k += 1
    return k


def kernels_to_compile() -> int:
    """How many of the kernels every run calls have no machine code for this source in numba's on-disk cache (a
    first run, or the first after an upgrade): they, and the others, compile when first called. 0 when it
    cannot be told."""
    from dtb.kernels import connect

    n = 0
    for fn in (deliver, enqueue, connect.fill_rows, connect.unit_scatter, connect.sort_slots_by_delay):
        try:
            # numba's index of compiled overloads: empty when missing or written for other source
            n += not fn._cache._cache_file._load_index()
        except Exception:  # numba's cache internals changed: no notice rather than a failure
            return 0
    return n
