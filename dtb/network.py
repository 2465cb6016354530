"""build_local: the part of a network one rank owns, built on that rank alone.

Storage is CSR over *presynaptic slots*: each distinct source gid with at least
one target here is a slot; a slot's synapses are grouped into *rows*, one per
distinct delay, so that a spike's deliveries can be scheduled row by row. A
synapse is one uint32 word: the local target id in its low ``post_bits`` bits and
a code of its weight in the others, indexing a float32 table (4 bytes). The
table holds the distinct weights when every projection's is constant (the whole
brain), or a fine grid of weights otherwise (PD14; `Recipe.weight_table` says when
a grid is fine enough). ``post_bits`` follows from the recipe's neuron count, not
the rank's, so every partition codes every weight alike. Where weights cannot be
coded (or ``compact_weights`` is off) a float32 weight array comes beside the
target ids: 8 bytes. The delay lives on the row (uint16) and the receptor on the
slot (uint8), since every synapse of a source uses the receptors of its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse

from dtb.context import Context
from dtb.errors import ConfigError
from dtb.kernels import connect
from dtb.model.recipe import Recipe
from dtb.partition import Partition

#: synapses per work unit (parallel grain) and per batch (bounds the temporary memory)
UNIT_SYNAPSES = 1 << 18
BATCH_SYNAPSES = 1 << 22
MAX_DELAY_STEPS = np.iinfo(np.uint16).max
#: largest weight table (2**16 float32: 256 KiB, which a GPU's L2 cache holds)
MAX_CODE_BITS = 16


@dataclass
class LocalNetwork:
    """One rank's neurons and their incoming synapses.

    Attributes
    ----------
    recipe : Recipe
    gids : ndarray, shape (n_local,), int64
        Gids of the local neurons, increasing; local id (lid) = index here.
    pop : ndarray, shape (n_local,), int32
        Population of each local neuron.
    slot_gids : ndarray, shape (S,), int64
        Source gid of each presynaptic slot, increasing.
    slot_receptor : ndarray, shape (S,), uint8
        0: excitatory receptors, 1: inhibitory.
    slot_row_ptr : ndarray, shape (S + 1,), int64
        Slot s owns rows ``slot_row_ptr[s]:slot_row_ptr[s + 1]``, in increasing delay.
    row_ptr : ndarray, shape (n_rows + 1,), int64
        Row r owns synapses ``row_ptr[r]:row_ptr[r + 1]``.
    row_delay : ndarray, shape (n_rows,), uint16
        Delay of every synapse of the row (steps).
    post : ndarray, shape (n_syn,), uint32
        Each synapse's word: local id of its target in the low ``post_bits`` bits, the
        code of its weight (an index into ``weight_table``) above them.
    post_bits : int
        32 when weights are stored in ``weight`` (nothing above the target id).
    weight : ndarray, shape (n_syn,) or (0,), float32
        Weights (pA for iaf_psc_exp, trace jump for lif_cond) when they are not coded.
    weight_table : ndarray, shape (n_weights,) or (0,), float32
        The weights the codes stand for; empty when ``weight`` holds them.
    synapse_counts : scipy.sparse.csr_array, shape (n_pop, n_pop), int64
        Local synapses by [target population, source population], on the pattern of
        `Recipe.expected_synapses` (the same on every rank, so ranks sum its ``data``).
    """

    recipe: Recipe
    gids: np.ndarray
    pop: np.ndarray
    slot_gids: np.ndarray
    slot_receptor: np.ndarray
    slot_row_ptr: np.ndarray
    row_ptr: np.ndarray
    row_delay: np.ndarray
    post: np.ndarray
    post_bits: int
    weight: np.ndarray
    weight_table: np.ndarray
    synapse_counts: scipy.sparse.csr_array

    @property
    def n_local(self) -> int:
        return int(self.gids.shape[0])

    @property
    def n_synapses(self) -> int:
        return int(self.post.shape[0])

    @property
    def max_delay_steps(self) -> int:
        return int(self.row_delay.max()) if self.row_delay.size else 1

    @property
    def synapse_bytes(self) -> int:
        """Bytes of all connectivity storage (synapses, rows, slots)."""
        arrays = (self.slot_gids, self.slot_receptor, self.slot_row_ptr, self.row_ptr, self.row_delay,
                  self.post, self.weight, self.weight_table)
        return int(sum(a.nbytes for a in arrays))

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every local synapse as (source gid, target gid, weight, delay steps), in storage order.

        Returns
        -------
        src : ndarray, shape (n_syn,), int64
        tgt : ndarray, shape (n_syn,), int64
        weight : ndarray, shape (n_syn,), float32
        delay : ndarray, shape (n_syn,), uint16
        """
        rows_per_slot = np.diff(self.slot_row_ptr)
        syn_per_row = np.diff(self.row_ptr)
        src = np.repeat(np.repeat(self.slot_gids, rows_per_slot), syn_per_row)
        delay = np.repeat(self.row_delay, syn_per_row)
        return src, self.gids[self.targets()], self.weights(), delay

    def slot_of(self, gids: np.ndarray) -> np.ndarray:
        """Slot of each source gid, -1 where it has no target here; shape like ``gids``, int64."""
        s = np.searchsorted(self.slot_gids, gids)
        found = s < len(self.slot_gids)
        found[found] = self.slot_gids[s[found]] == gids[found]
        return np.where(found, s, -1).astype(np.int64)

    def targets(self) -> np.ndarray:
        """Local id of each synapse's target, shape (n_syn,), uint32."""
        return self.post & np.uint32((1 << self.post_bits) - 1)

    def weights(self) -> np.ndarray:
        """Each synapse's weight, shape (n_syn,), float32."""
        return self.weight_table[self.post >> np.uint32(self.post_bits)] if self.weight_table.size else self.weight

    @property
    def bytes_per_synapse(self) -> float:
        """Connectivity bytes per stored synapse, row and slot overhead included."""
        return self.synapse_bytes / max(self.n_synapses, 1)


