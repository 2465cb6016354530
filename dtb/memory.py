"""The memory model: what a rank's part needs on the host and on a GPU, and the preflight that refuses,
before building, a run whose ranks cannot hold their part.

Host: the peak resident memory of building and running a part on the CPU backend,
from its neuron and synapse counts. The constants are fitted to the peak RSS that
``benchmarks/wholebrain_sizes.py`` measured (1e7 to 4e8 synapses, lif_cond, K = 100)
and round up: 6.2 GiB measured for 4e8 synapses and 4e6 neurons, 6.6 GiB estimated.

Device: `device_bytes`, the same function for the preflight (expected loads of every
rank) and for the device backend's own check (its actual part).
"""

from __future__ import annotations

import math

import numpy as np

from dtb.context import available_bytes, ranks_per_node
from dtb.errors import ResourceError
from dtb.kernels.cpu import MAX_EPOCH_STEPS
from dtb.model.recipe import Recipe
from dtb.network import coded_weights
from dtb.partition import Partition
from dtb.partition.report import population_fractions

BASE_BYTES = 200 * 2**20  # interpreter, numba, MPI
BYTES_PER_SYNAPSE = 14.0  # stored synapse (~7.5) plus build temporaries
BYTES_PER_NEURON = 200.0  # state, gains, input buffers, recording


def rank_loads(recipe: Recipe, partition: Partition) -> tuple[np.ndarray, np.ndarray]:
    """Expected neurons and synapses (by target) on each rank, shapes (n_ranks,), float64."""
    frac = population_fractions(recipe, partition)
    neurons = frac.T @ np.diff(recipe.offsets).astype(np.float64)
    synapses = frac.T @ recipe.incoming_synapses()
    return neurons, synapses


#: host bytes per connected population pair at the peak of partitioning and building: the recipe's projections,
#: the sparse tables of expected and built synapse counts and the partitioners' copies of them (every rank holds
#: them all); fitted to the peak RSS of ensembles of 25 to 200 members (``benchmarks/ensemble_memory.py``:
#: 45 bytes measured, rounded up with room for the transients of other layouts)
POPULATION_PAIR_BYTES = 64


def _size_text(n_bytes: float) -> str:
    """'212.9 GiB' or '46 MiB'."""
    return f"{n_bytes / 2**30:,.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.0f} MiB"


def population_table_bytes(n_pairs: int) -> int:
    """Host bytes every rank pays for ``n_pairs`` connected population pairs (`POPULATION_PAIR_BYTES`)."""
    return POPULATION_PAIR_BYTES * int(n_pairs)


def estimate_bytes(neurons: np.ndarray, synapses: np.ndarray, n_pairs: int = 0) -> np.ndarray:
    """Peak host memory per rank (bytes) for the given loads, with the population tables of ``n_pairs``
    connected population pairs (`Recipe.n_population_pairs`)."""
    return BASE_BYTES + population_table_bytes(n_pairs) + BYTES_PER_SYNAPSE * synapses + \
        BYTES_PER_NEURON * neurons


#: device memory per rank on the GPU backend: CUDA context and pool, and rows and slots per synapse (rounded up)
#: on top of the synapse word (4 bytes, 8 with float32 weights)
DEVICE_BASE_BYTES = 512 * 2**20
DEVICE_ROW_BYTES_PER_SYNAPSE = 2.0
#: device bytes of one neuron's state (v, traces, background, refractory count, gains, stimulus) by model
DEVICE_STATE_BYTES = {"lif_cond": 100, "iaf_psc_exp": 36}


def device_neuron_bytes(neuron_model: str, epoch_steps: int) -> int:
    """Device bytes per neuron: state, gid and population, an epoch's fixed-point input (2 receptors) and room
    in the spike queues (pending and recorded) for one spike."""
    return DEVICE_STATE_BYTES[neuron_model] + 8 + 4 + 16 * epoch_steps + 2 * 24 + 16


def device_bytes(neurons, synapses, *, neuron_model: str, coded_weights: bool, epoch_steps: int):
    """Device memory of a part with ``neurons`` neurons and ``synapses`` synapses (bytes; scalars or arrays).

    Parameters
    ----------
    neurons, synapses : float or ndarray
    neuron_model : str
    coded_weights : bool
        Weights coded into the 4-byte synapse word (else 8 bytes per synapse).
    epoch_steps : int
    """
    per_synapse = (4.0 if coded_weights else 8.0) + DEVICE_ROW_BYTES_PER_SYNAPSE
    return DEVICE_BASE_BYTES + per_synapse * synapses + device_neuron_bytes(neuron_model, epoch_steps) * neurons


