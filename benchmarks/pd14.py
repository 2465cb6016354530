"""PD14 with dtb at any scale: build time, RTF, peak RSS, bytes per synapse, per-population rates.

At full scale it also checks the rates (mean over seeds, first ``--discard-ms``
dropped) against the NEST column of shared/reference/pd14.md: within 10 %.

    python benchmarks/pd14.py --n-scale 1.0 --seeds 1 2 3 --t-ms 5500 --discard-ms 500   # the full-scale check
    python benchmarks/pd14.py --n-scale 0.1 --seeds 1 --t-ms 1000
    python benchmarks/pd14.py --backend gpu --seeds 1 --t-ms 10000 --discard-ms 500   # the GPU target (an H100)
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import warm_up, dtb_run, save

from dtb.connectome.pd14 import FULL_RATES_HZ, NAMES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-scale", type=float, default=1.0)
    ap.add_argument("--k-scale", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--t-ms", type=float, default=5500.0)
    ap.add_argument("--discard-ms", type=float, default=500.0)
    ap.add_argument("--background", default="poisson", choices=("poisson", "dc"))
    ap.add_argument("--no-spikes", action="store_true", help="recording of spikes off (rates still binned)")
    ap.add_argument("--backend", default="cpu", choices=("cpu", "gpu", "gpu_emulated"))
    ap.add_argument("--no-graphs", action="store_true",
                    help="GPU: one launch per kernel instead of CUDA graphs, so that the time split shows delivery")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    warm_up("pd14", args.backend)
    suffix = ("" if args.backend == "cpu" else f"_{args.backend}") + ("_launches" if args.no_graphs else "")
    name = args.name or f"pd14_n{args.n_scale:g}_k{args.k_scale:g}{suffix}"
    runs = []
    for seed in args.seeds:
        s = dtb_run(["model=pd14", f"pd14.n_scale={args.n_scale}", f"pd14.k_scale={args.k_scale}",
                     f"pd14.background={args.background}", f"simulation.t_ms={args.t_ms}", f"simulation.seed={seed}",
                     f"recording.spikes={'false' if args.no_spikes else 'true'}", "recording.rate_bin_ms=1.0",
                     f"simulation.backend={args.backend}",
                     *(["simulation.cuda_graphs=false"] if args.no_graphs else [])],
                    f"{name}_s{seed}", discard_ms=args.discard_ms)
        print(f"seed {seed}: build {s['build_s']:.2f} s, RTF {s['rtf']:.2f}, RSS {s['peak_rss_mb']:.0f} MiB, "
              f"{s['bytes_per_synapse']:.2f} B/syn, time split (s) "
              + ", ".join(f"{k} {v:.2f}" for k, v in s["phase_s"].items()), flush=True)
        runs.append(s)
    rates = np.array([[r["rates_after_discard_hz"][n] for n in NAMES] for r in runs])
    mean = rates.mean(axis=0)
    rel = (mean - FULL_RATES_HZ) / FULL_RATES_HZ
    result = {"n_scale": args.n_scale, "k_scale": args.k_scale, "seeds": args.seeds, "t_ms": args.t_ms,
              "backend": args.backend, "cuda_graphs": not args.no_graphs,
              "background": args.background, "record_spikes": not args.no_spikes, "runs": runs,
              "mean_rates_hz": dict(zip(NAMES, mean.tolist())),
              "build_s": float(np.mean([r["build_s"] for r in runs])),
              "rtf": float(np.mean([r["rtf"] for r in runs])),
              "peak_rss_mb": float(np.max([r["peak_rss_mb"] for r in runs])),
              "bytes_per_synapse": runs[0]["bytes_per_synapse"], "n_synapses": runs[0]["n_synapses"]}
    if args.n_scale == 1.0 and args.k_scale == 1.0:
        result["nest_reference_hz"] = dict(zip(NAMES, FULL_RATES_HZ.tolist()))
        result["relative_error"] = dict(zip(NAMES, rel.tolist()))
        result["within_10_percent"] = bool(np.all(np.abs(rel) <= 0.10))
        for n, m, r, e in zip(NAMES, mean, FULL_RATES_HZ, rel):
            print(f"{n:5s} dtb {m:6.3f} Hz  NEST {r:6.3f} Hz  {100 * e:+6.1f} %")
    save(name, result)


if __name__ == "__main__":
    main()
