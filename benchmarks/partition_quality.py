"""Partition quality on the bundled HCP brain: metis vs greedy vs contiguous.

Imbalance (max/mean) of neurons and synapses, cut fraction, spike records and
messages per rank per epoch (flat and two-level), and the time to partition,
all from `dtb.partition.quality` (analytic; nothing is built).

    python benchmarks/partition_quality.py --neurons 1000000 100000000 --ranks 4 64 1024 16384
"""

from __future__ import annotations

import argparse
import time

from _common import save

from dtb.config import load_config
from dtb.model.registry import network_from_config
from dtb.partition import STRATEGIES, partition, quality


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, nargs="+", default=[1_000_000, 100_000_000])
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 64, 1024, 16384])
    ap.add_argument("--ranks-per-node", type=int, default=8)
    ap.add_argument("--rate-hz", type=float, default=5.0)
    args = ap.parse_args()
    rows = []
    for n in args.neurons:
        recipe = network_from_config(load_config(overrides=[f"wholebrain.n_neurons={n}"])).recipe()
        for p in args.ranks:
            for strategy in STRATEGIES:
                t0 = time.perf_counter()
                part = partition(recipe, p, strategy)
                seconds = time.perf_counter() - t0
                q = quality(recipe, part, rate_hz=args.rate_hz, ranks_per_node=args.ranks_per_node)
                q.update(n_neurons=n, partition_s=seconds)
                rows.append(q)
                print(f"{n:>11,} neurons P={p:>6} {strategy:10s} imb n {q['imbalance_neurons']:.3f} "
                      f"s {q['imbalance_synapses']:.3f} cut {q['cut_fraction']:.3f} msgs flat "
                      f"{q['messages_flat']:.1f} 2-level {q['messages_two_level']:.1f} ({seconds:.1f} s)", flush=True)
    save("partition_quality", {"ranks_per_node": args.ranks_per_node, "rate_hz": args.rate_hz, "rows": rows})


if __name__ == "__main__":
    main()
