"""Assimilation of the recorded BOLD of the bundled HCP subjects, judged on held-out TRs: metrics and cost.

Runs ``dtb assimilate --subject S`` with nothing else (the defaults: 32 members, TRs 50 to 199 fitted
after a 50-TR calibration window, the other 1,000 TRs held out) for each subject in a fresh process
and stores the summary (fit-window and held-out metrics with their baselines, specificity, timings,
peak RSS) as ``results/heldout_<subject>.json``.

    python benchmarks/assimilation.py                      # all five subjects, about 35 min each on 2 cores
    python benchmarks/assimilation.py --subjects 101309
    python benchmarks/assimilation.py --subjects 101309 --tag joint --set assimilation.hemodynamics=joint
    python benchmarks/assimilation.py --diagnose-only          # recompute the diagnostics of the kept run files

Besides the metrics it stores diagnostics of what limits them (`diagnostics`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np
from _common import OUT, RESULTS, measure, save, warm_up

from dtb.assimilation.metrics import fc_similarity, functional_connectivity, pearson_rows
from dtb.config import ASSIMILATION_DEFAULTS

SUBJECTS = ("101309", "102311", "102816", "131217", "211619")


def _autocorr(x: np.ndarray, lag: int) -> float:
    """Mean over rows of the lag-``lag`` autocorrelation."""
    return float(np.nanmean([np.corrcoef(row[:-lag], row[lag:])[0, 1] for row in x]))


def diagnostics(path: Path) -> dict:
    """What limits the metrics, from an assimilation's run file (after the burn-in TRs).

    - smoothness: lag-1 and lag-5 autocorrelation of the observation and of the free replay's BOLD
      (a one-TR forecast can hardly beat the model's own lag-1 autocorrelation);
    - how much the hyperparameters carry: their final ensemble s.d. over the width of their bounds,
      and the correlation of their posterior means with the observation (region by region, averaged);
    - with ``hemodynamics = "separate"``, how well the members' own BOLD follows the observation:
      its ensemble mean's correlation with it (region by region, averaged) and the correlation
      of the two FCs.
    """
    with h5py.File(path, "r") as f:
        g = f["assimilation"]
        b = int(g.attrs.get("calibration_trs", 0)) + int(g.attrs["burn_in_trs"])
        obs = g["bold_observed"][:, b:]
        names = list(g["hyper_names"].asstr()[()])
        mean, sd = g["hyper_mean"][b:], g["hyper_sd"][-1]
        replay = g["bold_replay"][:, b:] if "bold_replay" in g else None
        free = g["bold_free"][:, b:] if "bold_free" in g else None
        cfg = tomllib.loads(f["config"][()].decode())["assimilation"]
    out = {"obs_autocorr_1": _autocorr(obs, 1), "obs_autocorr_5": _autocorr(obs, 5)}
    if replay is not None:
        out.update(replay_autocorr_1=_autocorr(replay, 1), replay_autocorr_5=_autocorr(replay, 5))
    if free is not None:
        out["free_obs_r"] = float(np.nanmean(pearson_rows(free, obs)))
        out["free_fc_r"] = fc_similarity(functional_connectivity(free), functional_connectivity(obs))
    for h, name in enumerate(names):
        lo, hi = cfg[f"{name}_bounds"]
        out[f"{name}_final_sd_over_width"] = float(np.mean(sd[:, h]) / (hi - lo))
        out[f"{name}_obs_r"] = float(np.nanmean([np.corrcoef(mean[:, r, h], obs[r])[0, 1] for r in range(len(obs))]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", nargs="+", default=list(SUBJECTS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a key of the configuration (repeatable)")
    ap.add_argument("--tag", default="", help="suffix of the result name, for runs with --set overrides")
    ap.add_argument("--diagnose-only", action="store_true",
                    help="no runs: add the diagnostics of benchmarks/out/<name>.h5 to benchmarks/results/<name>.json")
    args = ap.parse_args()
    names = [(s, f"heldout_{s}" + (f"_{args.tag}" if args.tag else "")) for s in args.subjects]
    if args.diagnose_only:
        for subject, name in names:
            result = json.loads((RESULTS / f"{name}.json").read_text())
            result["diagnostics"] = diagnostics(OUT / f"{name}.h5")
            (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(subject, json.dumps(result["diagnostics"]), flush=True)
        return
    warm_up("wholebrain")
    OUT.mkdir(exist_ok=True)
    for subject, name in names:
        out = OUT / f"{name}.h5"
        _, wall, rss = measure([sys.executable, "-m", "dtb", "assimilate", "--subject", subject,
                                "--out", str(out), "--overwrite", "--quiet",
                                *[x for o in args.overrides for x in ("--set", o)]])
        with h5py.File(out, "r") as f:
            summary = json.loads(f["summary"][()])
        summary.update(wall_s=wall, peak_rss_mb=rss, config=ASSIMILATION_DEFAULTS.read_text(), overrides=args.overrides,
                       diagnostics=diagnostics(out))
        save(name, summary)
        print(subject, json.dumps(summary["metrics"]), flush=True)


if __name__ == "__main__":
    main()
