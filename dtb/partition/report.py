"""Partition quality, computed from the recipe alone (no network is built).

With connectivity uniform inside each population pair (as in both models), a
partition is summarised by ``frac[p, r]``, the fraction of population p's neurons
on rank r. From it and the expected synapse counts ``S[i, j]`` (target i, source j):

- neurons and synapses per rank, and their max/mean imbalance;
- cut fraction: the share of synapses whose source lives on another rank;
- expected spike records a rank sends per epoch: each spike of a neuron of
  population j goes once to every other rank holding at least one of its targets,
  which has probability ``1 - exp(-sum_i S[i, j] / N_j * frac[i, r])`` (Poisson
  approximation of the out-degree), at a nominal rate;
- messages per rank per epoch (non-empty sends) for the flat all-to-all, and for
  the two-level exchange (one message to each destination node, then one to each
  rank of the own node that receives something).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from dtb.model.recipe import Recipe
from dtb.partition.partition import Partition


def population_fractions(recipe: Recipe, partition: Partition) -> np.ndarray:
    """``frac[p, r]``: fraction of population p's neurons on rank r, shape (n_pop, n_ranks), float64."""
    offsets = recipe.offsets
    n_pop = len(recipe.populations)
    frac = np.zeros((n_pop, partition.n_ranks))
    # split every range at population boundaries
    for a, b, r in zip(partition.starts, partition.stops, partition.ranks):
        if b <= a:
            continue
        p0 = np.searchsorted(offsets, a, side="right") - 1
        p1 = np.searchsorted(offsets, b - 1, side="right") - 1
        for p in range(p0, p1 + 1):
            lo, hi = max(a, offsets[p]), min(b, offsets[p + 1])
            frac[p, r] += hi - lo
    return frac / np.diff(offsets)[:, None]


def targets_per_neuron(recipe: Recipe) -> scipy.sparse.csr_array:
    """``[i, j]``: expected targets in population i of one neuron of population j, shape (n_pop, n_pop), float64
    (`Recipe.expected_synapses` over the source sizes)."""
    per_neuron = recipe.expected_synapses()
    per_neuron.data /= np.diff(recipe.offsets).astype(np.float64)[per_neuron.indices]
    return per_neuron


def destination_probabilities(recipe: Recipe, frac: np.ndarray) -> np.ndarray:
    """``p_dest[j, r]``: probability that rank r holds at least one target of a neuron of population j (Poisson
    approximation of the out-degree; connectivity is uniform inside a population pair), shape (n_pop, n_ranks),
    float64; ``frac`` as `population_fractions` gives it."""
    lam = targets_per_neuron(recipe).T @ frac  # [j, r]: expected targets on r of one neuron of j
    return -np.expm1(-lam)


#: splits of a node's room between a spike's own region and the others that the floor tries
ROOM_SPLITS = 64