def target_bits(recipe: Recipe) -> int:
    """Bits of a synapse word that hold its target (enough for any neuron of the recipe, so that the
    weight code, in the other bits, is the same on every partition)."""
    return max(1, (recipe.n_neurons - 1).bit_length())


def coded_weights(recipe: Recipe, compact_weights: bool = True) -> bool:
    """Whether `build_local` stores ``recipe``'s weights as codes in the synapse word (4 bytes)."""
    return compact_weights and recipe.weight_table(code_bits(recipe)) is not None


def code_bits(recipe: Recipe) -> int:
    """Bits of a weight code: the word's bits above the target, at most `MAX_CODE_BITS`."""
    return min(MAX_CODE_BITS, 32 - target_bits(recipe))


def _flat_projections(recipe: Recipe, exact_table: np.ndarray | None):
    """Projection data as flat arrays the kernels take (see `connect.unit_scatter`); with an
    ``exact_table`` of the distinct weights, each projection's weight is its index there."""
    offsets = recipe.offsets
    sizes = np.diff(offsets)
    dt = recipe.dt_ms
    ptr, off, size, cum, dsteps = [0], [], [], [], []
    w_mean, w_sd, d_mean, d_sd = [], [], [], []
    for proj in recipe.projections:
        if proj.max_delay_steps_bound(dt) > MAX_DELAY_STEPS:
            raise ConfigError(f"a delay of {proj.delay_ms.max():g} ms is {proj.max_delay_steps_bound(dt)} steps at "
                              f"dt_ms = {dt:g}; at most {MAX_DELAY_STEPS} steps are supported")
        off.append(offsets[proj.sources])
        size.append(sizes[proj.sources])
        c = np.cumsum(proj.source_p)
        c[-1] = 1.0
        cum.append(c)
        dsteps.append(np.maximum(1, np.rint(proj.delay_ms / dt)).astype(np.int64))
        ptr.append(ptr[-1] + len(proj.sources))
        w_mean.append(proj.weight_mean)
        w_sd.append(proj.weight_sd)
        d_mean.append(float(proj.delay_ms[0]))
        d_sd.append(proj.delay_sd_ms)
    if exact_table is not None:  # kernels then write the weight's table index (exact in float32)
        w_mean = [float(np.searchsorted(exact_table, np.float32(w))) for w in w_mean]
    cat = np.concatenate
    lo = np.array([o.min() for o in off], dtype=np.int64)
    hi = np.array([(o + n).max() for o, n in zip(off, size)], dtype=np.int64)
    return dict(proj_sptr=np.array(ptr, dtype=np.int64), src_off=cat(off).astype(np.int64), src_lo=lo, src_hi=hi,
                src_size=cat(size).astype(np.int64), src_cum=cat(cum), src_delay_steps=cat(dsteps),
                proj_w_mean=np.array(w_mean), proj_w_sd=np.array(w_sd), proj_d_mean_ms=np.array(d_mean),
                proj_d_sd_ms=np.array(d_sd))


