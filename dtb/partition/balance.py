"""Balancers: which rank owns which population chunk.

Vertices are *chunks*: contiguous gid ranges inside one population, a large
population being cut into several so that balance is reachable (about four
chunks per rank). A chunk weighs ``neurons / mean + synapses / mean`` (its
neurons and expected incoming synapses, each relative to the per-rank mean):
pymetis exposes METIS with one balance constraint only (ncon = 1), so the two
loads are balanced as one sum; the report gives both imbalances. Edges carry expected
synapse counts between chunks, a proxy of spike traffic at uniform rates:
between two populations, chunk a of one and chunk b of the other share the
population pair's synapses in proportion to the overlap of their relative
positions (a band, so the graph has O(chunks) edges per population pair, not
O(chunks^2)); inside a population, consecutive chunks are linked.

Strategies: ``hierarchical`` (`dtb.partition.hierarchical`: regions to nodes, then ranks), ``metis`` (METIS k-way through pymetis, fixed seed),
``greedy`` (the DTB's balancer: largest chunk first onto the lightest rank, then
swaps until the largest load is below 1.1x the mean), ``contiguous`` (equal
neuron ranges in gid order).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from dtb.errors import ConfigError
from dtb.model.recipe import Recipe
from dtb.partition.partition import Partition, contiguous

#: the partitioners; the first is the default (of the config and of `dtb.Session`)
STRATEGIES = ("hierarchical", "metis", "greedy", "contiguous")
DEFAULT_STRATEGY = STRATEGIES[0]
CHUNKS_PER_RANK = 4


@dataclass(frozen=True)
class Chunks:
    """Population chunks, in gid order.

    Attributes
    ----------
    pop : ndarray, shape (C,), int64
        Population of each chunk.
    start, stop : ndarray, shape (C,), int64
        Gid range of each chunk.
    neurons, synapses : ndarray, shape (C,), int64
        Neurons and expected incoming synapses of each chunk.
    """

    pop: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    neurons: np.ndarray
    synapses: np.ndarray

    def __len__(self) -> int:
        return len(self.pop)


def make_chunks(recipe: Recipe, n_ranks: int, per_rank: int = CHUNKS_PER_RANK) -> Chunks:
    """Cut populations into about ``per_rank * n_ranks`` chunks of similar load."""
    sizes = np.array([p.size for p in recipe.populations], dtype=np.int64)
    syn = recipe.incoming_synapses()
    load = sizes / sizes.sum() + syn / max(syn.sum(), 1.0)
    k = np.minimum(sizes, np.maximum(1, np.ceil(load / load.sum() * per_rank * n_ranks))).astype(np.int64)
    pop = np.repeat(np.arange(len(sizes)), k)
    first = np.repeat(np.cumsum(k) - k, k)
    idx = np.arange(k.sum()) - first  # chunk index inside its population
    kk = k[pop]
    offset = recipe.offsets[pop]
    start = offset + (idx * sizes[pop]) // kk
    stop = offset + ((idx + 1) * sizes[pop]) // kk
    neurons = stop - start
    synapses = np.rint(syn[pop] * neurons / sizes[pop]).astype(np.int64)
    return Chunks(pop=pop, start=start, stop=stop, neurons=neurons, synapses=synapses)


def chunk_graph(recipe: Recipe, ch: Chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected chunk graph as CSR: (xadj, adjncy, edge weights), int64; weights >= 1."""
    syn = recipe.expected_synapses().tocoo()  # row-major, canonical
    n_pop = len(recipe.populations)
    first = np.searchsorted(ch.pop, np.arange(n_pop))
    count = np.bincount(ch.pop, minlength=n_pop)
    sizes = np.array([p.size for p in recipe.populations], dtype=np.float64)
    rel = [(ch.start[first[p]:first[p] + count[p]] - recipe.offsets[p]) / sizes[p] for p in range(n_pop)]
    us, vs, ws = [], [], []
    for i, j, s_ij in zip(syn.row, syn.col, syn.data):
        if s_ij == 0:
            continue
        if i == j:
            if count[i] > 1:
                a = first[i] + np.arange(count[i] - 1)
                us.append(a)
                vs.append(a + 1)
                ws.append(np.full(len(a), s_ij / count[i]))
            continue
        # elementary intervals of the merged relative boundaries of both populations
        bounds = np.union1d(rel[i], rel[j])
        width = np.diff(np.append(bounds, 1.0))
        us.append(first[i] + np.searchsorted(rel[i], bounds, side="right") - 1)
        vs.append(first[j] + np.searchsorted(rel[j], bounds, side="right") - 1)
        ws.append(s_ij * width)
    if not us:
        return np.zeros(len(ch) + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    u, v, w = np.concatenate(us), np.concatenate(vs), np.concatenate(ws)
    u, v = np.concatenate([u, v]), np.concatenate([v, u])
    w = np.concatenate([w, w])
    keep = u != v
    key = u[keep] * len(ch) + v[keep]
    key, inv = np.unique(key, return_inverse=True)
    weight = np.bincount(inv, weights=w[keep])
    scale = 1e6 / max(weight.max(), 1.0)  # METIS wants integers; keep 6 significant digits
    eweights = np.maximum(1, np.rint(weight * scale)).astype(np.int64)
    src, dst = key // len(ch), key % len(ch)
    xadj = np.zeros(len(ch) + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=len(ch)), out=xadj[1:])
    return xadj, dst.astype(np.int64), eweights


