"""Partition quality on the bundled HCP brain: every strategy, side by side in one run.

Imbalance (max/mean) of neurons, synapses and input spikes, cut fraction, spike records
sent (mean and worst rank) and across nodes (beside the floor no partition within 3 % of balance goes
below, `dtb.partition.cross_node_lower_bound`), messages per rank per epoch (flat and
two-level), and the time and peak memory (Python and NumPy allocations, traced with
tracemalloc, which slows the allocation-heavy strategies) of the partitioning on one
core, all from `dtb.partition.quality` (analytic; nothing is built;
`tests/unit/partition` checks it against a run's dry-run exchange).

    python benchmarks/partition_quality.py --neurons 1000000 100000000 1000000000 --ranks 64 1024 16384
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from _common import save

from dtb.config import load_config
from dtb.model.registry import network_from_config
from dtb.partition import STRATEGIES, cross_node_lower_bound, partition, quality


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, nargs="+", default=[1_000_000, 100_000_000, 1_000_000_000])
    ap.add_argument("--ranks", type=int, nargs="+", default=[64, 1024, 16384])
    ap.add_argument("--ranks-per-node", type=int, default=8)
    ap.add_argument("--rate-hz", type=float, default=5.0)
    args = ap.parse_args()
    rows = []
    for n in args.neurons:
        recipe = network_from_config(load_config(overrides=[f"wholebrain.n_neurons={n}"])).recipe()
        for p in args.ranks:
            # what no partition within 3 % of balance goes below (the same model)
            bound = cross_node_lower_bound(recipe, p, rate_hz=args.rate_hz, ranks_per_node=args.ranks_per_node)
            for strategy in STRATEGIES:
                tracemalloc.start()
                t0 = time.perf_counter()
                part = partition(recipe, p, strategy, ranks_per_node=args.ranks_per_node)
                seconds = time.perf_counter() - t0
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                q = quality(recipe, part, rate_hz=args.rate_hz, ranks_per_node=args.ranks_per_node)
                q.update(n_neurons=n, partition_s=seconds, partition_peak_mib=peak / 2**20,
                         cross_node_spikes_lower_bound=bound)
                rows.append(q)
                print(f"{n:>11,} neurons P={p:>6} {strategy:12s} imb n {q['imbalance_neurons']:.3f} "
                      f"s {q['imbalance_synapses']:.3f} cut {q['cut_fraction']:.3f} sent "
                      f"{q['spikes_sent_per_rank_epoch']:.1f} (max {q['spikes_sent_per_rank_epoch_max']:.1f}) "
                      f"cross-node {q['cross_node_spikes_per_rank_epoch']:.1f} (floor {bound:.1f}) 2-level "
                      f"{q['messages_two_level']:.1f} ({seconds:.2f} s, {peak / 2**20:.0f} MiB)", flush=True)
    save("partition_quality", {"ranks_per_node": args.ranks_per_node, "rate_hz": args.rate_hz, "rows": rows})


if __name__ == "__main__":
    main()
