"""The default whole-brain run at several sizes: build time, RTF, peak RSS, bytes per synapse.

    python benchmarks/wholebrain_sizes.py --sizes 100000 1000000 4000000 --t-ms 1000 300 150
    python benchmarks/wholebrain_sizes.py --backend gpu --sizes 20000000 --t-ms 1000 --in-degree 500   # one H100
"""

from __future__ import annotations

import argparse

from _common import warm_up, dtb_run, save


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    ap.add_argument("--t-ms", type=float, nargs="+", default=[1000.0, 300.0, 150.0],
                    help="biological time per size (bigger networks run shorter)")
    ap.add_argument("--in-degree", type=int, default=100)
    ap.add_argument("--backend", default="cpu", choices=("cpu", "gpu", "gpu_emulated"))
    args = ap.parse_args()
    suffix = "" if args.backend == "cpu" else f"_{args.backend}"
    warm_up("wholebrain", args.backend)
    runs = []
    # on a GPU, one launch per kernel so that phase_s splits delivery from update (whole-brain epochs are
    # 10 steps of millions of neurons: launches are not what costs there)
    graphs = [] if args.backend == "cpu" else ["simulation.cuda_graphs=false"]
    for n, t in zip(args.sizes, args.t_ms):
        s = dtb_run([f"wholebrain.n_neurons={n}", f"wholebrain.in_degree={args.in_degree}", f"simulation.t_ms={t}",
                     "recording.rate_bin_ms=10", f"simulation.backend={args.backend}", *graphs],
                    f"wholebrain_{n}{suffix}")
        print(f"{n:>10,} neurons: build {s['build_s']:.1f} s, RTF {s['rtf']:.1f}, RSS {s['peak_rss_mb']:.0f} MiB, "
              f"{s['bytes_per_synapse']:.2f} B/syn, E {s['rate_e_hz']:.2f} Hz, I {s['rate_i_hz']:.2f} Hz; time split "
              "(s) " + ", ".join(f"{k} {v:.1f}" for k, v in s["phase_s"].items()), flush=True)
        runs.append(s)
    save(f"wholebrain_sizes{suffix}", {"in_degree": args.in_degree, "backend": args.backend, "runs": runs})


if __name__ == "__main__":
    main()
