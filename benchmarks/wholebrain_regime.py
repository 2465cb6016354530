"""The firing regime of the default whole brain: region rates, irregularity, synchrony.

Runs the default configuration (bundled HCP brain) and, after ``--discard-ms``,
reports the range of region rates, the median ISI coefficient of variation, and
the coefficient of variation of the network spike count in 5 ms bins next to what
independent Poisson neurons at the same rate would give.

    python benchmarks/wholebrain_regime.py --t-ms 3000 --discard-ms 1000
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np
from _common import OUT, dtb_run, save, warm_up


def regime(path, discard_ms: float) -> dict:
    """Region rates, ISI CV and network-rate CV of a whole-brain run file."""
    with h5py.File(path, "r") as f:
        t = f["spikes/wholebrain/timestamps"][()]
        gid = f["spikes/wholebrain/node_ids"][()].astype(np.int64)
        first = f["network/populations/first_gid"][()]
        sizes = f["network/populations/size"][()]
        region = f["network/populations/region"][()]
        t_ms = float(f.attrs["t_ms"])
    keep = t >= discard_ms
    t, gid = t[keep], gid[keep]
    dur_s = (t_ms - discard_ms) * 1e-3
    pop = np.searchsorted(first, gid, side="right") - 1
    n_regions = region.max() + 1
    region_rates = (np.bincount(region[pop], minlength=n_regions)
                    / np.bincount(region, weights=sizes, minlength=n_regions) / dur_s)
    order = np.lexsort((t, gid))
    g, s = gid[order], t[order]
    same = np.diff(g) == 0
    isi, owner = np.diff(s)[same], g[1:][same]
    n = np.bincount(owner)
    mean = np.bincount(owner, isi) / np.maximum(n, 1)
    var = np.bincount(owner, isi**2) / np.maximum(n, 1) - mean**2
    ok = n >= 3
    cv = np.sqrt(np.maximum(var[ok], 0)) / mean[ok]
    counts = np.bincount(((t - discard_ms) // 5.0).astype(np.int64))[:-1]
    return {"region_rate_min_hz": float(region_rates.min()), "region_rate_median_hz": float(np.median(region_rates)),
            "region_rate_max_hz": float(region_rates.max()), "isi_cv_median": float(np.median(cv)),
            "network_count_cv": float(counts.std() / counts.mean()),
            "network_count_cv_poisson": float(1 / np.sqrt(counts.mean()))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--t-ms", type=float, default=3000.0)
    ap.add_argument("--discard-ms", type=float, default=1000.0)
    args = ap.parse_args()
    warm_up("wholebrain")
    s = dtb_run([f"simulation.t_ms={args.t_ms}"], "wholebrain_regime")
    r = regime(OUT / "wholebrain_regime.h5", args.discard_ms)
    for k, v in r.items():
        print(f"{k:28s} {v:.3f}")
    save("wholebrain_regime", {"t_ms": args.t_ms, "discard_ms": args.discard_ms, "run": s, **r})


if __name__ == "__main__":
    main()