def _load(ch: Chunks) -> np.ndarray:
    """Each chunk's share of all neurons plus its share of all synapses, float64 (sums to 2)."""
    return ch.neurons / ch.neurons.sum() + ch.synapses / max(ch.synapses.sum(), 1)


def _from_chunks(ch: Chunks, rank: np.ndarray, n_ranks: int, strategy: str) -> Partition:
    """A Partition from chunk owners, adjacent chunks of one rank merged into one range."""
    new = np.concatenate([[True], rank[1:] != rank[:-1]])
    starts = ch.start[new]
    stops = np.append(starts[1:], ch.stop[-1])
    return Partition(starts=starts.astype(np.int64), stops=stops.astype(np.int64),
                     ranks=rank[new].astype(np.int32), n_ranks=n_ranks, strategy=strategy)


def metis(recipe: Recipe, n_ranks: int, seed: int = 0) -> Partition:
    """METIS k-way partition of the chunk graph (deterministic for a seed)."""
    import pymetis

    ch = make_chunks(recipe, n_ranks)
    if n_ranks == 1:
        return _from_chunks(ch, np.zeros(len(ch), np.int64), 1, "metis")
    xadj, adjncy, eweights = chunk_graph(recipe, ch)
    vweights = np.maximum(1, np.rint(_load(ch) * 1000)).astype(np.int64)
    opts = pymetis.Options(seed=seed, ufactor=30)
    result = pymetis.part_graph(n_ranks, pymetis.CSRAdjacency(xadj, adjncy), vweights=vweights,
                                eweights=eweights, options=opts)
    rank = np.asarray(result.vertex_part, dtype=np.int64)
    # METIS may leave a part empty: give each empty rank a chunk of the most loaded one
    load = np.bincount(rank, weights=vweights, minlength=n_ranks)
    for r in np.flatnonzero(np.bincount(rank, minlength=n_ranks) == 0):
        heavy = np.argsort(-load, kind="stable")
        h = next(h for h in heavy if np.count_nonzero(rank == h) > 1)
        mine = np.flatnonzero(rank == h)
        c = mine[np.argmin(vweights[mine])]
        rank[c] = r
        load[h] -= vweights[c]
        load[r] += vweights[c]
    return _from_chunks(ch, rank, n_ranks, "metis")


def greedy(recipe: Recipe, n_ranks: int, tolerance: float = 1.1, max_rounds: int = 100_000) -> Partition:
    """The DTB's balancer: largest chunks first onto the lightest rank, then swaps.

    Load = neurons / mean + synapses / mean. Chunks are moved (or swapped) from the
    most to the least loaded rank while that lowers the maximum, until the maximum
    is below ``tolerance`` x the mean.
    """
    ch = make_chunks(recipe, n_ranks)
    load = _load(ch) * n_ranks / 2.0  # mean rank load 1
    rank = np.empty(len(ch), np.int64)
    totals = np.zeros(n_ranks)
    heap = [(0.0, r) for r in range(n_ranks)]
    for c in np.argsort(-load, kind="stable"):
        t, r = heapq.heappop(heap)
        rank[c] = r
        totals[r] = t + load[c]
        heapq.heappush(heap, (totals[r], r))
    for _ in range(max_rounds):
        hi, lo = int(np.argmax(totals)), int(np.argmin(totals))
        if totals[hi] < tolerance or hi == lo:
            break
        gap = totals[hi] - totals[lo]
        mine = np.flatnonzero(rank == hi)
        # best move: the chunk whose load is closest to half the gap
        c = mine[np.argmin(np.abs(load[mine] - gap / 2))]
        if load[c] >= gap:
            break
        rank[c] = lo
        totals[hi] -= load[c]
        totals[lo] += load[c]
    return _from_chunks(ch, rank, n_ranks, "greedy")


def partition(recipe: Recipe, n_ranks: int, strategy: str = "metis", seed: int = 0, ranks_per_node: int = 8) -> Partition:
    """The partition of a recipe over ``n_ranks`` ranks by the named strategy (``ranks_per_node``: for
    'hierarchical', `dtb.partition.hierarchical`).

    Raises
    ------
    ConfigError
        Unknown strategy, or more ranks than neurons.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"partition strategy {strategy!r}: must be one of {', '.join(STRATEGIES)}")
    if n_ranks < 1 or n_ranks > recipe.n_neurons:
        raise ConfigError(f"{n_ranks} ranks: must be between 1 and the number of neurons ({recipe.n_neurons})")
    if strategy == "contiguous":
        return contiguous(recipe, n_ranks)
    if strategy == "greedy":
        return greedy(recipe, n_ranks)
    if strategy == "hierarchical":
        from dtb.partition.hierarchical import hierarchical

        return hierarchical(recipe, n_ranks, ranks_per_node, seed)
    return metis(recipe, n_ranks, seed)