def _units(recipe: Recipe, ranges: np.ndarray, seed: int):
    """Cut every projection's local targets into work units.

    Returns
    -------
    dict of ndarray
        unit_proj, unit_g0, unit_lid0 (U,), unit_tptr, unit_sptr (U + 1,), tgt_counts.
    """
    offsets = recipe.offsets
    range_lid0 = np.concatenate([[0], np.cumsum(ranges[:, 1] - ranges[:, 0])])
    proj_l, g0_l, lid0_l, counts_l = [], [], [], []
    for p, proj in enumerate(recipe.projections):
        o, n = offsets[proj.target], recipe.populations[proj.target].size
        for (a, b), lid_a in zip(ranges, range_lid0):
            lo, hi = max(a, o), min(b, o + n)
            if lo >= hi:
                continue
            if proj.indegree:
                counts = np.full(hi - lo, proj.indegree, dtype=np.int64)
            else:
                counts = np.empty(hi - lo, dtype=np.int64)
                connect.split_counts(seed, p, proj.total, n, lo - o, hi - o, counts)
            # cut where the running synapse count crosses a multiple of UNIT_SYNAPSES
            csum = np.cumsum(counts)
            cuts = np.unique(np.searchsorted(csum, np.arange(1, csum[-1] // UNIT_SYNAPSES + 1) * UNIT_SYNAPSES,
                                             side="right"))
            starts = np.concatenate([[0], cuts[cuts < hi - lo]])
            for s, e in zip(starts, np.append(starts[1:], hi - lo)):
                proj_l.append(p)
                g0_l.append(lo + s)
                lid0_l.append(lid_a + lo - a + s)
                counts_l.append(counts[s:e])
    sizes_t = np.array([len(c) for c in counts_l], dtype=np.int64)
    sizes_s = np.array([c.sum() for c in counts_l], dtype=np.int64)
    return dict(unit_proj=np.array(proj_l, dtype=np.int64), unit_g0=np.array(g0_l, dtype=np.int64),
                unit_lid0=np.array(lid0_l, dtype=np.int64),
                unit_tptr=np.concatenate([[0], np.cumsum(sizes_t)]).astype(np.int64),
                unit_sptr=np.concatenate([[0], np.cumsum(sizes_s)]).astype(np.int64),
                tgt_counts=np.concatenate(counts_l) if counts_l else np.zeros(0, np.int64))


def _batches(unit_sptr: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive unit ranges holding at most about BATCH_SYNAPSES synapses each."""
    out, start = [], 0
    n = len(unit_sptr) - 1
    while start < n:
        stop = int(np.searchsorted(unit_sptr, unit_sptr[start] + BATCH_SYNAPSES, side="right")) - 1
        stop = max(stop, start + 1)
        out.append((start, min(stop, n)))
        start = stop
    return out


def _slots(u_src: np.ndarray, u_cnt: np.ndarray):
    """Slot set and CSR positions from the (unit, source, count) pairs of pass 1.

    Returns
    -------
    slot_gids : ndarray, shape (S,), int64
        Distinct sources, increasing.
    slot_ptr : ndarray, shape (S + 1,), int64
        CSR pointers: slot s owns synapses ``slot_ptr[s]:slot_ptr[s + 1]``.
    u_pos : ndarray, like u_src, int64
        First position of each pair: pairs are placed in unit order inside a slot.
    """
    if len(u_src) == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64)
    lo, hi = int(u_src.min()), int(u_src.max()) + 1
    if hi - lo <= 16 * len(u_src):
        # dense over the gid span: linear, no sort
        slot_of = np.full(hi - lo, -1, dtype=np.int64)
        slot_of[u_src - lo] = 0
        slot_gids = np.flatnonzero(slot_of == 0) + lo
        slot_of[slot_gids - lo] = np.arange(len(slot_gids))
        u_slot = slot_of[u_src - lo]
        del slot_of
    else:
        slot_gids = np.unique(np.sort(u_src))
        u_slot = np.searchsorted(slot_gids, u_src)
    counts = np.bincount(u_slot, weights=u_cnt, minlength=len(slot_gids)).astype(np.int64)
    slot_ptr = np.zeros(len(slot_gids) + 1, dtype=np.int64)
    np.cumsum(counts, out=slot_ptr[1:])
    u_pos = np.empty(len(u_cnt), dtype=np.int64)  # positions may pass 2**31 on a large rank
    connect.place_pairs(u_slot, u_cnt, slot_ptr, u_pos)
    return slot_gids, slot_ptr, u_pos


def build_local(ctx: Context, recipe: Recipe, partition: Partition, seed: int,
                progress: Callable[[str, int], Callable[[int], None]] | None = None,
                compact_weights: bool = True) -> LocalNetwork:
    """Build this rank's neurons and incoming synapses (no communication).

    Parameters
    ----------
    ctx : Context
    recipe : Recipe
    partition : Partition
    seed : int
    progress : callable, optional
        ``progress(label, total)`` returns an ``update(n)`` callable; used to report
        synapses generated.
    compact_weights : bool, optional
        Code weights into the synapse word where `Recipe.weight_table` allows (4 bytes per
        synapse); False stores float32 weights (8 bytes), exactly as drawn.

    Returns
    -------
    LocalNetwork
    """
    ranges = partition.local_ranges(ctx.rank)
    gids = partition.local_gids(ctx.rank)
    offsets = recipe.offsets
    pop = (np.searchsorted(offsets, gids, side="right") - 1).astype(np.int32)
    post_bits = target_bits(recipe)
    coding = recipe.weight_table(code_bits(recipe)) if compact_weights else None
    table, exact = coding if coding is not None else (np.zeros(0, np.float32), False)
    flat = _flat_projections(recipe, table if exact else None)
    units = _units(recipe, ranges, seed)
    n_syn = int(units["unit_sptr"][-1])
    batches = _batches(units["unit_sptr"])
    update = progress("synapses", 2 * n_syn) if progress else (lambda n: None)
    flat_src = {k: flat[k] for k in ("proj_sptr", "src_off", "src_size", "src_cum")}

    # pass 1: distinct sources of every unit and how many synapses each has there
    n_pop = len(recipe.populations)
    proj_target = np.array([p.target for p in recipe.projections], dtype=np.int64)
    pattern = recipe.expected_synapses()  # every pair a synapse can join; memory linear in the pairs
    pair_keys = np.repeat(np.arange(n_pop, dtype=np.int64), np.diff(pattern.indptr)) * n_pop + pattern.indices
    pair_counts = np.zeros(pattern.nnz, dtype=np.int64)
    u_src_l, u_cnt_l, u_len_l = [], [], []
    for a, b in batches:
        sptr = units["unit_sptr"][a:b + 1]
        src = np.empty(sptr[-1] - sptr[0], dtype=np.int64)
        connect.unit_sources(seed, units["unit_proj"][a:b], units["unit_g0"][a:b], units["unit_tptr"][a:b + 1],
                             units["tgt_counts"], sptr, out_src=src, **flat_src)
        cnts = np.empty_like(src)
        proj = units["unit_proj"][a:b]
        sizes = connect.unique_counts(src, sptr - sptr[0], flat["src_lo"][proj], flat["src_hi"][proj], cnts)
        keep = np.concatenate([np.arange(s, s + n) for s, n in zip(sptr[:-1] - sptr[0], sizes)])
        u_src_l.append(src[keep])
        u_cnt_l.append(cnts[keep].astype(np.int32))
        u_len_l.append(sizes)
        # local synapse counts by [target population, source population]
        pair_index = (np.repeat(proj_target[proj], sizes) * n_pop
                      + np.searchsorted(offsets, u_src_l[-1], side="right") - 1)
        pair_counts += np.bincount(np.searchsorted(pair_keys, pair_index), weights=u_cnt_l[-1],
                                   minlength=pattern.nnz).astype(np.int64)
        update(len(src))
        del src, cnts, pair_index
    u_src = np.concatenate(u_src_l) if u_src_l else np.zeros(0, np.int64)
    u_cnt = np.concatenate(u_cnt_l) if u_cnt_l else np.zeros(0, np.int32)
    unit_uptr = np.concatenate([[0], np.cumsum(np.concatenate(u_len_l))]).astype(np.int64) if u_len_l \
        else np.zeros(1, np.int64)
    del u_src_l, u_cnt_l

    slot_gids, slot_ptr, u_pos = _slots(u_src, u_cnt)

    # pass 2: draw again, this time weights and delays too, and write each synapse in place
    post = np.empty(n_syn, dtype=np.uint32)
    # until packed: an exact table's indices (as uint16 when they fit) or float32 weights
    weight = np.empty(n_syn, dtype=np.uint16 if exact and len(table) <= 65536 else np.float32)
    # delays are only needed until the rows exist: the narrowest type that holds them
    max_steps = max(p.max_delay_steps_bound(recipe.dt_ms) for p in recipe.projections)
    delay = np.empty(n_syn, dtype=np.uint8 if max_steps <= np.iinfo(np.uint8).max else np.uint16)
    for a, b in batches:
        connect.unit_scatter(seed, recipe.dt_ms, units["unit_proj"][a:b], units["unit_g0"][a:b],
                             units["unit_tptr"][a:b + 1], units["tgt_counts"], units["unit_lid0"][a:b],
                             unit_uptr[a:b + 1], u_src, u_pos, flat["proj_sptr"], flat["src_off"], flat["src_size"],
                             flat["src_cum"], flat["src_lo"], flat["src_hi"], flat["src_delay_steps"],
                             flat["proj_w_mean"], flat["proj_w_sd"], flat["proj_d_mean_ms"], flat["proj_d_sd_ms"],
                             post, weight, delay)
        update(int(units["unit_sptr"][b] - units["unit_sptr"][a]))
    del u_src, u_pos, u_cnt

    row_count = np.empty(len(slot_gids), dtype=np.int64)
    connect.sort_slots_by_delay(slot_ptr, post, weight, delay, row_count, max(1, 4 * ctx.threads))
    slot_row_ptr = np.zeros(len(slot_gids) + 1, dtype=np.int64)
    np.cumsum(row_count, out=slot_row_ptr[1:])
    row_ptr = np.empty(slot_row_ptr[-1] + 1, dtype=np.int64)
    row_ptr[-1] = n_syn
    row_delay = np.empty(slot_row_ptr[-1], dtype=np.uint16)
    connect.fill_rows(slot_ptr, delay, slot_row_ptr, row_ptr, row_delay)
    del delay

    if table.size:
        lo, inv_step = (0.0, 1.0) if exact else (float(table[0]), (len(table) - 1) / float(table[-1] - table[0]))
        connect.pack_weights(post, weight, post_bits, lo, inv_step, len(table) - 1)
        weight = np.zeros(0, np.float32)
    else:
        post_bits = 32

    excitatory = np.array([p.excitatory for p in recipe.populations])
    slot_pop = np.searchsorted(offsets, slot_gids, side="right") - 1
    slot_receptor = np.where(excitatory[slot_pop], 0, 1).astype(np.uint8)
    return LocalNetwork(recipe=recipe, gids=gids, pop=pop, slot_gids=slot_gids, slot_receptor=slot_receptor,
                        slot_row_ptr=slot_row_ptr, row_ptr=row_ptr, row_delay=row_delay, post=post,
                        post_bits=post_bits, weight=weight, weight_table=table,
                        synapse_counts=scipy.sparse.csr_array((pair_counts, pattern.indices, pattern.indptr),
                                                              shape=pattern.shape))