def cross_node_lower_bound(recipe: Recipe, n_ranks: int, *, rate_hz: float = 5.0, ranks_per_node: int = 8,
                           imbalance: float = 1.03) -> float:
    """A floor under the cross-node spike records per rank-epoch of *every* partition whose ranks hold at most
    ``imbalance`` x the mean number of neurons (the model of `quality`; no partition is made).

    One spike of a neuron of population j costs, on the ranks off its node, ``sum_r f(lam_r)`` records with
    ``f(x) = 1 - exp(-x)`` and ``lam_r`` its expected targets on rank r. Split ``lam_r = a_r + b_r`` into targets in
    its own region and in the others: ``f(a + b) = f(a) + exp(-a) f(b)``. For either part, a rank holds at most
    ``c = imbalance x N / P`` neurons, so ``x <= A = c x`` (the part's densest target population), and below that
    chord ``f(x) >= x f(A) / A``; the part's targets off the node are at least its out-degree less what the
    node's neurons of its densest target populations can hold. The node holds at most ``ranks_per_node x c``
    neurons of both parts together: if ``s`` of them are the own region's, the own part's bound falls and the
    other part's rises in ``s``, so on each of ``ROOM_SPLITS`` intervals of ``s`` their ends bound both, and
    the least over the intervals holds whatever ``s`` is. Both orders of the split give a bound; the larger
    counts. Nothing here is partition-specific: a partitioner cannot go below it.

    Returns
    -------
    float
        Records per rank per epoch, at ``rate_hz`` (Hz, a number or one per population).
    """
    if n_ranks <= ranks_per_node:
        return 0.0  # one node: nothing crosses
    sizes = np.diff(recipe.offsets).astype(np.float64)
    rho = recipe.expected_synapses().tocsc()  # [i, j]: targets in i per neuron pair, by source column
    rho.data /= sizes[rho.indices] * np.repeat(sizes, np.diff(rho.indptr))
    region = np.array([p.region for p in recipe.populations], dtype=np.int64)
    cap = imbalance * sizes.sum() / n_ranks
    rooms = np.linspace(0.0, ranks_per_node * cap, ROOM_SPLITS + 1)  # the own region's share of the node
    epoch_s = min(recipe.min_delay_steps, 64) * recipe.dt_ms * 1e-3
    rates = np.broadcast_to(np.asarray(rate_hz, dtype=np.float64), sizes.shape)

    def chord(r: np.ndarray, n: np.ndarray, room: np.ndarray) -> tuple[np.ndarray, float]:
        """The part's floor for each node room in ``room``, and its densest targets on one rank."""
        if not r.size or r.max() <= 0:
            return np.zeros(len(room)), 0.0
        order = np.argsort(-r, kind="stable")
        before = np.concatenate([[0.0], np.cumsum(n[order])[:-1]])
        held = np.clip(room[:, None] - before[None, :], 0.0, n[order][None, :])
        off_node = np.maximum((r * n).sum() - held @ r[order], 0.0)
        top = cap * r.max()
        return -np.expm1(-top) / top * off_node, top

    total = 0.0
    for j in range(len(sizes)):
        # the pairs that hold no synapse add nothing to either part (they sort last in `chord`)
        i = rho.indices[rho.indptr[j]:rho.indptr[j + 1]]
        r = rho.data[rho.indptr[j]:rho.indptr[j + 1]]
        same = region[i] == region[j]
        own, a = chord(r[same], sizes[i[same]], rooms)
        other, b = chord(r[~same], sizes[i[~same]], rooms[-1] - rooms)
        # own room s in [rooms[k], rooms[k + 1]]: own part >= own[k + 1], other part >= other[k]
        own, other = own[1:], other[:-1]
        total += sizes[j] * rates[j] * epoch_s * np.maximum(own + np.exp(-a) * other, other + np.exp(-b) * own).min()
    return float(total / n_ranks)


