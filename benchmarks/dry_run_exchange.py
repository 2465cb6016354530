"""Traffic of the spike exchange at large P, measured by the dry-run exchange.

One process simulates the whole brain while the dry-run exchange counts, per fake
rank and epoch, the spike records (8 bytes each) and the messages of the flat and
of the two-level exchange. A test checks these counts against real MPI runs.

    python benchmarks/dry_run_exchange.py --neurons 1000000 --ranks 4 64 1024 16384 --t-ms 50
"""

from __future__ import annotations

import argparse

from _common import dtb_run, save, warm_up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, default=1_000_000)
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 64, 1024, 16384])
    ap.add_argument("--t-ms", type=float, default=50.0)
    ap.add_argument("--ranks-per-node", type=int, default=8)
    ap.add_argument("--partition", default="contiguous")
    args = ap.parse_args()
    warm_up("wholebrain")
    rows = []
    for p in args.ranks:
        s = dtb_run([f"wholebrain.n_neurons={args.neurons}", f"simulation.t_ms={args.t_ms}",
                     "simulation.exchange=dry_run", f"simulation.dry_run_ranks={p}",
                     f"simulation.ranks_per_node={args.ranks_per_node}", f"simulation.partition={args.partition}",
                     "recording.spikes=false", "recording.rate_bin_ms=10"], f"dry_run_{p}")
        d = s["dry_run"]
        d.update(rate_hz=s["mean_rate_hz"], n_neurons=s["n_neurons"])
        rows.append(d)
        print(f"P={p:>6}: {d['records_per_rank_epoch']:.1f} records ({d['bytes_per_rank_epoch']:.0f} B) per rank per "
              f"epoch, messages flat {d['messages_flat']:.1f} (max {d['messages_flat_max']:.0f}), two-level "
              f"{d['messages_two_level']:.1f} (max {d['messages_two_level_max']:.0f})", flush=True)
    save("dry_run_exchange", {"t_ms": args.t_ms, "partition": args.partition, "rows": rows})


if __name__ == "__main__":
    main()
