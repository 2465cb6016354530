"""The Recipe: a network described by populations and projections, never by synapses.

A recipe is small (it scales with the number of populations, not neurons) and is
the same on every rank; `dtb.network.build_local` turns the part of it a rank owns
into synapses. Gids are canonical: population ``p`` holds gids
``offsets[p] .. offsets[p + 1] - 1`` whatever the partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse

from dtb.model.neurons import LifCond

#: largest spacing of the weight grid, relative to the smallest mean weight, at which weights are coded
WEIGHT_GRID_REL = 1e-3
#: the minimum delay of a network without synapses (steps): no epoch is ever that long
NO_DELAY_STEPS = 1 << 16


@dataclass(frozen=True)
class Population:
    """A homogeneous group of neurons: one neuron model with its parameters, and its external drive.

    Attributes
    ----------
    name : str
    size : int
        Number of neurons.
    excitatory : bool
        Whether its synapses target the excitatory receptors.
    region : int
        Index into ``Recipe.regions`` (the layer for PD14).
    neuron : LifCond or IafPscExp
        Neuron model and parameters (`dtb.model.neurons`); one model per network.
    v0_mean_mv, v0_sd_mv : float
        Initial membrane potential, normal.
    drive_rate_hz : float
        Total rate of the independent Poisson spikes each neuron receives from outside (Hz); 0: none.
    drive_weight : float
        Weight of one external spike (excitatory receptors; pA for iaf_psc_exp, trace jump for lif_cond).
    """

    name: str
    size: int
    excitatory: bool
    region: int
    neuron: object = field(default_factory=LifCond)
    v0_mean_mv: float = -60.0
    v0_sd_mv: float = 4.0
    drive_rate_hz: float = 0.0
    drive_weight: float = 0.0


@dataclass(frozen=True)
class Projection:
    """Synapses onto one target population from one or more source populations.

    Exactly one of ``indegree`` (every target neuron gets that many synapses) and
    ``total`` (that many synapses, targets drawn uniformly) is non-zero. Each
    synapse picks its source population with probability ``source_p`` and a source
    neuron uniformly inside it (multapses and autapses allowed).

    Attributes
    ----------
    target : int
        Target population index.
    sources : ndarray, shape (S,), int64
        Source population indices.
    source_p : ndarray, shape (S,), float64
        Probability of each source population; sums to 1.
    indegree, total : int
    weight_mean, weight_sd : float
        Normal weight distribution, redrawn to keep the sign of the mean (model units:
        pA for iaf_psc_exp, trace jump for lif_cond). ``weight_sd`` 0: constant.
    delay_ms : ndarray, shape (S,), float64
        Mean delay from each source population (ms).
    delay_sd_ms : float
        Normal delay spread (ms), redrawn outside [one step, mean + 8 sd]; 0: constant delays.
    """

    target: int
    sources: np.ndarray
    source_p: np.ndarray
    indegree: int = 0
    total: int = 0
    weight_mean: float = 0.0
    weight_sd: float = 0.0
    delay_ms: np.ndarray = field(default_factory=lambda: np.zeros(1))
    delay_sd_ms: float = 0.0

    def min_delay_steps(self, dt_ms: float) -> int:
        """Smallest delay (in steps) any synapse of this projection can have."""
        if self.delay_sd_ms > 0:
            return 1
        return int(max(1, np.round(self.delay_ms / dt_ms).min()))

    def max_delay_steps_bound(self, dt_ms: float) -> int:
        """The largest delay (steps) a synapse of this projection can have."""
        return int(max(1, np.round((self.delay_ms.max() + 8.0 * self.delay_sd_ms) / dt_ms)))


@dataclass(frozen=True)
class Recipe:
    """A whole network: populations (with their neurons and drive) and projections.

    Neuron models stay parameter objects here; a backend turns them into the kernels'
    table for ``dt_ms`` when it prepares a simulation (`dtb.model.neurons.kernel_table`).

    Attributes
    ----------
    model : str
        Network name (a key of `dtb.model.registry.MODELS`, or the user's own).
    populations : tuple of Population
    projections : tuple of Projection
    regions : tuple of str
        Region (or layer) names that ``Population.region`` indexes.
    dt_ms : float
        Time step the delays are rounded to (ms).
    """

    model: str
    populations: tuple
    projections: tuple
    regions: tuple
    dt_ms: float

    @property
    def neuron_model(self) -> str:
        """'lif_cond' or 'iaf_psc_exp': the model of every population."""
        return self.populations[0].neuron.model

    def fingerprint(self) -> str:
        """A digest of everything that defines the network (populations with their neurons and drive,
        projections, regions, time step): equal fingerprints build equal networks from the same seed."""
        import hashlib

        h = hashlib.sha256(repr((self.model, self.populations, self.regions, self.dt_ms)).encode())
        for q in self.projections:
            h.update(repr((q.target, q.indegree, q.total, q.weight_mean, q.weight_sd, q.delay_sd_ms)).encode())
            for a in (q.sources, q.source_p, q.delay_ms):
                h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()[:32]

    @property
    def offsets(self) -> np.ndarray:
        """First gid of each population plus the total, shape (n_populations + 1,), int64."""
        return np.concatenate([[0], np.cumsum([p.size for p in self.populations])]).astype(np.int64)

    @property
    def n_neurons(self) -> int:
        return int(sum(p.size for p in self.populations))

    @property
    def min_delay_steps(self) -> int:
        """Smallest synaptic delay in the network (steps): the longest allowed epoch (unbounded without
        projections: `NO_DELAY_STEPS`)."""
        return min((p.min_delay_steps(self.dt_ms) for p in self.projections), default=NO_DELAY_STEPS)

    def weight_table(self, code_bits: int) -> tuple[np.ndarray, bool] | None:
        """The weights a synapse's ``code_bits``-bit code can stand for, or None if they cannot be coded.

        Exact: when every projection's weight is constant and the distinct weights fit
        ``2**code_bits`` codes, the table of the distinct weights. Grid: otherwise
        ``2**code_bits`` evenly spaced weights over every projection's mean +- 7 s.d. (sign kept),
        when their spacing is at most ``WEIGHT_GRID_REL`` of the smallest non-zero mean
        |weight|: each weight is then rounded to the nearest grid point (an error of at most
        half the spacing) and clipped to the range (probability 2.6e-12 per synapse).

        Returns
        -------
        (table, exact) : (ndarray, shape (n_weights,), float32, increasing; bool), or None
        """
        if code_bits < 1:
            return None
        means = np.array([p.weight_mean for p in self.projections])
        sds = np.array([p.weight_sd for p in self.projections])
        if not sds.any():
            table = np.unique(means.astype(np.float32))
            return (table, True) if len(table) <= 2**code_bits else None
        lo = np.where(means >= 0, np.maximum(0.0, means - 7 * sds), means - 7 * sds).min()
        hi = np.where(means >= 0, means + 7 * sds, np.minimum(0.0, means + 7 * sds)).max()
        step = (hi - lo) / (2**code_bits - 1)
        smallest = np.abs(means[means != 0]).min() if means.any() else 0.0
        if step > WEIGHT_GRID_REL * smallest:
            return None
        return (lo + step * np.arange(2**code_bits)).astype(np.float32), False

    @property
    def n_population_pairs(self) -> int:
        """Population pairs the projections name (at least the stored pairs of `expected_synapses`): what the
        sparse population tables grow with."""
        return int(sum(len(q.sources) for q in self.projections))

    def incoming_synapses(self) -> np.ndarray:
        """Expected synapses onto each population, shape (n_pop,), float64 (memory linear in populations)."""
        out = np.zeros(len(self.populations))
        for proj in self.projections:
            out[proj.target] += proj.total if proj.total else proj.indegree * self.populations[proj.target].size
        return out

    def expected_synapses(self) -> scipy.sparse.csr_array:
        """Expected synapse counts between populations [target, source], sparse: memory scales with the
        connected population pairs, not their square (an ensemble's members are disjoint).

        Returns
        -------
        scipy.sparse.csr_array, shape (n_pop, n_pop), float64
            Canonical (sorted indices, duplicates summed); a pair some projection names with probability 0 is
            stored as an explicit 0, so the pattern holds every pair a synapse can join.
        """
        n = len(self.populations)
        rows, cols, vals = [], [], []
        for proj in self.projections:
            count = proj.total if proj.total else proj.indegree * self.populations[proj.target].size
            rows.append(np.full(len(proj.sources), proj.target, dtype=np.int64))
            cols.append(np.asarray(proj.sources, dtype=np.int64))
            vals.append(count * np.asarray(proj.source_p, dtype=np.float64))
        if not rows:
            return scipy.sparse.csr_array((n, n))
        out = scipy.sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                     shape=(n, n))
        out.sum_duplicates()
        return out

    def replicate(self, members: int) -> "Recipe":
        """``members`` disjoint copies of this network in one recipe (an assimilation ensemble): `stack`."""
        return Recipe.stack([self] * members)

    @staticmethod
    def stack(members: list["Recipe"]) -> "Recipe":
        """Disjoint networks of the same layout (populations, regions, projections; their parameters may
        differ) in one recipe: an ensemble whose members may differ in, say, the global coupling.

        Member ``e`` holds populations ``e * P .. (e + 1) * P - 1`` named ``m<e>/<name>``
        and regions ``e * R .. (e + 1) * R - 1``; its gids are offset by ``e`` times the
        network size, so its synapses, initial state and noise are draws of its own.

        Returns
        -------
        Recipe

        Raises
        ------
        ValueError
            When the members differ in layout, model or time step.
        """
        first = members[0]
        n_pop, n_reg = len(first.populations), len(first.regions)
        for m in members[1:]:
            if (m.model, m.dt_ms, m.regions, len(m.populations), len(m.projections)) != \
                    (first.model, first.dt_ms, first.regions, n_pop, len(first.projections)):
                raise ValueError("Recipe.stack: the members differ in model, time step, regions or layout")
        pops = tuple(replace(p, name=f"m{e}/{p.name}", region=e * n_reg + p.region)
                     for e, m in enumerate(members) for p in m.populations)
        projs = tuple(replace(q, target=q.target + e * n_pop, sources=q.sources + e * n_pop)
                      for e, m in enumerate(members) for q in m.projections)
        return replace(first, populations=pops, projections=projs,
                       regions=tuple(f"m{e}/{r}" for e in range(len(members)) for r in first.regions))
