"""Strong and weak scaling of the whole-brain run over MPI ranks.

Strong: a fixed network on 1, 2, 4 ranks. Weak: a fixed number of neurons per
rank. Each run is ``mpiexec -n P python -m mpi4py -m dtb run`` with one thread
per rank; reports build time, simulation time, RTF, synapses and peak RSS of the
largest rank. On a machine with fewer cores than ranks the ranks share cores:
the table states the core count.

    python benchmarks/scaling.py --ranks 1 2 4 --strong-neurons 200000 --weak-neurons 50000 --t-ms 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import h5py
from _common import OUT, measure, save, warm_up


def run(n_ranks: int, overrides: list[str], name: str) -> dict:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    out = OUT / f"{name}.h5"
    _, wall, _ = measure([mpiexec, "-n", str(n_ranks), sys.executable, "-m", "mpi4py", "-m", "dtb", "run", "--quiet",
                          "--overwrite", "--out", str(out), *[x for o in overrides for x in ("--set", o)]])
    with h5py.File(out, "r") as f:
        s = json.loads(f["summary"][()])
    s.pop("rates_hz", None)
    s["wall_s"] = wall
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--strong-neurons", type=int, default=200_000)
    ap.add_argument("--weak-neurons", type=int, default=50_000, help="neurons per rank")
    ap.add_argument("--t-ms", type=float, default=300.0)
    ap.add_argument("--exchange", default="alltoall")
    args = ap.parse_args()
    warm_up("wholebrain")
    rows = []
    for kind, per_rank in (("strong", False), ("weak", True)):
        for p in args.ranks:
            n = args.weak_neurons * p if per_rank else args.strong_neurons
            s = run(p, [f"wholebrain.n_neurons={n}", f"simulation.t_ms={args.t_ms}", "simulation.threads=1",
                        f"simulation.exchange={args.exchange}"], f"scaling_{kind}_{p}")
            s["kind"] = kind
            rows.append(s)
            print(f"{kind:6s} P={p} neurons {n:>9,}: build {s['build_s']:.2f} s, sim {s['sim_s']:.2f} s "
                  f"(RTF {s['rtf']:.1f}), synapses/rank max {s['synapses_per_rank_max']:,}, "
                  f"peak RSS/rank {s['peak_rss_mb_per_rank']:.0f} MiB", flush=True)
    save("scaling", {"t_ms": args.t_ms, "exchange": args.exchange, "cores": len(os.sched_getaffinity(0)),
                     "rows": rows})


if __name__ == "__main__":
    main()