def check_total(neurons: float, synapses: float, n_ranks: int, what: str, n_pairs: int = 0) -> None:
    """Before a large recipe is even made or partitioned (an ensemble of many members): a `ResourceError` if even
    a perfectly balanced split of ``neurons`` and ``synapses`` over ``n_ranks`` ranks, with every rank's
    population tables for ``n_pairs`` connected population pairs, exceeds each rank's memory here. Costs nothing
    that grows with the network."""
    need = float(estimate_bytes(neurons / n_ranks, synapses / n_ranks, n_pairs))
    per_rank = available_bytes() / ranks_per_node(n_ranks)
    if need <= per_rank:
        return
    gib = 2**30
    fixed = BASE_BYTES + population_table_bytes(n_pairs)  # what every rank pays, however many there are
    if fixed >= per_rank:
        raise ResourceError(f"not enough memory for {what}: its {n_pairs:,} connected population pairs need "
                            f"population tables of {_size_text(population_table_bytes(n_pairs))} on every "
                            f"rank, which has about {per_rank / gib:.1f} GiB; more ranks do not help: fewer "
                            "populations do (an ensemble: fewer members per job). (simulation.memory_check = false "
                            "skips this check)")
    raise ResourceError(f"not enough memory for {what}: {neurons:,.0f} neurons and {synapses:,.3g} synapses need "
                        f"at least {need / gib:,.1f} GiB on each of {n_ranks} rank(s), which have about "
                        f"{per_rank / gib:.1f} GiB each; about "
                        f"{math.ceil((need - fixed) * n_ranks / (per_rank - fixed)):,} such ranks would do. "
                        "(simulation.memory_check = false skips this check)")


def preflight(recipe: Recipe, partition: Partition, what: str = "this run", device_free: int | None = None,
              compact_weights: bool = True) -> None:
    """A `ResourceError` if the most loaded rank of ``partition`` needs more memory than it has.

    Says how much it needs, how much there is, and how many ranks of this size would do.
    ``device_free`` (bytes free on a rank's GPU) adds the same check for the GPU backend.
    """
    neurons, synapses = rank_loads(recipe, partition)
    if device_free is not None:
        need = device_bytes(neurons, synapses, neuron_model=recipe.neuron_model,
                            coded_weights=coded_weights(recipe, compact_weights),
                            epoch_steps=min(recipe.min_delay_steps, MAX_EPOCH_STEPS))
        r = int(np.argmax(need))
        if need[r] > device_free:
            gib = 2**30
            enough = math.ceil((need.sum() - DEVICE_BASE_BYTES * len(need)) / max(device_free - DEVICE_BASE_BYTES, 1))
            raise ResourceError(f"not enough GPU memory for {what}: rank {r} of {partition.n_ranks} needs about "
                                f"{need[r] / gib:.1f} GiB on its GPU ({neurons[r]:,.0f} neurons, {synapses[r]:,.0f} "
                                f"synapses), which has {device_free / gib:.1f} GiB free; about {enough:,} ranks with "
                                "a GPU like it would do")
    need = estimate_bytes(neurons, synapses, recipe.n_population_pairs)
    local = ranks_per_node(partition.n_ranks)
    per_rank = available_bytes() / local
    if need.max() <= per_rank:
        return
    r = int(np.argmax(need))
    # each rank still pays the base cost and the population tables, so more ranks help only above them
    fixed = BASE_BYTES + population_table_bytes(recipe.n_population_pairs)
    room = per_rank - fixed
    enough = math.ceil((need.sum() - fixed * len(need)) / room) if room > 0 else None
    gib = 2**30
    advice = (f"about {enough:,} ranks with {per_rank / gib:.1f} GiB each would do (e.g. {math.ceil(enough / local):,} "
              f"nodes like this one)" if enough else "not even one rank fits beside the others on this node")
    raise ResourceError(f"not enough memory for {what}: rank {r} of {partition.n_ranks} needs about "
                        f"{need[r] / gib:.1f} GiB ({neurons[r]:,.0f} neurons, {synapses[r]:,.0f} synapses), but "
                        f"each of the {local} rank(s) on this node has about {per_rank / gib:.1f} GiB; {advice}. "
                        "(simulation.memory_check = false skips this check)")
