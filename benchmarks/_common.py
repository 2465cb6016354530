"""Shared helpers of the benchmark scripts: machine facts, timed subprocess runs, JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = HERE / "out"


def machine() -> dict:
    """CPU model, cores, memory and software versions of this machine."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines()
                          if x.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        mem_kb = 0
    import numba

    from dtb.session import version

    from dtb.kernels.gpu import gpu_usable

    gpu = None
    if gpu_usable()[0]:
        import cupy

        gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_gib": round(mem_kb / 2**20, 1), "gpu": gpu,
            "python": platform.python_version(), "numba": numba.__version__, "dtb": version(),
            "date": time.strftime("%Y-%m-%d"),
            # above the benchmark's own threads, other work shared the cores and its timings are slower
            "load_avg_15min": round(os.getloadavg()[2], 2)}


def measure(cmd: list[str]) -> tuple[str, float, float]:
    """Run a command in a fresh process; return its stdout, wall seconds and peak RSS (MiB)."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return text, wall, usage.ru_maxrss / 1024


def dtb_run(overrides: list[str], name: str, discard_ms: float = 0.0) -> dict:
    """Run ``dtb run`` in a fresh process; return its summary, peak RSS and rates after ``discard_ms``.

    The run file goes to ``benchmarks/out/<name>.h5`` (not kept in git).
    """
    OUT.mkdir(exist_ok=True)
    out = OUT / f"{name}.h5"
    _, wall, rss = measure([sys.executable, "-m", "dtb", "run", "--out", str(out), "--overwrite", "--quiet",
                            *[x for o in overrides for x in ("--set", o)]])
    with h5py.File(out, "r") as f:
        summary = json.loads(f["summary"][()])
        pop = f["rates/population_hz"]
        first = int(round(discard_ms / pop.attrs["bin_ms"]))
        rates = pop[first:].mean(axis=0)
        names = f["network/populations/name"].asstr()[()]
    summary.pop("rates_hz", None)
    summary.update(peak_rss_mb=rss, wall_s=wall, discard_ms=discard_ms,
                   rates_after_discard_hz=dict(zip(names, np.asarray(rates, dtype=float).tolist())))
    return summary


def warm_up(model: str, backend: str = "cpu") -> None:
    """Run a tiny job of ``model`` so that the kernels (numba's or CUDA's) are compiled before anything is timed."""
    OUT.mkdir(exist_ok=True)
    small = {"pd14": ["model=pd14", "pd14.n_scale=0.01", "pd14.k_scale=0.01", "simulation.t_ms=5"],
             "wholebrain": ["wholebrain.n_neurons=2000", "wholebrain.in_degree=10", "simulation.t_ms=5"]}[model]
    measure([sys.executable, "-m", "dtb", "run", "--out", str(OUT / f"warmup_{model}.h5"), "--overwrite", "--quiet",
             "--set", f"simulation.backend={backend}", *[x for o in small for x in ("--set", o)]])


def save(name: str, data: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine facts added."""
    RESULTS.mkdir(exist_ok=True)
    data = {"benchmark": name, "machine": machine(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    print(f"wrote {path}")
    return path
