"""CPU kernels that draw synapses on the post-synaptic side.

Every synapse ``j`` of target neuron ``g`` in projection ``p`` is a pure function
of (seed, p, g, j): its source from purpose SOURCE, its weight from WEIGHT, its
delay from DELAY. The number of synapses of each target is the projection's
in-degree, or, for a fixed total number, the target's share of a multinomial split
drawn down a binary tree over the target population whose nodes are keyed by
their index range. So any subset of targets is generated identically in one piece
or in several, on any rank.

Work is cut into *units*: a run of consecutive targets of one projection with a
bounded number of synapses. Units are independent, so they run in parallel.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from dtb.kernels import rng


@nb.njit(cache=True)
def split_counts(seed, proj_id, total, n_targets, lo_idx, hi_idx, out):
    """Synapse counts of targets ``lo_idx .. hi_idx - 1`` under a fixed total number.

    The ``total`` synapses fall on ``n_targets`` targets uniformly (multinomial); the
    count of each target is found by splitting the total binomially down a binary
    tree over target indices. Only branches that overlap the asked range are walked.

    Parameters
    ----------
    seed, proj_id : int
    total : int
        Synapses of the projection.
    n_targets : int
        Size of the target population.
    lo_idx, hi_idx : int
        Asked range of target indices (relative to the population).
    out : ndarray, shape (hi_idx - lo_idx,), int64
        Filled with the counts.
    """
    k0, k1 = rng.key(seed, rng.SPLIT, proj_id)
    stack = np.empty((128, 3), dtype=np.int64)
    stack[0, 0] = 0
    stack[0, 1] = n_targets
    stack[0, 2] = total
    top = 1
    while top > 0:
        top -= 1
        lo = stack[top, 0]
        hi = stack[top, 1]
        n = stack[top, 2]
        if hi <= lo_idx or lo >= hi_idx:
            continue
        if hi - lo == 1:
            out[lo - lo_idx] = n
            continue
        mid = (lo + hi) // 2
        if n == 0:
            nl = 0
        else:
            w0, w1, _, _ = rng.draw(k0, k1, lo, hi)
            nl = rng.binomial(n, (mid - lo) / (hi - lo), rng.u01_53(w0, w1))
        stack[top, 0] = mid
        stack[top, 1] = hi
        stack[top, 2] = n - nl
        stack[top + 1, 0] = lo
        stack[top + 1, 1] = mid
        stack[top + 1, 2] = nl
        top += 2


@nb.njit(inline="always", cache=True)
def _source(k0, k1, g, j, s0, s1, src_off, src_size, src_cum):
    """Source gid and source-population slot (index into the flat source arrays) of synapse j of g."""
    w0, w1, w2, _ = rng.draw(k0, k1, g, j)
    s = s0
    if s1 - s0 > 1:
        # first source whose cumulative probability reaches u (binary search)
        u = rng.u01(w0)
        hi = s1 - 1
        while s < hi:
            mid = (s + hi) // 2
            if src_cum[mid] < u:
                s = mid + 1
            else:
                hi = mid
    n = src_size[s]
    i = np.int64(math.floor(rng.u01_53(w1, w2) * n))
    if i >= n:
        i = n - 1
    return src_off[s] + i, s


@nb.njit(inline="always", cache=True)
def _normal_redrawn(k0, k1, g, j, z, mean, sd, lo, hi):
    """mean + sd * z if it lies in [lo, hi], else redrawn from (g, j, attempt >= 1) until it does."""
    x = mean + sd * z
    attempt = np.uint64(1)
    while not (lo <= x <= hi):
        w0, w1, w2, w3 = rng.draw(k0, k1, g, np.uint64(j) | (attempt << np.uint64(32)))
        x = mean + sd * rng.normal_pair(w0, w1, w2, w3)[0]
        attempt += np.uint64(1)
    return x


@nb.njit(parallel=True, cache=True)
def unit_sources(seed, unit_proj, unit_g0, unit_tptr, tgt_counts, unit_sptr, proj_sptr, src_off, src_size, src_cum,
                 out_src):
    """Pass 1: the source gid of every synapse of a batch of units.

    Parameters
    ----------
    unit_proj, unit_g0 : ndarray, shape (U,), int64
        Projection and first target gid of each unit.
    unit_tptr : ndarray, shape (U + 1,), int64
        Unit u's targets' counts are ``tgt_counts[unit_tptr[u]:unit_tptr[u + 1]]``.
    unit_sptr : ndarray, shape (U + 1,), int64
        Unit u's synapses go to ``out_src[unit_sptr[u] - unit_sptr[0] : ...]``.
    proj_sptr : ndarray, shape (P + 1,), int64
        Projection p's source populations are entries ``proj_sptr[p]:proj_sptr[p + 1]`` of
        ``src_off`` (first gid), ``src_size`` and ``src_cum`` (cumulative probability).
    out_src : ndarray, int64
    """
    base = unit_sptr[0]
    for u in nb.prange(unit_proj.shape[0]):
        p = unit_proj[u]
        k0, k1 = rng.key(seed, rng.SOURCE, p)
        pos = unit_sptr[u] - base
        for t in range(unit_tptr[u], unit_tptr[u + 1]):
            g = unit_g0[u] + (t - unit_tptr[u])
            for j in range(tgt_counts[t]):
                out_src[pos], _ = _source(k0, k1, g, j, proj_sptr[p], proj_sptr[p + 1], src_off, src_size, src_cum)
                pos += 1


#: a unit whose sources span at most this many gids uses a dense table instead of sorting/searching
DENSE_SPAN = 1 << 24


@nb.njit(parallel=True, cache=True)
def unique_counts(values, ptr, span_lo, span_hi, counts):
    """Distinct values of each segment ``values[ptr[i]:ptr[i+1]]`` and their counts, in place.

    Segment i's sorted distinct values are written over its first entries, their counts
    into ``counts`` at the same places. Values of segment i lie in
    ``[span_lo[i], span_hi[i])``; narrow spans are counted in a dense table, wide
    ones sorted.

    Returns
    -------
    ndarray, shape (n_seg,), int64
        Number of distinct values of each segment.
    """
    n_seg = ptr.shape[0] - 1
    sizes = np.zeros(n_seg, dtype=np.int64)
    for i in nb.prange(n_seg):
        a = ptr[i]
        b = ptr[i + 1]
        span = span_hi[i] - span_lo[i]
        k = 0
        if span <= DENSE_SPAN and span <= 8 * (b - a):
            table = np.zeros(span, dtype=np.int64)
            for q in range(a, b):
                table[values[q] - span_lo[i]] += 1
            for x in range(span):
                if table[x]:
                    values[a + k] = span_lo[i] + x
                    counts[a + k] = table[x]
                    k += 1
        else:
            values[a:b] = np.sort(values[a:b])
            for q in range(a, b):
                v = values[q]
                if k == 0 or values[a + k - 1] != v:
                    values[a + k] = v
                    counts[a + k] = 0
                    k += 1
                counts[a + k - 1] += 1
        sizes[i] = k
    return sizes


@nb.njit(cache=True)
def place_pairs(u_slot, u_cnt, slot_ptr, u_pos):
    """First CSR position of each (unit, source) pair, pairs filling their slot in order."""
    fill = slot_ptr[:-1].copy()
    for k in range(u_slot.shape[0]):
        u_pos[k] = fill[u_slot[k]]
        fill[u_slot[k]] += u_cnt[k]


@nb.njit(parallel=True, cache=True)
def unit_scatter(seed, dt_ms, unit_proj, unit_g0, unit_tptr, tgt_counts, unit_lid0, unit_uptr, u_src, u_pos,
                 proj_sptr, src_off, src_size, src_cum, src_lo, src_hi, src_delay_steps, proj_w_mean, proj_w_sd,
                 proj_d_mean_ms, proj_d_sd_ms, out_post, out_weight, out_delay):
    """Pass 2: draw every synapse of a batch of units and write it at its final place.

    ``u_src[unit_uptr[u]:unit_uptr[u+1]]`` are unit u's sorted distinct sources and
    ``u_pos`` (same layout) the next free position of each in the output arrays;
    ``u_pos`` is advanced in place. Units own disjoint positions, so they run in parallel.
    Projection p's sources lie in gids ``[src_lo[p], src_hi[p])``.

    Outputs: ``out_post`` uint32 local target id, ``out_weight`` float32,
    ``out_delay`` uint16 delay in steps.
    """
    for u in nb.prange(unit_proj.shape[0]):
        p = unit_proj[u]
        ks0, ks1 = rng.key(seed, rng.SOURCE, p)
        kw0, kw1 = rng.key(seed, rng.WEIGHT, p)
        kd0, kd1 = rng.key(seed, rng.DELAY, p)
        w_mean = proj_w_mean[p]
        w_sd = proj_w_sd[p]
        d_sd = proj_d_sd_ms[p]
        w_lo = 0.0 if w_mean >= 0 else -np.inf
        w_hi = np.inf if w_mean >= 0 else 0.0
        srcs = u_src[unit_uptr[u]:unit_uptr[u + 1]]
        lo = src_lo[p]
        span = src_hi[p] - lo
        # only the sources' entries are written, so a wide table costs only its touched pages
        dense = span <= DENSE_SPAN
        index = np.empty(span if dense else 0, dtype=np.int32)
        if dense:
            for k in range(srcs.shape[0]):
                index[srcs[k] - lo] = k
        for t in range(unit_tptr[u], unit_tptr[u + 1]):
            g = unit_g0[u] + (t - unit_tptr[u])
            lid = unit_lid0[u] + (t - unit_tptr[u])
            for j in range(tgt_counts[t]):
                src, s = _source(ks0, ks1, g, j, proj_sptr[p], proj_sptr[p + 1], src_off, src_size, src_cum)
                k = unit_uptr[u] + (index[src - lo] if dense else np.searchsorted(srcs, src))
                pos = u_pos[k]
                u_pos[k] = pos + 1
                out_post[pos] = lid
                if w_sd > 0 or d_sd > 0:
                    # one draw gives the weight's and the delay's normal; rare redraws use their own keys
                    w0, w1, w2, w3 = rng.draw(kw0, kw1, g, j)
                    zw, zd = rng.normal_pair(w0, w1, w2, w3)
                if w_sd > 0:
                    out_weight[pos] = _normal_redrawn(kw0, kw1, g, j, zw, w_mean, w_sd, w_lo, w_hi)
                else:
                    out_weight[pos] = w_mean
                if d_sd > 0:
                    # truncated to [dt, mean + 8 sd] (the upper cut has probability 6e-16) so that
                    # every delay fits the bound the storage type was chosen for
                    d = _normal_redrawn(kd0, kd1, g, j, zd, proj_d_mean_ms[p], d_sd, dt_ms,
                                        proj_d_mean_ms[p] + 8.0 * d_sd)
                    out_delay[pos] = max(1, int(np.rint(d / dt_ms)))
                else:
                    out_delay[pos] = src_delay_steps[s]


@nb.njit(parallel=True, cache=True)
def sort_slots_by_delay(slot_ptr, post, weight, delay, row_count, n_blocks):
    """Stable counting sort of each slot's synapses by delay, in place; count distinct delays.

    Slots are processed in ``n_blocks`` parallel blocks, each with one scratch buffer
    sized for its largest slot: many small per-slot allocations on worker threads
    would leave their memory stranded in the allocator's per-thread arenas.

    Parameters
    ----------
    slot_ptr : ndarray, shape (S + 1,), int64
    post, weight, delay : ndarray, shape (n_syn,)
    row_count : ndarray, shape (S,), int64
        Out: number of distinct delays of each slot.
    n_blocks : int
    """
    n_slots = slot_ptr.shape[0] - 1
    for blk in nb.prange(n_blocks):
        s0 = blk * n_slots // n_blocks
        s1 = (blk + 1) * n_slots // n_blocks
        longest = 0
        span = 1
        for s in range(s0, s1):
            a = slot_ptr[s]
            b = slot_ptr[s + 1]
            longest = max(longest, b - a)
            if b > a:
                d_lo = delay[a]
                d_hi = delay[a]
                for q in range(a, b):
                    d_lo = min(d_lo, delay[q])
                    d_hi = max(d_hi, delay[q])
                span = max(span, np.int64(d_hi) - np.int64(d_lo) + 2)
        p_tmp = np.empty(longest, dtype=post.dtype)
        w_tmp = np.empty(longest, dtype=weight.dtype)
        d_tmp = np.empty(longest, dtype=delay.dtype)
        hist = np.empty(span, dtype=np.int64)
        for s in range(s0, s1):
            a = slot_ptr[s]
            b = slot_ptr[s + 1]
            if b == a:
                row_count[s] = 0
                continue
            d_lo = delay[a]
            d_hi = delay[a]
            for q in range(a, b):
                d_lo = min(d_lo, delay[q])
                d_hi = max(d_hi, delay[q])
            width = np.int64(d_hi) - np.int64(d_lo) + 2
            hist[:width] = 0
            for q in range(a, b):
                hist[np.int64(delay[q]) - np.int64(d_lo) + 1] += 1
            n_rows = 0
            for x in range(1, width):
                if hist[x]:
                    n_rows += 1
                hist[x] += hist[x - 1]
            row_count[s] = n_rows
            if n_rows == 1:
                continue
            n = b - a
            p_tmp[:n] = post[a:b]
            w_tmp[:n] = weight[a:b]
            d_tmp[:n] = delay[a:b]
            for q in range(n):
                x = np.int64(d_tmp[q]) - np.int64(d_lo)
                dst = a + hist[x]
                hist[x] += 1
                post[dst] = p_tmp[q]
                weight[dst] = w_tmp[q]
                delay[dst] = d_tmp[q]


@nb.njit(parallel=True, cache=True)
def fill_rows(slot_ptr, delay, slot_row_ptr, row_ptr, row_delay):
    """Row boundaries (one row per distinct delay of a slot) from delay-sorted synapses."""
    for s in nb.prange(slot_ptr.shape[0] - 1):
        r = slot_row_ptr[s]
        for q in range(slot_ptr[s], slot_ptr[s + 1]):
            if q == slot_ptr[s] or delay[q] != delay[q - 1]:
                row_ptr[r] = q
                row_delay[r] = delay[q]
                r += 1


@nb.njit(parallel=True, cache=True)
def pack_weights(post, weight, post_bits, lo, inv_step, max_code):
    """Put each synapse's weight code above its target id: ``post[i] |= code << post_bits``.

    code = round((weight[i] - lo) * inv_step), clipped to [0, max_code]: the nearest point of
    an evenly spaced table starting at ``lo``, or (lo 0, inv_step 1) a table index itself.

    Parameters
    ----------
    post : ndarray, shape (n_syn,), uint32
        Target ids below ``2**post_bits``; updated in place.
    weight : ndarray, shape (n_syn,), float32 or uint16
    post_bits : int
    lo, inv_step : float
    max_code : int
        ``2**(32 - post_bits) - 1`` or less.
    """
    for i in nb.prange(post.shape[0]):
        c = min(max(np.rint((np.float64(weight[i]) - lo) * inv_step), 0.0), np.float64(max_code))
        post[i] = post[i] | np.uint32(np.int64(c) << post_bits)
