"""The same runs on this checkout and on an earlier commit, interleaved in one invocation: build time, RTF, RSS.

Checks that a refactor costs nothing in the step loop or the build. The earlier commit is
checked out into ``benchmarks/out/base-<commit>`` (a git worktree) and run with the same
Python and packages (``PYTHONPATH`` points at it); each run is a fresh ``dtb run`` process,
and the versions alternate so that a drift of the machine's speed hits both alike.

    python benchmarks/refactor_regression.py --base 1464509 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
from _common import HERE, OUT, save

ROOT = HERE.parent
CASES = {
    # the dtb side of pd14_vs_nest.py, and the first two sizes of wholebrain_sizes.py
    "pd14_n0.1_k1_1s": ["model=pd14", "pd14.n_scale=0.1", "pd14.k_scale=1.0", "simulation.t_ms=1000",
                        "simulation.threads=2"],
    "wholebrain_1e5_1s": ["wholebrain.n_neurons=100000", "simulation.t_ms=1000", "recording.rate_bin_ms=10"],
    "wholebrain_1e6_0.3s": ["wholebrain.n_neurons=1000000", "simulation.t_ms=300", "recording.rate_bin_ms=10"],
}


def checkout(commit: str) -> Path:
    """A worktree of ``commit`` under benchmarks/out (made once)."""
    path = OUT / f"base-{commit}"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                       capture_output=True)
    return path


#: the whole-brain case through the Python API (dtb.wholebrain + dtb.Session), as a user script would run it
API_SCRIPT = """
import sys, dtb
net = dtb.wholebrain(n_neurons=100_000)
with dtb.Session(net, out=sys.argv[1], overwrite=True, progress=False) as s:
    s.record(rate_bin_ms=10.0)
    s.run(1000.0)
"""


def run(source: Path, overrides: list[str] | None, name: str) -> dict:
    """``dtb run`` from the package in ``source`` (None overrides: `API_SCRIPT`), in a fresh process: its
    summary and peak RSS (MiB)."""
    out = OUT / f"regression_{name}.h5"
    env = dict(os.environ, PYTHONPATH=str(source))
    if overrides is None:
        cmd = [sys.executable, "-c", API_SCRIPT, str(out)]
    else:
        cmd = [sys.executable, "-c", "import sys, dtb, dtb.cli; assert dtb.__file__.startswith(sys.argv[1]); "
               "sys.exit(dtb.cli.main(sys.argv[2:]))", str(source), "run", "--out", str(out), "--overwrite",
               "--quiet", *[x for o in overrides for x in ("--set", o)]]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{source}: {name} failed: {err.read().decode()[-2000:]}")
    with h5py.File(out) as f:
        s = json.loads(f["summary"][()])
    return dict(build_s=s["build_s"], sim_s=s["sim_s"], rtf=s["rtf"], n_spikes=s["n_spikes"],
                peak_rss_mb=usage.ru_maxrss / 1024, wall_s=time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="1464509", help="the earlier commit (default: the one before the Session)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    sources = {"base": checkout(args.base), "new": ROOT}
    for label, src in sources.items():  # compile the numba kernels of both before timing
        run(src, ["wholebrain.n_neurons=2000", "wholebrain.in_degree=10", "simulation.t_ms=5"], f"warm_{label}")
        run(src, ["model=pd14", "pd14.n_scale=0.01", "pd14.k_scale=0.01", "simulation.t_ms=5"], f"warm_{label}")
    results = {}
    for case in args.cases:
        runs = {"base": [], "new": []}
        api = case == "wholebrain_1e5_1s"  # the same network through the Python API, beside the CLI
        if api:
            runs["new_api"] = []
        for _ in range(args.repeats):
            for label, src in sources.items():
                runs[label].append(run(src, CASES[case], f"{case}_{label}"))
            if api:
                runs["new_api"].append(run(ROOT, None, f"{case}_api"))
        med = {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for label, rs in runs.items()}
        ratio = {k: med["new"][k] / med["base"][k] for k in ("build_s", "sim_s", "peak_rss_mb")}
        if api:
            ratio["api_sim_s_over_cli"] = med["new_api"]["sim_s"] / med["new"]["sim_s"]
        same = all(a["n_spikes"] == b["n_spikes"] for a, b in zip(runs["base"], runs["new"]))
        results[case] = dict(overrides=CASES[case], runs=runs, median=med, ratio_new_over_base=ratio,
                             same_spike_count=same)
        print(f"{case}: build {med['base']['build_s']:.2f} -> {med['new']['build_s']:.2f} s "
              f"({ratio['build_s']:.3f}), sim {med['base']['sim_s']:.2f} -> {med['new']['sim_s']:.2f} s "
              f"({ratio['sim_s']:.3f}), RSS {med['base']['peak_rss_mb']:.0f} -> {med['new']['peak_rss_mb']:.0f} MiB "
              f"({ratio['peak_rss_mb']:.3f}), same spike count: {same}"
              + (f"; API sim {med['new_api']['sim_s']:.2f} s ({ratio['api_sim_s_over_cli']:.3f} of the CLI's)"
                 if api else ""), flush=True)
    save("refactor_regression", dict(base=args.base, repeats=args.repeats, cases=results))


if __name__ == "__main__":
    main()
