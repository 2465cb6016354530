"""The hierarchical partitioner: regions ordered as the machine is built (nodes, then ranks), then cut evenly.

Connectivity inside a population pair is uniform (both models), so which neurons of a
population a rank holds does not change its traffic, only how many; what a partitioner
can choose is which populations share a rank, and which ranks share a node. This one
works on the region graph (edge weight: expected synapses between two regions, both
ways), as a domain decomposition does on a mesh:

1. **Regions to nodes, then to ranks.** Recursive bisection with METIS (pymetis,
   2-way, target fractions matching the rank counts of each side, vertex weight each
   region's compute load): while a part spans several nodes, each side is a whole
   number of nodes; inside a node, ranks are halved. Down to one rank's share or one
   region: strongly coupled regions end in the same subtree, so that their long-range
   spikes stay inside a node (or a rank) where they can. The leaves, concatenated, are
   an order of the regions.
2. **Ranks.** The populations in that order (a region's populations together, in their
   own order) are cut into ``n_ranks`` consecutive pieces of equal compute load, a
   population split only where a cut falls inside it. Consecutive ranks share a node
   (``simulation.ranks_per_node``, and the two-level exchange's layout).

Compute load = neurons / all neurons + expected incoming synapses / all synapses (the
expected incoming spikes at a uniform rate are proportional to the synapses). With the
whole brain's fixed in-degree both shares are equal, so neurons, synapses and incoming
spikes are balanced to one neuron. The result depends on the recipe, ``n_ranks``,
``ranks_per_node`` and ``seed`` only: every rank computes the same one.
"""

from __future__ import annotations

import numpy as np

from dtb.model.recipe import Recipe
from dtb.partition.partition import Partition

#: METIS wants integer vertex weights: loads are scaled to this total
WEIGHT_SCALE = 1_000_000


