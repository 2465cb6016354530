"""PD14 in NEST 3.x, from dtb's own parameter tables, for side-by-side benchmarks.

Same populations, connection totals, weight and delay distributions, initial
potentials and drive as `dtb.connectome.pd14` (which follows NEST's
microcircuit-PD14-model), written with the public PyNEST API.

Prints one JSON line: build_s, sim_s, peak_rss_mb, rates_hz (per population,
first ``--discard-ms`` dropped), n_synapses.

    python benchmarks/nest_pd14.py --n-scale 0.1 --k-scale 1.0 --t-ms 1000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-scale", type=float, default=0.1)
    ap.add_argument("--k-scale", type=float, default=1.0)
    ap.add_argument("--t-ms", type=float, default=1000.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--discard-ms", type=float, default=0.0)
    ap.add_argument("--record", action="store_true", help="record spikes (needed for rates)")
    args = ap.parse_args()

    from dtb.connectome import pd14
    from dtb.model.tables import columns, kernel_table

    recipe = pd14.pd14_recipe(n_scale=args.n_scale, k_scale=args.k_scale)
    table = kernel_table(recipe)
    dt = recipe.dt_ms

    import nest

    nest.set_verbosity("M_ERROR")
    nest.ResetKernel()
    nest.SetKernelStatus({"resolution": dt, "local_num_threads": args.threads, "rng_seed": args.seed})
    t0 = time.perf_counter()
    pops, recorders = [], []
    for i, p in enumerate(recipe.populations):
        row = dict(zip(columns(recipe.neuron_model), table[i]))
        pop = nest.Create("iaf_psc_exp", p.size, params={
            "C_m": 250.0, "tau_m": 10.0, "tau_syn_ex": pd14.TAU_SYN_MS, "tau_syn_in": pd14.TAU_SYN_MS,
            "t_ref": 2.0, "E_L": -65.0, "V_reset": -65.0, "V_th": -50.0, "I_e": float(row["i_e_pa"]),
            "V_m": nest.random.normal(mean=p.v0_mean_mv, std=p.v0_sd_mv)})
        pops.append(pop)
        if args.record:
            rec = nest.Create("spike_recorder")
            nest.Connect(pop, rec)
            recorders.append(rec)
        lam = float(row["poisson_lam"])
        if lam > 0:
            gen = nest.Create("poisson_generator", params={"rate": lam / (dt * 1e-3)})
            nest.Connect(gen, pop, syn_spec={"weight": float(row["w_ext_pa"]), "delay": dt})
    for proj in recipe.projections:
        s = int(proj.sources[0])
        sign = {"min": 0.0, "max": np.inf} if proj.weight_mean >= 0 else {"min": -np.inf, "max": 0.0}
        nest.Connect(pops[s], pops[proj.target],
                     conn_spec={"rule": "fixed_total_number", "N": int(proj.total)},
                     syn_spec={"synapse_model": "static_synapse",
                               "weight": nest.math.redraw(nest.random.normal(mean=proj.weight_mean,
                                                                             std=proj.weight_sd), **sign),
                               "delay": nest.math.redraw(nest.random.normal(mean=float(proj.delay_ms[0]),
                                                                            std=proj.delay_sd_ms),
                                                         min=dt, max=np.inf)})
    nest.Prepare()
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    nest.Run(args.t_ms)
    sim_s = time.perf_counter() - t1
    nest.Cleanup()
    rates = []
    if args.record:
        for p, rec in zip(recipe.populations, recorders):
            times = rec.get("events")["times"]
            n = np.count_nonzero(np.asarray(times) >= args.discard_ms)
            rates.append(n / p.size / ((args.t_ms - args.discard_ms) * 1e-3))
    print(json.dumps({"simulator": f"NEST {nest.__version__}", "threads": args.threads, "build_s": build_s,
                      "sim_s": sim_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "n_synapses": int(nest.GetKernelStatus("num_connections")),
                      "rates_hz": dict(zip([p.name for p in recipe.populations], rates))}))


if __name__ == "__main__":
    main()