def quality(recipe: Recipe, partition: Partition, *, rate_hz: float = 5.0, ranks_per_node: int = 8,
            block: int = 256) -> dict:
    """Balance and traffic figures of a partition.

    Parameters
    ----------
    recipe : Recipe
    partition : Partition
    rate_hz : float or array of shape (n_populations,)
        Firing rate of every neuron (Hz), or of each population's, for spike traffic and input spikes.
    ranks_per_node : int
        Ranks sharing a node, for the two-level exchange.
    block : int
        Ranks processed at a time (bounds memory at large P).

    Returns
    -------
    dict
        ``imbalance_neurons``, ``imbalance_synapses``, ``imbalance_input_spikes`` (max / mean; the synaptic
        events onto a rank per epoch, at the nominal rate), ``cut_fraction``, ``spikes_sent_per_rank_epoch``,
        ``spikes_received_per_rank_epoch``, ``cross_node_spikes_per_rank_epoch`` (records to ranks of other
        nodes: what stage 1 of the two-level exchange carries), ``messages_flat``, ``messages_two_level``,
        ``messages_cross_node`` (mean over ranks per epoch, and ``_max``), and the inputs.
    """
    frac = population_fractions(recipe, partition)
    sizes = np.diff(recipe.offsets).astype(np.float64)
    syn = recipe.expected_synapses()  # [target, source]
    n_ranks = partition.n_ranks
    neurons = sizes @ frac
    synapses = syn.sum(axis=1) @ frac
    # synapses onto rank r whose source is on r: sum_ij S_ij frac_ir frac_jr
    local = float(((syn @ frac) * frac).sum())
    cut = 1.0 - local / syn.sum()
    epoch_s = min(recipe.min_delay_steps, 64) * recipe.dt_ms * 1e-3
    rates = np.broadcast_to(np.asarray(rate_hz, dtype=np.float64), sizes.shape)  # Hz per population
    # synaptic events a rank's neurons receive per epoch: every synapse carries its source's spikes
    input_spikes = (syn @ rates) @ frac * epoch_s
    p_dest = destination_probabilities(recipe, frac)  # P(rank r needs the spike of a neuron of j)
    spikes_out = (frac * sizes[:, None]) * rates[:, None] * epoch_s  # [j, r]: spikes population j emits on rank r
    node_of = np.arange(n_ranks) // ranks_per_node
    n_nodes = int(node_of[-1]) + 1
    sent = np.zeros(n_ranks)
    received = np.zeros(n_ranks)
    cross = np.zeros(n_ranks)  # records to ranks of other nodes
    msg_flat = np.zeros(n_ranks)
    msg_node = np.zeros(n_ranks)  # two-level stage 1: one message per other node reached
    inbound = np.zeros(n_ranks)  # records each rank receives from other nodes
    same_node = np.zeros((n_ranks, ranks_per_node))  # records to each rank of the own node
    for r0 in range(0, n_ranks, block):
        r1 = min(n_ranks, r0 + block)
        rows = np.arange(r1 - r0)
        # records[r, r2]: expected spike records rank r sends rank r2 in one epoch
        records = spikes_out[:, r0:r1].T @ p_dest
        records[rows, np.arange(r0, r1)] = 0.0
        sent[r0:r1] = records.sum(axis=1)
        msg_flat[r0:r1] = (-np.expm1(-records)).sum(axis=1)
        to_node = np.zeros((r1 - r0, n_nodes))
        np.add.at(to_node.T, node_of, records.T)
        own = node_of[r0:r1]
        to_node[rows, own] = 0.0
        msg_node[r0:r1] = (-np.expm1(-to_node)).sum(axis=1)
        mask = node_of[r0:r1, None] == node_of[None, :]
        far = np.where(mask, 0.0, records)
        inbound += far.sum(axis=0)
        cross[r0:r1] = far.sum(axis=1)
        received += records.sum(axis=0)
        first = own * ranks_per_node
        for k in range(ranks_per_node):
            col = first + k
            ok = col < n_ranks
            same_node[r0:r1][ok, k] = records[rows[ok], col[ok]]
    # stage 2: each rank forwards, to every other rank of its node, that rank's own records from it
    # plus a 1/ranks_per_node share of what the node received for that rank from other nodes
    msg_two = msg_node.copy()
    for k in range(ranks_per_node):
        r2 = node_of * ranks_per_node + k
        ok = (r2 < n_ranks) & (r2 != np.arange(n_ranks))
        load = same_node[ok, k] + inbound[r2[ok]] / ranks_per_node
        msg_two[ok] += -np.expm1(-load)
    return {
        "strategy": partition.strategy, "n_ranks": n_ranks, "n_ranges": int(len(partition.starts)),
        "rate_hz": float(np.mean(rates)) if np.ndim(rate_hz) else rate_hz, "ranks_per_node": ranks_per_node,
        "epoch_ms": epoch_s * 1e3,
        "neurons_max": float(neurons.max()), "neurons_mean": float(neurons.mean()),
        "imbalance_neurons": float(neurons.max() / neurons.mean()),
        "synapses_max": float(synapses.max()), "synapses_mean": float(synapses.mean()),
        "imbalance_synapses": float(synapses.max() / synapses.mean()),
        "imbalance_input_spikes": float(input_spikes.max() / input_spikes.mean()),
        "input_spikes_per_rank_epoch": float(input_spikes.mean()),
        "cut_fraction": float(cut),
        "spikes_sent_per_rank_epoch": float(sent.mean()), "spikes_sent_per_rank_epoch_max": float(sent.max()),
        "spikes_received_per_rank_epoch": float(received.mean()),
        "spikes_received_per_rank_epoch_max": float(received.max()),
        "cross_node_spikes_per_rank_epoch": float(cross.mean()),
        "cross_node_spikes_per_rank_epoch_max": float(cross.max()),
        "messages_cross_node": float(msg_node.mean()),
        "messages_flat": float(msg_flat.mean()), "messages_flat_max": float(msg_flat.max()),
        "messages_two_level": float(msg_two.mean()), "messages_two_level_max": float(msg_two.max()),
    }