def region_graph(recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """The undirected region graph and each region's compute load.

    Returns
    -------
    weights : ndarray, shape (R, R), float64
        Expected synapses between regions a and b in both directions, zero diagonal.
    load : ndarray, shape (R,), float64
        Neuron share + synapse share of each region (sums to 2).
    """
    syn = recipe.expected_synapses()  # [target, source] over populations
    region = np.array([p.region for p in recipe.populations], dtype=np.int64)
    one_hot = np.zeros((len(region), len(recipe.regions)))
    one_hot[np.arange(len(region)), region] = 1.0
    w = one_hot.T @ syn @ one_hot
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    return w, one_hot.T @ population_load(recipe)


def population_load(recipe: Recipe) -> np.ndarray:
    """Neuron share + expected-synapse share of each population, shape (n_pop,), float64 (sums to 2)."""
    sizes = np.array([p.size for p in recipe.populations], dtype=np.float64)
    syn = recipe.incoming_synapses()
    return sizes / sizes.sum() + syn / max(syn.sum(), 1.0)


def region_order(weights: np.ndarray, load: np.ndarray, n_ranks: int, ranks_per_node: int, seed: int = 0) -> np.ndarray:
    """Regions in the order of a recursive bisection into ``n_ranks`` shares: first along node boundaries (each side
    a whole number of nodes), then inside a node (see the module text).

    Returns
    -------
    ndarray, shape (R,), int64
        A permutation of the regions.
    """
    ppn = max(1, ranks_per_node)
    out: list[int] = []
    stack = [(np.arange(len(load)), n_ranks)]
    while stack:
        regions, ranks = stack.pop()
        if ranks <= 1 or len(regions) <= 1:
            out.extend(regions.tolist())
            continue
        nodes = -(-ranks // ppn)
        left_ranks = (nodes // 2) * ppn if nodes > 1 else ranks // 2
        left, right = _bisect(weights[np.ix_(regions, regions)], load[regions], left_ranks / ranks, seed)
        # depth first, left subtree first: push the right one below it
        stack.append((regions[right], ranks - left_ranks))
        stack.append((regions[left], left_ranks))
    return np.array(out, dtype=np.int64)


def _bisect(w: np.ndarray, load: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two sides of a METIS bisection with target fractions (frac, 1 - frac); the order-preserving
    split at ``frac`` of the load when METIS leaves a side empty (a graph without edges)."""
    import pymetis

    n = len(load)
    u, v = np.nonzero(w)
    if len(u):
        xadj = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(u, minlength=n), out=xadj[1:])
        eweights = np.maximum(1, np.rint(w[u, v] / w.max() * WEIGHT_SCALE)).astype(np.int64)
        vweights = np.maximum(1, np.rint(load / load.sum() * WEIGHT_SCALE)).astype(np.int64)
        result = pymetis.part_graph(2, pymetis.CSRAdjacency(xadj, v.astype(np.int64)), vweights=vweights,
                                    eweights=eweights, tpwgts=[frac, 1.0 - frac], options=pymetis.Options(seed=seed))
        side = np.asarray(result.vertex_part, dtype=np.int64)
        if 0 < side.sum() < n:
            return np.flatnonzero(side == 0), np.flatnonzero(side == 1)
    cut = int(np.searchsorted(np.cumsum(load) / load.sum(), frac))
    cut = min(max(cut, 1), n - 1)
    return np.arange(cut), np.arange(cut, n)


def hierarchical(recipe: Recipe, n_ranks: int, ranks_per_node: int = 8, seed: int = 0) -> Partition:
    """The hierarchical partition of ``recipe`` over ``n_ranks`` ranks (see the module text).

    Parameters
    ----------
    recipe : Recipe
    n_ranks : int
    ranks_per_node : int
        Consecutive ranks per node, as the exchange lays them out.
    seed : int
        METIS's seed.

    Returns
    -------
    Partition
        Gid ranges in gid order; rank k holds the k-th piece of the ordered populations.
    """
    weights, load = region_graph(recipe)
    order = region_order(weights, load, n_ranks, ranks_per_node, seed)
    region = np.array([p.region for p in recipe.populations], dtype=np.int64)
    # populations in region order, a region's own in their order
    pops = np.concatenate([np.flatnonzero(region == r) for r in order]) if len(order) else np.arange(0)
    sizes = np.array([recipe.populations[p].size for p in pops], dtype=np.int64)
    per_neuron = population_load(recipe)[pops] / sizes
    # cumulative load at each population's start, in the new order; cuts at equal load
    cum = np.concatenate([[0.0], np.cumsum(per_neuron * sizes)])
    cuts = np.arange(1, n_ranks) * cum[-1] / n_ranks
    k = np.searchsorted(cum, cuts, side="right") - 1  # the population each cut falls in
    at = np.minimum(sizes[k], np.rint((cuts - cum[k]) / per_neuron[k]).astype(np.int64))
    # neuron positions of the cuts in the concatenated order, kept non-decreasing
    pos = np.maximum.accumulate(np.concatenate([[0], np.cumsum(sizes)[:-1]])[k] + at) if n_ranks > 1 else \
        np.zeros(0, np.int64)
    bounds = np.concatenate([[0], pos, [int(sizes.sum())]])
    # every population piece between consecutive bounds -> (gid start, stop, rank)
    pop_first = np.concatenate([[0], np.cumsum(sizes)])  # in the new order
    offsets = recipe.offsets
    starts, stops, ranks = [], [], []
    for i, p in enumerate(pops):
        lo, hi = pop_first[i], pop_first[i + 1]
        r0 = int(np.searchsorted(bounds, lo, side="right")) - 1
        r1 = int(np.searchsorted(bounds, hi, side="left"))
        for r in range(r0, max(r0 + 1, r1)):
            a, b = max(lo, bounds[r]), min(hi, bounds[r + 1])
            if b > a:
                starts.append(offsets[p] + a - lo)
                stops.append(offsets[p] + b - lo)
                ranks.append(min(r, n_ranks - 1))
    starts, stops, ranks = (np.array(x, dtype=np.int64) for x in (starts, stops, ranks))
    by_gid = np.argsort(starts, kind="stable")
    starts, stops, ranks = starts[by_gid], stops[by_gid], ranks[by_gid]
    # adjacent ranges of one rank merge
    new = np.concatenate([[True], (ranks[1:] != ranks[:-1]) | (starts[1:] != stops[:-1])])
    idx = np.flatnonzero(new)
    return Partition(starts=starts[idx], stops=np.append(starts[idx][1:], stops[-1]), ranks=ranks[idx].astype(np.int32),
                     n_ranks=n_ranks, strategy="hierarchical")
