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
   own order, reversed in every other region so that inhibitory populations, which reach
   few ranks, pair up: fewer ranks send to many nodes) are cut into ``n_ranks`` consecutive pieces of equal compute load, a
   population split only where a cut falls inside it. Consecutive ranks share a node
   (``simulation.ranks_per_node``, and the two-level exchange's layout).
3. **Send balance.** A neuron's spike costs one record per rank that holds one of its
   targets, so a rank full of a widely projecting population (a hub such as the posterior
   cingulate: three times the mean) sends three times the mean. From the layout's expected
   records per spike (`dtb.partition.report.destination_probabilities`), every population
   whose records per unit of load exceed ``SEND_LIMIT`` times the mean is joined by just
   enough of its nearest light neighbour in the order (its region's inhibitory population,
   as a rule) to come down to the limit, and the group is striped: each of its ranks holds
   the same fraction of every population in it. The estimate depends on the layout, so
   this is repeated (``SEND_ROUNDS``, the estimates only growing, until the groups settle).
   Only the few hubs move, so the total traffic and the messages stay where step 2 put them.
4. **Refinement on the cost itself.** The bisection counts synapses cut, but a spike costs
   one record per rank holding a target, however many targets that rank holds: the cost
   saturates, and which regions share a node decides how much. The order is cut into blocks
   that neither a region nor a group of step 3 spans, and pairs of blocks up to two nodes'
   worth apart are swapped while that lowers the modelled cross-node records
   (`refine_order`); step 3 then runs again on the new order. At 64 ranks (8 nodes) the
   cross-node records end 20 to 21 % below contiguous ranges' (``benchmarks/RESULTS.md``).

Compute load = neurons / all neurons + expected incoming synapses / all synapses (the
expected incoming spikes at a uniform rate are proportional to the synapses). With the
whole brain's fixed in-degree both shares are equal, so neurons, synapses and incoming
spikes are balanced to one neuron. The result depends on the recipe, ``n_ranks``,
``ranks_per_node`` and ``seed`` only: every rank computes the same one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from dtb.model.recipe import Recipe
from dtb.partition.partition import Partition
from dtb.partition.report import destination_probabilities, targets_per_neuron

#: METIS wants integer vertex weights: loads are scaled to this total
WEIGHT_SCALE = 1_000_000


def region_graph(recipe: Recipe) -> tuple[scipy.sparse.csr_array, np.ndarray]:
    """The undirected region graph and each region's compute load.

    Returns
    -------
    weights : scipy.sparse.csr_array, shape (R, R), float64
        Expected synapses between regions a and b in both directions; only connected pairs are stored, none on
        the diagonal (canonical: sorted indices).
    load : ndarray, shape (R,), float64
        Neuron share + synapse share of each region (sums to 2).
    """
    syn = recipe.expected_synapses().tocoo()  # [target, source] over populations
    region = np.array([p.region for p in recipe.populations], dtype=np.int64)
    n_reg = len(recipe.regions)
    a, b = region[syn.row], region[syn.col]
    off = a != b
    w = scipy.sparse.csr_array((np.concatenate([syn.data[off], syn.data[off]]),
                                (np.concatenate([a[off], b[off]]), np.concatenate([b[off], a[off]]))),
                               shape=(n_reg, n_reg))
    w.sum_duplicates()
    w.eliminate_zeros()
    return w, np.bincount(region, weights=population_load(recipe), minlength=n_reg)


def population_load(recipe: Recipe) -> np.ndarray:
    """Neuron share + expected-synapse share of each population, shape (n_pop,), float64 (sums to 2)."""
    sizes = np.array([p.size for p in recipe.populations], dtype=np.float64)
    syn = recipe.incoming_synapses()
    return sizes / sizes.sum() + syn / max(syn.sum(), 1.0)


def region_order(weights: scipy.sparse.csr_array, load: np.ndarray, n_ranks: int, ranks_per_node: int,
                 seed: int = 0) -> np.ndarray:
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
        left, right = _bisect(weights[regions][:, regions], load[regions], left_ranks / ranks, seed)
        # depth first, left subtree first: push the right one below it
        stack.append((regions[right], ranks - left_ranks))
        stack.append((regions[left], left_ranks))
    return np.array(out, dtype=np.int64)


def _bisect(w: scipy.sparse.csr_array, load: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two sides of a METIS bisection with target fractions (frac, 1 - frac); the order-preserving
    split at ``frac`` of the load when METIS leaves a side empty (a graph without edges)."""
    import pymetis

    n = len(load)
    w = scipy.sparse.csr_array(w)
    w.sort_indices()  # a subgraph's columns come in the order of its regions
    w = w.tocoo()
    u, v = w.row, w.col  # row-major: the adjacency of each vertex in turn
    if len(u):
        xadj = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(u, minlength=n), out=xadj[1:])
        eweights = np.maximum(1, np.rint(w.data / w.data.max() * WEIGHT_SCALE)).astype(np.int64)
        vweights = np.maximum(1, np.rint(load / load.sum() * WEIGHT_SCALE)).astype(np.int64)
        result = pymetis.part_graph(2, pymetis.CSRAdjacency(xadj, v.astype(np.int64)), vweights=vweights,
                                    eweights=eweights, tpwgts=[frac, 1.0 - frac], options=pymetis.Options(seed=seed))
        side = np.asarray(result.vertex_part, dtype=np.int64)
        if 0 < side.sum() < n:
            return np.flatnonzero(side == 0), np.flatnonzero(side == 1)
    cut = int(np.searchsorted(np.cumsum(load) / load.sum(), frac))
    cut = min(max(cut, 1), n - 1)
    return np.arange(cut), np.arange(cut, n)


def _region_members(recipe: Recipe) -> list[np.ndarray]:
    """Each region's populations, in their order (a list of R int64 arrays)."""
    region = np.array([p.region for p in recipe.populations], dtype=np.int64)
    return [np.flatnonzero(region == r) for r in range(len(recipe.regions))]


def _placed(members: list[np.ndarray], order: np.ndarray, k: int) -> np.ndarray:
    """The populations of the region at place k of ``order``: in their order, reversed at every other place
    (E I, I E, E I, ...), so that inhibitory populations, which reach few ranks, pair up, and so do the
    excitatory ones."""
    return members[order[k]][::1 - 2 * (k % 2)]


#: the refinement tries each block in the place of every block up to this many nodes' worth further on
REFINE_NODES = 2
#: sweeps of the refinement at most (it stops earlier once a sweep changes nothing)
REFINE_SWEEPS = 4
#: the refinement stops after this many swaps tried or (population, rank) cells evaluated, whichever comes
#: first, so that its time is bounded whatever the recipe (a sweep at 64 ranks of the bundled brain tries
#: about 2,000 swaps)
REFINE_SWAPS = 10_000
REFINE_CELLS = 2e8


def refine_order(recipe: Recipe, blocks: list[np.ndarray], n_ranks: int, ranks_per_node: int) -> np.ndarray:
    """The populations of ``blocks`` (runs of populations, in their order) in an order of the blocks that lowers
    the modelled cross-node spike records, found by pairwise swaps from the given order.

    The bisection minimises synapses cut between nodes, but a spike costs one record per rank that holds one of
    its targets, which saturates: two targets on one rank cost one record. This search works on that cost
    itself (`dtb.partition.quality`'s ``cross_node_spikes_per_rank_epoch`` at a uniform rate, with the
    populations cut evenly along the order and the neurons' fractions unrounded). For each place in the order
    in turn, the swaps with the blocks up to ``REFINE_NODES`` nodes' worth further on are tried, and each that
    lowers the cost is made at once; sweeps repeat until one changes nothing (``REFINE_SWEEPS`` at most, and
    at most ``REFINE_SWAPS`` swaps tried and ``REFINE_CELLS`` cells evaluated in all). A swap moves only the
    ranks between its two places, so only their nodes are evaluated. Deterministic.

    Returns
    -------
    ndarray, shape (n_pop,), int64
        Every population once: the blocks, each in its own order, one after another.
    """
    ppn = max(1, ranks_per_node)
    n_nodes = -(-n_ranks // ppn)
    if n_nodes < 2 or len(blocks) < 3:
        return np.concatenate(blocks)  # nothing crosses a node, or nothing to swap
    order = np.arange(len(blocks))
    sizes = np.diff(recipe.offsets).astype(np.float64)
    pop_load = population_load(recipe)
    block_load = np.array([pop_load[m].sum() for m in blocks])
    per_neuron = targets_per_neuron(recipe)  # [i, j]: targets in i of one neuron of j
    unit = pop_load.sum() / n_ranks  # load per rank
    cuts = np.arange(n_ranks + 1) * unit

    def fractions(pops: np.ndarray, start: float, r0: int, r1: int) -> np.ndarray:
        """Fractions on ranks r0..r1-1 of ``pops`` laid one after another from ``start`` on the line."""
        lo = start + np.concatenate([[0.0], np.cumsum(pop_load[pops])[:-1]])
        below = np.clip(cuts[r0:r1 + 1][None, :] - lo[:, None], 0.0, pop_load[pops][:, None])
        return np.diff(below, axis=1) / pop_load[pops][:, None]

    def node_sums(x: np.ndarray, r0: int) -> np.ndarray:
        """Columns of ``x`` (ranks r0, r0 + 1, ...; r0 a node's first) summed per node."""
        return np.add.reduceat(x, np.arange(0, x.shape[1], ppn), axis=1)

    pops = np.concatenate(blocks)
    frac = np.empty((len(sizes), n_ranks))
    frac[pops] = fractions(pops, 0.0, 0, n_ranks)
    lam = np.asarray(per_neuron.T @ frac)  # [j, r]: expected targets on r of one neuron of j
    pd = -np.expm1(-lam)
    pn, fn = node_sums(pd, 0), node_sums(frac, 0)
    start = np.concatenate([[0.0], np.cumsum(block_load)[:-1]])
    # records across nodes per spike of every neuron, summed: each population's spikes from node n go to the
    # ranks off n that hold a target (fn: its fraction on each node; pn: its expected destinations there)
    cost = float(sizes @ (pd.sum(axis=1) - (fn * pn).sum(axis=1)))
    window = REFINE_NODES * -(-len(order) // n_nodes)
    cells, swaps = 0.0, 0
    for _ in range(REFINE_SWEEPS):
        changed = False
        for a in range(len(order) - 1):
            for b in range(a + 1, min(len(order), a + 1 + window)):
                trial = order.copy()
                trial[a], trial[b] = order[b], order[a]
                span = np.concatenate([blocks[k] for k in trial[a:b + 1]])
                lo, hi = start[a], start[b] + block_load[order[b]]
                # the nodes whose ranks hold any of the span: only their fractions and records change
                n0 = int(lo / unit) // ppn
                n1 = min(n_nodes, -(-min(n_ranks, int(np.ceil(hi / unit - 1e-12))) // ppn))
                r0, r1 = n0 * ppn, min(n_ranks, n1 * ppn)
                new = fractions(span, lo, r0, r1)
                d_lam = np.asarray(per_neuron[span].T @ (new - frac[span, r0:r1]))
                new_pd = -np.expm1(-(lam[:, r0:r1] + d_lam))
                new_fn = fn[:, n0:n1].copy()
                new_fn[span] = node_sums(new, r0)
                new_pn = node_sums(new_pd, r0)
                d_total = (new_pd - pd[:, r0:r1]).sum(axis=1)
                delta = float(sizes @ (d_total - (new_fn * new_pn).sum(axis=1)
                                       + (fn[:, n0:n1] * pn[:, n0:n1]).sum(axis=1)))
                cells, swaps = cells + len(sizes) * (r1 - r0), swaps + 1
                if delta < -1e-9 * cost:  # first improvement: take it, go on from the new order
                    order = trial
                    frac[span, r0:r1] = new
                    lam[:, r0:r1] += d_lam
                    pd[:, r0:r1] = new_pd
                    fn[:, n0:n1], pn[:, n0:n1] = new_fn, new_pn
                    start[a:b + 1] = lo + np.concatenate([[0.0], np.cumsum(block_load[order[a:b]])])
                    cost += delta
                    changed = True
                if cells > REFINE_CELLS or swaps >= REFINE_SWAPS:
                    return np.concatenate([blocks[k] for k in order])
        if not changed:
            break
    return np.concatenate([blocks[k] for k in order])


#: a group of populations striped over its ranks sends at most this times the mean spike records per unit of
#: compute load (so the worst rank's send volume, relative to the mean, stays near it)
SEND_LIMIT = 1.4
#: rounds of "estimate each population's send, then dilute the heavy ones" (the estimate depends on the layout)
SEND_ROUNDS = 8


def hierarchical(recipe: Recipe, n_ranks: int, ranks_per_node: int = 8, seed: int = 0,
                 send_limit: float = SEND_LIMIT) -> Partition:
    """The hierarchical partition of ``recipe`` over ``n_ranks`` ranks (see the module text).

    Parameters
    ----------
    recipe : Recipe
    n_ranks : int
    ranks_per_node : int
        Consecutive ranks per node, as the exchange lays them out.
    seed : int
        METIS's seed.
    send_limit : float
        Populations whose neurons send more spike records per unit of load than this times the mean share
        their ranks with just enough of a light neighbour in the order to come down to it (inf: none do).

    Returns
    -------
    Partition
        Rank k holds the k-th of ``n_ranks`` equal-load pieces of the ordered groups.
    """
    weights, load = region_graph(recipe)
    order = region_order(weights, load, n_ranks, ranks_per_node, seed)
    members = _region_members(recipe)
    pops = np.concatenate([_placed(members, order, k) for k in range(len(order))])
    groups, bounds = _send_balanced(recipe, pops, n_ranks, send_limit)
    refined = refine_order(recipe, _blocks(recipe, pops, groups), n_ranks, ranks_per_node)
    if not np.array_equal(refined, pops):
        pops = refined
        groups, bounds = _send_balanced(recipe, pops, n_ranks, send_limit)
    return _from_bounds(recipe, bounds)


def _send_balanced(recipe: Recipe, pops: np.ndarray, n_ranks: int, send_limit: float) -> tuple[list, np.ndarray]:
    """The groups of the populations in the order ``pops`` (`_diluted`, repeated as the estimates of what each
    population sends settle) and their rank slices (`_stripes`)."""
    pop_load = population_load(recipe)
    sizes = np.diff(recipe.offsets).astype(np.float64)
    groups = [[(int(p), 0.0, 1.0)] for p in pops]
    bounds = _stripes(sizes, pop_load, groups, n_ranks)
    send = np.zeros(len(sizes))
    for _ in range(SEND_ROUNDS if n_ranks > 1 else 0):
        frac = np.diff(bounds, axis=1) / sizes[:, None]
        p_dest = destination_probabilities(recipe, frac)
        # records one spike of a neuron of j costs: every rank holding a target, its own excepted
        # the estimate only grows: spreading a hub over more ranks raises its own records per spike, and an
        # estimate that fell back would undo the spreading and oscillate
        send = np.maximum(send, (p_dest.sum(axis=1) - (p_dest * frac).sum(axis=1)) * sizes)
        new = _diluted(pops, send, pop_load, send_limit)
        if new == groups:
            break
        groups = new
        bounds = _stripes(sizes, pop_load, groups, n_ranks)
    return groups, bounds


def _blocks(recipe: Recipe, pops: np.ndarray, groups: list) -> list[np.ndarray]:
    """``pops`` cut into its longest runs that neither a region nor a group of the send balance spans: what the
    refinement may move without undoing either (a list of int64 arrays, in the order)."""
    region = np.array([p.region for p in recipe.populations], dtype=np.int64)
    place = np.empty(len(region), dtype=np.int64)
    place[pops] = np.arange(len(pops))
    tied = region[pops[1:]] == region[pops[:-1]]  # tied[i]: places i and i + 1 stay together
    for g in groups:
        at = [int(place[p]) for p, _, _ in g]
        tied[min(at):max(at)] = True
    return np.split(pops, np.flatnonzero(~tied) + 1)


def _diluted(pops: np.ndarray, send: np.ndarray, load: np.ndarray, limit: float) -> list:
    """Groups of pieces ``(population, lo, hi)`` (fractions of it) covering the population order: each population
    alone, except those whose send per load is above ``limit`` x the mean, each joined by the piece of the lighter
    of its nearest light single-population neighbours (its region's next population, as a rule) that brings the
    group's send per load down to the limit, and by more neighbours if one is not enough. A piece is always the
    end of its population that faces the group, so that a population's pieces lie in the order of its neurons
    along the line."""
    density = send / np.maximum(load, 1e-300)
    cap = limit * send.sum() / load.sum()
    groups = [[(int(p), 0.0, 1.0)] for p in pops]
    # a heavy population is never taken as a neighbour, so it stays in its own group, at its place in the
    # order: a neighbour taken whole leaves an empty group (dropped at the end) rather than shifting the others
    place = np.empty(len(load), dtype=np.int64)
    place[pops] = np.arange(len(pops))
    for p in sorted((int(p) for p in pops if density[p] > cap), key=lambda p: -density[p]):
        i = int(place[p])
        if len(groups[i]) > 1:
            continue  # already diluting another population
        s, w = send[p], load[p]
        while s > cap * w * (1 + 1e-9):
            # the nearest light, undivided neighbour on either side (past groups already diluting others)
            options = [next((k for k in side if len(groups[k]) == 1 and density[groups[k][0][0]] < cap), None)
                       for side in (range(i - 1, -1, -1), range(i + 1, len(groups)))]
            options = [k for k in options if k is not None]
            if not options:
                break
            k = min(options, key=lambda k: density[groups[k][0][0]])
            n, lo, hi = groups[k][0]
            need = (s - cap * w) / (cap - density[n])  # load of the neighbour that brings the group to the cap
            take = min(1.0, need / ((hi - lo) * load[n])) * (hi - lo)  # fraction of the neighbour
            if take <= 1e-12:
                break
            if k < i:  # the neighbour's end next to the group joins it
                piece, rest = (n, hi - take, hi), (n, lo, hi - take)
                groups[i].insert(0, piece)
            else:
                piece, rest = (n, lo, lo + take), (n, lo + take, hi)
                groups[i].append(piece)
            s, w = s + send[n] * take, w + load[n] * take
            groups[k] = [rest] if rest[2] - rest[1] > 1e-12 else []
    return [g for g in groups if g]


def _stripes(sizes: np.ndarray, pop_load: np.ndarray, groups: list, n_ranks: int) -> np.ndarray:
    """Neuron bounds of every population's rank slices: ``bounds[p, k]`` to ``bounds[p, k + 1]`` of population p
    (offsets inside it) are on rank k; shape (n_pop, n_ranks + 1), int64.

    The groups lie one after another on a line of compute load, cut into ``n_ranks`` equal pieces; a rank's piece
    of a group holds the same fraction of every population piece in it (striped), so that its send per load is
    the group's.
    """
    group_load = np.array([sum(pop_load[p] * (hi - lo) for p, lo, hi in g) for g in groups])
    start = np.concatenate([[0.0], np.cumsum(group_load)])
    cuts = np.arange(n_ranks + 1) * (start[-1] / n_ranks)
    cuts[-1] = start[-1]
    bounds = np.zeros((len(sizes), n_ranks + 1), np.int64)
    for g, pieces in enumerate(groups):
        x = np.clip((cuts - start[g]) / max(group_load[g], 1e-300), 0.0, 1.0)  # the group's fraction below each cut
        # population p's neurons [a, b) in each piece; a population's pieces lie in the order of its neurons along
        # the line, so their rank slices add up to every neuron once
        n = np.array([np.rint(hi * sizes[p]) - np.rint(lo * sizes[p]) for p, lo, hi in pieces], dtype=np.int64)
        below = _apportion(x, n)
        for (p, _, _), count in zip(pieces, below):
            bounds[p] += count
    return bounds


def _apportion(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Neurons of each piece below each cut: ``out[j, k]`` of piece j's ``n[j]`` below the group fraction ``x[k]``,
    shape (len(n), len(x)), int64, non-decreasing in k, summing over j to ``rint(x[k] * n.sum())``.

    Rounding every piece alone could put a rank off by one neuron per piece (3 % at 60 neurons a rank); this
    rounds the group once and shares it out as the sequential (Webster) method does: neuron i of piece j sits at
    ``(i + 0.5) / n[j]`` (ties broken by piece), and a cut takes the neurons below a common threshold.
    """
    if len(n) == 1:
        return np.rint(x * n[0]).astype(np.int64)[None, :]
    tie = np.arange(len(n)) * 1e-13

    def count(t: np.ndarray) -> np.ndarray:
        return np.clip(np.ceil((t[None, :] - tie[:, None]) * n[:, None] - 0.5), 0, n[:, None]).astype(np.int64)

    target = np.rint(x * n.sum()).astype(np.int64)
    lo, hi = np.zeros(len(x)), np.full(len(x), 1.0 + 1e-9)
    inside = (target > 0) & (target < n.sum())
    for _ in range(64 if inside.any() else 0):  # the smallest threshold that reaches each target
        mid = 0.5 * (lo + hi)
        enough = count(mid).sum(axis=0) >= target
        hi, lo = np.where(enough, mid, hi), np.where(enough, lo, mid)
    out = count(hi)
    out[:, target <= 0] = 0
    out[:, target >= n.sum()] = n[:, None]
    return out


def _from_bounds(recipe: Recipe, bounds: np.ndarray) -> Partition:
    """The Partition of per-population rank slices (`_stripes`), adjacent ranges of one rank merged."""
    n_ranks = bounds.shape[1] - 1
    lo, hi = bounds[:, :-1], bounds[:, 1:]
    keep = hi > lo
    pop, rank = np.nonzero(keep)  # population-major: gid order
    starts = recipe.offsets[pop] + lo[keep]
    stops = recipe.offsets[pop] + hi[keep]
    new = np.concatenate([[True], (rank[1:] != rank[:-1]) | (starts[1:] != stops[:-1])])
    idx = np.flatnonzero(new)
    return Partition(starts=starts[idx].astype(np.int64), stops=np.append(starts[idx][1:], stops[-1]).astype(np.int64),
                     ranks=rank[idx].astype(np.int32), n_ranks=n_ranks, strategy="hierarchical")
