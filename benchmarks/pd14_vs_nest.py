"""PD14 side by side: dtb and NEST 3.x on the same network, in one invocation.

Both simulate PD14 (Poisson drive, spikes recorded) with the same thread count,
each in a fresh process so that peak RSS is its own. Reports build time,
simulation time and peak RSS of both, and dtb/NEST ratios (targets: simulation
<= 0.5, build <= 0.2, peak RSS <= 0.3). Needs ``pip install nest-simulator``.

    python benchmarks/pd14_vs_nest.py --n-scale 0.1 --k-scale 1.0 --t-ms 1000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys

from _common import warm_up, HERE, dtb_run, measure, save


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-scale", type=float, default=0.1)
    ap.add_argument("--k-scale", type=float, default=1.0)
    ap.add_argument("--t-ms", type=float, default=1000.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warm_up("pd14")
    text, nest_wall, nest_rss = measure([sys.executable, str(HERE / "nest_pd14.py"), "--n-scale", str(args.n_scale),
                                         "--k-scale", str(args.k_scale), "--t-ms", str(args.t_ms), "--threads",
                                         str(args.threads), "--seed", str(args.seed), "--record"])
    nest = json.loads(text.strip().splitlines()[-1])
    nest.update(peak_rss_mb=nest_rss, wall_s=nest_wall)
    dtb = dtb_run(["model=pd14", f"pd14.n_scale={args.n_scale}", f"pd14.k_scale={args.k_scale}",
                   f"simulation.t_ms={args.t_ms}", f"simulation.seed={args.seed}",
                   f"simulation.threads={args.threads}"],
                  "pd14_vs_nest")
    ratios = {"sim": dtb["sim_s"] / nest["sim_s"], "build": dtb["build_s"] / nest["build_s"],
              "peak_rss": dtb["peak_rss_mb"] / nest["peak_rss_mb"]}
    targets = {"sim": 0.5, "build": 0.2, "peak_rss": 0.3}
    for k in ratios:
        print(f"{k:8s} dtb/NEST = {ratios[k]:.3f} (target <= {targets[k]})")
    save(f"pd14_vs_nest_n{args.n_scale:g}_k{args.k_scale:g}",
         {"n_scale": args.n_scale, "k_scale": args.k_scale, "t_ms": args.t_ms, "threads": args.threads,
          "nest": nest, "dtb": dtb, "ratios": ratios, "targets": targets,
          "met": {k: ratios[k] <= targets[k] for k in ratios}})


if __name__ == "__main__":
    main()
