"""Assimilation of the recorded BOLD of the bundled HCP subjects: metrics and cost per subject.

Runs ``dtb assimilate benchmarks/assimilation.toml`` for each subject (32 members,
200 TRs; see the TOML) in a fresh process and stores the summary (metrics averaged
over regions, specificity, timings, peak RSS).

    python benchmarks/assimilation.py                      # all five subjects, about 30 min each
    python benchmarks/assimilation.py --subjects 101309
    python benchmarks/assimilation.py --subjects 101309 --tag local --set assimilation.local_weight=1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
from _common import OUT, measure, save, warm_up

SUBJECTS = ("101309", "102311", "102816", "131217", "211619")
CONFIG = Path(__file__).with_name("assimilation.toml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", nargs="+", default=list(SUBJECTS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a key of the configuration (repeatable)")
    ap.add_argument("--tag", default="", help="suffix of the result name, for runs with --set overrides")
    args = ap.parse_args()
    warm_up("wholebrain")
    OUT.mkdir(exist_ok=True)
    for subject in args.subjects:
        name = f"assimilation_{subject}" + (f"_{args.tag}" if args.tag else "")
        out = OUT / f"{name}.h5"
        _, wall, rss = measure([sys.executable, "-m", "dtb", "assimilate", str(CONFIG), "--subject", subject,
                                "--out", str(out), "--overwrite", "--quiet",
                                *[x for o in args.overrides for x in ("--set", o)]])
        with h5py.File(out, "r") as f:
            summary = json.loads(f["summary"][()])
        summary.update(wall_s=wall, peak_rss_mb=rss, config=CONFIG.read_text(), overrides=args.overrides)
        save(name, summary)
        print(subject, json.dumps(summary["metrics"]), flush=True)


if __name__ == "__main__":
    main()
