"""Peak host memory of an assimilation ensemble against its number of members, beside the memory model's estimate.

    python benchmarks/ensemble_memory.py --members 25 50 100 200

Each size runs in a fresh process on one rank: the bundled assimilation setup (`dtb/data/assimilation.toml`, its
3,760 neurons per member) replicated as `dtb assimilate` does, partitioned, built and simulated for 20 ms with its
run file written. The marginal cost per member, against what the model counts for its neurons and synapses, is
what `dtb.memory.POPULATION_PAIR_BYTES` is fitted to (the rest, per connected population pair).
"""

from __future__ import annotations

import argparse
import json
import sys

from _common import OUT, measure, save, warm_up

#: what the child process runs: the ensemble as `dtb.assimilation.driver` makes it, then a short session
CHILD = """
import json, sys
from importlib.resources import files
import dtb
from dtb.driver import network_from_config
from dtb.memory import estimate_bytes
members, out = int(sys.argv[1]), sys.argv[2]
cfg = dtb.load_config(str(files("dtb") / "data" / "assimilation.toml"))
one = network_from_config(cfg).recipe()
recipe = one.replicate(members)
with dtb.Session(recipe, out=out, overwrite=True, progress=False, partition=cfg.simulation.partition) as s:
    s.run(20.0)
print(json.dumps(dict(members=members, n_populations=len(recipe.populations), n_neurons=recipe.n_neurons,
                      n_synapses=float(recipe.incoming_synapses().sum()), n_pairs=recipe.n_population_pairs,
                      estimate_mb=float(estimate_bytes(recipe.n_neurons, recipe.incoming_synapses().sum(),
                                                       recipe.n_population_pairs)) / 2**20,
                      estimate_without_pairs_mb=float(estimate_bytes(recipe.n_neurons,
                                                                     recipe.incoming_synapses().sum())) / 2**20)))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, nargs="+", default=[25, 50, 100, 200])
    args = ap.parse_args()
    warm_up("wholebrain")
    OUT.mkdir(exist_ok=True)
    runs = []
    for m in args.members:
        text, wall, rss = measure([sys.executable, "-c", CHILD, str(m), str(OUT / f"ensemble_{m}.h5")])
        r = json.loads(text.strip().splitlines()[-1])
        r.update(peak_rss_mb=rss, wall_s=wall)
        print(f"{m:>5} members, {r['n_populations']:,} populations, {r['n_pairs']:,} pairs: peak RSS {rss:,.0f} MiB, "
              f"model {r['estimate_mb']:,.0f} MiB, {wall:.1f} s", flush=True)
        runs.append(r)
    fit = None
    if len(runs) > 1:  # the marginal cost per member, least squares, less what the model counts for the loads
        import numpy as np

        m = np.array([r["members"] for r in runs], dtype=float)
        per_member = np.polyfit(m, [r["peak_rss_mb"] for r in runs], 1)[0] * 2**20
        loads = np.polyfit(m, [r["estimate_without_pairs_mb"] for r in runs], 1)[0] * 2**20
        pairs = runs[0]["n_pairs"] / runs[0]["members"]
        fit = dict(bytes_per_member=per_member, load_bytes_per_member=loads, pairs_per_member=pairs,
                   bytes_per_pair=(per_member - loads) / pairs)
        print(f"per member {per_member / 2**20:.2f} MiB, of which the loads {loads / 2**20:.2f} MiB: "
              f"{fit['bytes_per_pair']:.0f} bytes per connected population pair")
    save("ensemble_memory", {"runs": runs, "fit": fit})


if __name__ == "__main__":
    main()
