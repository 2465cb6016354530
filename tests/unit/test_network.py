"""Rank-local build: invariance under splitting, storage invariants, exact delivery."""

import numpy as np
import pytest

from helpers import small_pd14, small_wholebrain
from dtb.context import Context
from dtb.kernels import cpu
from dtb.network import build_local
from dtb.partition import Partition, contiguous


def _sorted_edges(nets):
    cols = [np.concatenate(c) for c in zip(*(net.edges() for net in nets))]
    order = np.lexsort(cols[::-1])
    return [c[order] for c in cols]


def _irregular(recipe):
    n = recipe.n_neurons
    cuts = [0, n // 7, n // 3, n // 3 + 1, (2 * n) // 3, n]
    return Partition(starts=np.array(cuts[:-1]), stops=np.array(cuts[1:]), ranks=np.array([0, 1, 2, 1, 0], np.int32),
                     n_ranks=3, strategy="test")


@pytest.mark.parametrize("make", ["wholebrain", "pd14"])
def test_generation_invariant_under_splitting(connectome, make):
    """Building the gid space in one piece or as 3 ranks' interleaved ranges gives identical synapses."""
    recipe = small_wholebrain(connectome) if make == "wholebrain" else small_pd14()
    whole = build_local(Context(), recipe, contiguous(recipe, 1), seed=5)
    part = _irregular(recipe)
    pieces = [build_local(Context(rank=r, size=3), recipe, part, seed=5) for r in range(3)]
    assert sum(p.n_synapses for p in pieces) == whole.n_synapses
    for a, b in zip(_sorted_edges([whole]), _sorted_edges(pieces)):
        np.testing.assert_array_equal(a, b)
    # every rank's counts lie on the recipe's pattern, so ranks sum them as plain arrays
    pattern = recipe.expected_synapses()
    for p in pieces + [whole]:
        np.testing.assert_array_equal(p.synapse_counts.indptr, pattern.indptr)
        np.testing.assert_array_equal(p.synapse_counts.indices, pattern.indices)
    np.testing.assert_array_equal(sum(p.synapse_counts.data for p in pieces), whole.synapse_counts.data)
    other = build_local(Context(), recipe, contiguous(recipe, 1), seed=6)
    assert not np.array_equal(_sorted_edges([other])[0], _sorted_edges([whole])[0])


def test_storage_invariants(connectome):
    recipe = small_wholebrain(connectome)
    net = build_local(Context(), recipe, contiguous(recipe, 1), seed=1)
    # constant weights: a code into a table of the distinct weights above the target id (4 B per synapse)
    assert net.post.dtype == np.uint32 and net.weight.size == 0 and net.row_delay.dtype == np.uint16
    np.testing.assert_array_equal(net.weight_table, np.array([0.4, 2.0], np.float32))
    assert net.post_bits == (recipe.n_neurons - 1).bit_length()
    # rows (10 B) and slots (17 B) come on top of the words
    n_rows, n_slots = len(net.row_delay), len(net.slot_gids)
    assert net.synapse_bytes == 4 * net.n_synapses + 10 * n_rows + 8 + 17 * n_slots + 8 + net.weight_table.nbytes
    assert set(np.unique(net.weights())) == {np.float32(0.4), np.float32(2.0)}
    assert np.all(np.diff(net.slot_gids) > 0)
    assert np.all(np.diff(net.row_ptr) > 0) and np.all(np.diff(net.slot_row_ptr) > 0)
    for s in range(len(net.slot_gids)):
        d = net.row_delay[net.slot_row_ptr[s]:net.slot_row_ptr[s + 1]]
        assert np.all(np.diff(d.astype(int)) > 0)
    assert net.targets().max() < net.n_local
    assert net.row_delay.min() >= recipe.min_delay_steps
    src, tgt, _, _ = net.edges()
    # receptor of a slot = type of its source population
    exc = np.array([p.excitatory for p in recipe.populations])
    slot_pop = np.searchsorted(recipe.offsets, net.slot_gids, side="right") - 1
    np.testing.assert_array_equal(net.slot_receptor, np.where(exc[slot_pop], 0, 1))
    # fixed in-degree: every neuron has exactly K synapses
    assert np.all(np.bincount(tgt, minlength=recipe.n_neurons) == 40)


def test_wholebrain_connectivity_follows_recipe(connectome):
    recipe = small_wholebrain(connectome, n=6000, k=70)
    net = build_local(Context(), recipe, contiguous(recipe, 1), seed=2)
    src, tgt, w, d = net.edges()
    pop_of = lambda g: np.searchsorted(recipe.offsets, g, side="right") - 1  # noqa: E731
    sp, tp = pop_of(src), pop_of(tgt)
    same_region = sp // 2 == tp // 2
    # local E 4/7, local I 1/7, long-range 2/7 of K = 70
    per_target = np.bincount(tgt[same_region & (sp % 2 == 0)], minlength=recipe.n_neurons)
    assert np.all(per_target >= 40)  # 40 local-E draws (+ none: long-range sources are other regions)
    assert np.all(np.bincount(tgt[same_region & (sp % 2 == 1)], minlength=recipe.n_neurons) == 10)
    assert np.all(np.bincount(tgt[~same_region], minlength=recipe.n_neurons) == 20)
    assert np.all(sp[~same_region] % 2 == 0)  # long-range sources are excitatory
    # long-range delays = fibre length / velocity; local delays = 1 ms
    lr = ~same_region
    expect = np.rint(connectome.len_mm[sp[lr] // 2, tp[lr] // 2] / 5.0 / 0.1)
    np.testing.assert_array_equal(d[lr], np.maximum(1, expect))
    assert np.all(d[same_region] == 10)
    # long-range source regions follow the normalised sc (chi-square-free check on one big row)
    p = connectome.long_range_probabilities("row")
    counts = np.zeros((94, 94))
    np.add.at(counts, (tp[lr] // 2, sp[lr] // 2), 1)
    frac = counts / counts.sum(axis=1, keepdims=True)
    assert np.corrcoef(frac.ravel(), p.ravel())[0, 1] > 0.9


def test_pd14_totals_and_distributions():
    recipe = small_pd14(n_scale=0.05, k_scale=0.2)
    net = build_local(Context(), recipe, contiguous(recipe, 1), seed=3)
    for proj in recipe.projections:
        assert net.synapse_counts[proj.target, proj.sources[0]] == proj.total
    src, tgt, w, d = net.edges()
    exc_src = np.array([recipe.populations[p].excitatory
                        for p in np.searchsorted(recipe.offsets, src, side="right") - 1])
    assert np.all(w[exc_src] > 0) and np.all(w[~exc_src] < 0)
    assert np.all(d >= 1)
    de = d[exc_src] * 0.1
    # delays: normal(1.5, 0.75) redrawn below 0.1 ms, rounded to the grid
    assert abs(de.mean() - 1.56) < 0.05 and abs(de.std() - 0.70) < 0.05


@pytest.mark.parametrize("model", ["wholebrain", "pd14", "pd14_float32"])
def test_delivery_is_exact(connectome, model):
    """Each spike adds exactly its synapses' weights to exactly the input of step + delay.

    Weights coded in the synapse word (an exact table for the whole brain, a grid for PD14) and
    stored as float32 (PD14 with compact_weights off) are all checked.
    """
    recipe = small_wholebrain(connectome, n=2000, k=30) if model == "wholebrain" else small_pd14()
    net = build_local(Context(), recipe, contiguous(recipe, 1), seed=4, compact_weights=model != "pd14_float32")
    src, tgt, w, d = net.edges()
    rng = np.random.default_rng(0)
    m = recipe.min_delay_steps
    n_epochs = 120
    spikes = sorted({(int(rng.integers(0, 40 * m)), int(g)) for g in rng.integers(0, recipe.n_neurons, 60)})
    expect = np.zeros((n_epochs * m, 2, net.n_local))
    for step, g in spikes:
        sel = src == g
        rc = 0 if recipe.populations[np.searchsorted(recipe.offsets, g, side="right") - 1].excitatory else 1
        np.add.at(expect, (step + d[sel].astype(int), rc, tgt[sel]), w[sel].astype(np.float64))
    assert bool(net.weight_table.size) == (model != "pd14_float32")
    got = np.zeros_like(expect)
    pend = np.zeros((3, 1000), np.int64)
    n_pend = 0
    for e in range(n_epochs):
        e0 = e * m
        inbuf = np.zeros((m, 2, net.n_local), np.float32)
        n_pend = cpu.deliver(e0, m, n_pend, pend[0], pend[1], pend[2], net.slot_row_ptr, net.row_ptr, net.row_delay,
                             net.post, net.post_bits, net.weight, net.weight_table, net.slot_receptor, inbuf)
        got[e0:e0 + m] = inbuf
        # the epoch's spikes are queued at its end, as the exchange does
        now = [(s, g) for s, g in spikes if e0 <= s < e0 + m]
        if now:
            steps, gids = (np.array(x, np.int64) for x in zip(*now))
            n_pend = cpu.enqueue(steps, gids, net.slot_gids, net.slot_row_ptr, n_pend, pend[0], pend[1], pend[2])
    assert n_pend == 0
    assert np.count_nonzero(expect) > 100
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


def test_pd14_weights_are_coded_on_a_fine_grid():
    """PD14's normal weights as codes on a grid (4 B per synapse) are the float32 weights within half its
    spacing, which is at most 1e-3 of the smallest mean weight; everything else is the same."""
    recipe = small_pd14()
    coded = build_local(Context(), recipe, contiguous(recipe, 1), seed=7)
    plain = build_local(Context(), recipe, contiguous(recipe, 1), seed=7, compact_weights=False)
    assert plain.post_bits == 32 and plain.weight_table.size == 0 and plain.weight.dtype == np.float32
    assert coded.weight.size == 0 and len(coded.weight_table) == 2 ** min(16, 32 - coded.post_bits)
    np.testing.assert_array_equal(coded.targets(), plain.post)
    np.testing.assert_array_equal(coded.row_delay, plain.row_delay)
    spacing = np.diff(coded.weight_table.astype(np.float64))
    assert spacing.max() <= 1e-3 * min(abs(p.weight_mean) for p in recipe.projections)
    err = np.abs(coded.weights().astype(np.float64) - plain.weight)
    assert err.max() <= 0.5 * spacing.max() + 1e-6 * np.abs(plain.weight).max()
    # 4 bytes less per synapse, a table of at most 2**16 weights more
    assert coded.synapse_bytes - coded.weight_table.nbytes == plain.synapse_bytes - plain.weight.nbytes
    assert len(coded.weight_table) <= 2**16
    # too few bits for a fine grid: no table, float32 weights
    assert recipe.weight_table(6) is None and recipe.weight_table(20)[1] is False


def test_the_global_coupling_scales_the_long_range_weights_only(connectome):
    """wholebrain.coupling G: a long-range synapse weighs G x w_e_trace, a local one w_e_trace; the synapses
    themselves (sources, targets, delays) are the same draws at any G."""
    nets = {g: build_local(Context(), r, contiguous(r, 1), seed=3)
            for g, r in ((1.0, small_wholebrain(connectome)),
                         (2.5, small_wholebrain(connectome, "wholebrain.coupling=2.5")))}
    (s1, t1, w1, d1), (s2, t2, w2, d2) = (nets[g].edges() for g in (1.0, 2.5))
    for a, b in ((s1, s2), (t1, t2), (d1, d2)):
        np.testing.assert_array_equal(a, b)
    recipe = small_wholebrain(connectome)
    pop_of = lambda g: np.searchsorted(recipe.offsets, g, side="right") - 1  # noqa: E731
    far = pop_of(s1) // 2 != pop_of(t1) // 2
    assert far.any() and set(np.unique(w2[far])) == {np.float32(1.0)}
    np.testing.assert_array_equal(w2[~far], w1[~far])
    assert set(np.unique(w1[far])) == {np.float32(0.4)}


def test_a_stack_of_brains_that_differ_in_parameters(connectome):
    """Recipe.stack: members keep their own parameters, in one recipe laid out as replicate's; layouts must match."""
    from dtb.model.recipe import Recipe

    a, b = small_wholebrain(connectome), small_wholebrain(connectome, "wholebrain.coupling=3")
    stacked = Recipe.stack([a, b])
    assert stacked.fingerprint() != a.replicate(2).fingerprint()
    n = len(a.projections)
    assert [q.weight_mean for q in stacked.projections[:n]] == [q.weight_mean for q in a.projections]
    assert [q.weight_mean for q in stacked.projections[n:]] == [q.weight_mean for q in b.projections]
    assert Recipe.stack([a, a]).fingerprint() == a.replicate(2).fingerprint()
    with pytest.raises(ValueError, match="differ in"):
        Recipe.stack([a, small_pd14()])


def test_an_ensembles_population_tables_grow_linearly_in_its_members():
    """An ensemble's members are disjoint, so the population tables that every rank holds while it partitions,
    reports and builds are sparse: twice the members cost less than twice the memory (the dense tables they
    replaced grew with the square of the members)."""
    import tracemalloc

    from dtb.config import load_config
    from dtb.driver import network_from_config
    from dtb.partition import partition
    from dtb.partition.report import quality

    one = network_from_config(load_config(overrides=["wholebrain.n_neurons=4032", "wholebrain.in_degree=10"])).recipe()
    peaks = []
    for members in (16, 32):
        recipe = one.replicate(members)
        assert recipe.expected_synapses().nnz == members * one.expected_synapses().nnz == recipe.n_population_pairs
        tracemalloc.start()
        try:
            part = partition(recipe, 4, "hierarchical", seed=1)
            quality(recipe, part)
            build_local(Context(rank=0, size=4), recipe, part, seed=1)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 2.0 * peaks[0]
