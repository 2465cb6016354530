"""Turn benchmarks/results/*.json into benchmarks/RESULTS.md.

    python benchmarks/report.py
"""

from __future__ import annotations

import json

from _common import HERE, RESULTS


def _machine(m: dict) -> str:
    load = f"; 15-min load average {m['load_avg_15min']:g} when saved" if "load_avg_15min" in m else ""
    gpu = f"{m['gpu']} GPU with " if m.get("gpu") else ""
    return (f"{gpu}{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, numba {m['numba']}, "
            f"dtb {m['dtb']}; {m['date']}{load}")


def _pd14(d: dict) -> list[str]:
    backend = d.get("backend", "cpu")
    graphs = d.get("cuda_graphs", True)
    flags = (f" --backend {backend}" if backend != "cpu" else "") + ("" if graphs else " --no-graphs")
    out = [f"### PD14, N {d['n_scale']:g}, K {d['k_scale']:g} ({d['background']} drive, "
           f"{'spikes recorded' if d['record_spikes'] else 'spikes not recorded'}, {backend} backend"
           f"{'' if graphs else ', one launch per kernel'})", "",
           f"Command: `python benchmarks/pd14.py --n-scale {d['n_scale']:g} --k-scale {d['k_scale']:g} "
           f"--seeds {' '.join(map(str, d['seeds']))} --t-ms {d['t_ms']:g} "
           f"--discard-ms {d['runs'][0]['discard_ms']:g}{flags}`",
           f"Machine: {_machine(d['machine'])}", "",
           "| seed | build (s) | RTF | peak RSS (MiB) | synapses | bytes/synapse | time split (s) |",
           "|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        out.append(f"| {r['seed']} | {r['build_s']:.2f} | {r['rtf']:.2f} | {r['peak_rss_mb']:.0f} | "
                   f"{r['n_synapses']:,} | {r['bytes_per_synapse']:.2f} | {_split(r)} |")
    out += ["", "| population | dtb mean rate (Hz) |" + (" NEST reference (Hz) | difference |"
                                                          if "nest_reference_hz" in d else ""),
            "|---|---|" + ("---|---|" if "nest_reference_hz" in d else "")]
    for name, rate in d["mean_rates_hz"].items():
        row = f"| {name} | {rate:.3f} |"
        if "nest_reference_hz" in d:
            row += f" {d['nest_reference_hz'][name]:.3f} | {100 * d['relative_error'][name]:+.1f} % |"
        out.append(row)
    if "within_10_percent" in d:
        out += ["", f"All populations within 10 % of NEST: **{'yes' if d['within_10_percent'] else 'no'}**"]
    return out + [""]


def _vs_nest(d: dict) -> list[str]:
    n, t, r = d["nest"], d["dtb"], d["ratios"]
    out = [f"### PD14 side by side with {n['simulator']} (N {d['n_scale']:g}, K {d['k_scale']:g}, "
           f"{d['t_ms']:g} ms, {d['threads']} threads each, Poisson drive, spikes recorded)", "",
           f"Command: `python benchmarks/pd14_vs_nest.py --n-scale {d['n_scale']:g} --k-scale {d['k_scale']:g} "
           f"--t-ms {d['t_ms']:g} --threads {d['threads']}`", f"Machine: {_machine(d['machine'])}", "",
           "| | NEST | dtb | dtb / NEST | target | met |", "|---|---|---|---|---|---|",
           f"| simulation (s) | {n['sim_s']:.2f} | {t['sim_s']:.2f} | {r['sim']:.3f} | <= {d['targets']['sim']} | "
           f"{'yes' if d['met']['sim'] else 'no'} |",
           f"| build (s) | {n['build_s']:.2f} | {t['build_s']:.2f} | {r['build']:.3f} | <= {d['targets']['build']} | "
           f"{'yes' if d['met']['build'] else 'no'} |",
           f"| peak RSS (MiB) | {n['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} | {r['peak_rss']:.3f} | "
           f"<= {d['targets']['peak_rss']} | {'yes' if d['met']['peak_rss'] else 'no'} |",
           f"| synapses | {n['n_synapses']:,} | {t['n_synapses']:,} | | | |", "",
           "Rates over the whole run, onset transient included, one seed each: indicative only (the accuracy",
           "check is the full-scale table below).", "",
           "| population | NEST rate (Hz) | dtb rate (Hz) |", "|---|---|---|"]
    for name, rate in n["rates_hz"].items():
        out.append(f"| {name} | {rate:.3f} | {t['rates_after_discard_hz'][name]:.3f} |")
    return out + [""]


def _split(r: dict) -> str:
    """A run's simulation time by phase (with CUDA graphs, delivery counts as update)."""
    return ", ".join(f"{k} {v:.2f}" for k, v in r["phase_s"].items() if v > 0)


def _wholebrain(d: dict) -> list[str]:
    backend = d.get("backend", "cpu")
    flags = (f" --backend {backend}" if backend != "cpu" else "") + (
        f" --in-degree {d['in_degree']}" if d["in_degree"] != 100 else "")
    out = ["### Default whole brain at several sizes (bundled HCP subject 101309, K = "
           f"{d['in_degree']}, {backend} backend)", "",
           "Command: `python benchmarks/wholebrain_sizes.py --sizes " + " ".join(str(r["n_neurons"]) for r in d["runs"])
           + " --t-ms " + " ".join(f"{r['t_ms']:g}" for r in d["runs"]) + f"{flags}`",
           f"Machine: {_machine(d['machine'])}", *([d["note"]] if "note" in d else []), "",
           "| neurons | synapses | simulated (ms) | build (s) | RTF | peak RSS (MiB) | bytes/synapse | E rate (Hz) | "
           "I rate (Hz) | time split (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        out.append(f"| {r['n_neurons']:,} | {r['n_synapses']:,} | {r['t_ms']:g} | {r['build_s']:.1f} | "
                   f"{r['rtf']:.1f} | {r['peak_rss_mb']:.0f} | {r['bytes_per_synapse']:.2f} | {r['rate_e_hz']:.2f} | "
                   f"{r['rate_i_hz']:.2f} | {_split(r)} |")
    return out + [""]


def _ensemble(d: dict) -> list[str]:
    out = ["### Host memory of an ensemble against its members (the bundled assimilation setup replicated, 3,760 neurons per member, one rank, cpu, 20 ms simulated with its run file)", "",
           "Command: `python benchmarks/ensemble_memory.py --members "
           + " ".join(str(r["members"]) for r in d["runs"]) + "`",
           f"Machine: {_machine(d['machine'])}", "",
           "| members | populations | connected pairs | neurons | synapses | peak RSS (MiB) | model (MiB) |",
           "|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        out.append(f"| {r['members']:,} | {r['n_populations']:,} | {r['n_pairs']:,} | {r['n_neurons']:,} | "
                   f"{r['n_synapses']:,.0f} | {r['peak_rss_mb']:,.0f} | {r['estimate_mb']:,.0f} |")
    f = d.get("fit")
    if f:
        out += ["", f"Per member (least squares): {f['bytes_per_member'] / 2**20:.2f} MiB, of which the model's "
                f"neurons and synapses {f['load_bytes_per_member'] / 2**20:.2f} MiB; the rest over its "
                f"{f['pairs_per_member']:,.0f} connected population pairs is {f['bytes_per_pair']:.0f} bytes per "
                "pair (`dtb.memory.POPULATION_PAIR_BYTES`)."]
    return out + [""]


def _bandwidth(d: dict) -> list[str]:
    return [f"### Delivery kernel bandwidth ({d['device']})", "",
            f"Command: `python benchmarks/gpu_bandwidth.py --neurons {d['neurons']} --in-degree {d['in_degree']}`",
            f"Machine: {_machine(d['machine'])}", "",
            "| synapses delivered | delivery (ms) | delivery (GB/s) | device copy (GB/s, read + write) | fraction |",
            "|---|---|---|---|---|",
            f"| {d['synapses_delivered']:,} | {1e3 * d['deliver_s']:.2f} | {d['deliver_gb_s']:.0f} | "
            f"{d['copy_gb_s']:.0f} | {100 * d['fraction_of_copy']:.0f} % |", ""]


def _regime(d: dict) -> list[str]:
    r = d["run"]
    return [f"### Firing regime of the default whole brain ({r['n_neurons']:,} neurons, K = 100, "
            f"{d['t_ms']:g} ms, first {d['discard_ms']:g} ms discarded)", "",
            f"Command: `python benchmarks/wholebrain_regime.py --t-ms {d['t_ms']:g} --discard-ms {d['discard_ms']:g}`",
            f"Machine: {_machine(d['machine'])}", "",
            "| region rate min / median / max (Hz) | median ISI CV | network count CV (5 ms bins) | "
            "same for independent Poisson neurons |", "|---|---|---|---|",
            f"| {d['region_rate_min_hz']:.2f} / {d['region_rate_median_hz']:.2f} / {d['region_rate_max_hz']:.2f} | "
            f"{d['isi_cv_median']:.2f} | {d['network_count_cv']:.3f} | {d['network_count_cv_poisson']:.3f} |", ""]


def _partitions(d: dict) -> list[str]:
    out = ["### Partition quality on the bundled HCP brain (analytic, nothing built)", "",
           "Command: `python benchmarks/partition_quality.py --neurons "
           + " ".join(str(n) for n in sorted({r["n_neurons"] for r in d["rows"]}))
           + " --ranks " + " ".join(str(p) for p in sorted({r["n_ranks"] for r in d["rows"]})) + "`",
           f"Machine: {_machine(d['machine'])}", "",
           f"Spike traffic at a nominal {d['rate_hz']:g} Hz; two-level exchange with {d['ranks_per_node']} ranks per "
           "node. Imbalance = max / mean; messages = non-empty sends per rank per epoch (mean).", "",
           "| neurons | P | strategy | imbalance neurons / synapses / input spikes | cut fraction | records sent / rank "
           "/ epoch (worst rank) | cross-node records / rank / epoch (floor of any partition) | messages flat | messages two-level | "
           "partitioning (s, MiB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        spikes = f"{r['imbalance_input_spikes']:.3f}" if "imbalance_input_spikes" in r else "-"
        cross = f"{r['cross_node_spikes_per_rank_epoch']:,.1f}" if "cross_node_spikes_per_rank_epoch" in r else "-"
        if "cross_node_spikes_lower_bound" in r:
            cross += f" ({r['cross_node_spikes_lower_bound']:,.1f})"
        mib = f", {r['partition_peak_mib']:.0f}" if "partition_peak_mib" in r else ""
        out.append(f"| {r['n_neurons']:.0e} | {r['n_ranks']:,} | {r['strategy']} | {r['imbalance_neurons']:.3f} / "
                   f"{r['imbalance_synapses']:.3f} / {spikes} | {r['cut_fraction']:.3f} | "
                   f"{r['spikes_sent_per_rank_epoch']:,.1f} ({r['spikes_sent_per_rank_epoch_max']:,.1f}) | {cross} | "
                   f"{r['messages_flat']:,.1f} | {r['messages_two_level']:,.1f} | {r['partition_s']:.2f}{mib} |")
    return out + [""]


def _scaling(d: dict) -> list[str]:
    out = [f"### Strong and weak scaling of the whole brain over MPI ranks ({d['exchange']} exchange, 1 thread "
           f"per rank, {d['t_ms']:g} ms)", "",
           "Command: `python benchmarks/scaling.py`", f"Machine: {_machine(d['machine'])}", "",
           f"This machine has {d['cores']} cores: runs with more ranks than cores share them, so their times show "
           "the cost of oversubscription, not of dtb; memory per rank is what to read there.", "",
           "| scaling | ranks | neurons | build (s) | simulation (s) | RTF | synapses on largest rank | "
           "peak RSS of largest rank (MiB) |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| {r['kind']} | {r['n_ranks']} | {r['n_neurons']:,} | {r['build_s']:.2f} | {r['sim_s']:.2f} | "
                   f"{r['rtf']:.1f} | {r['synapses_per_rank_max']:,} | {r['peak_rss_mb_per_rank']:.0f} |")
    return out + [""]


def _dry_run(d: dict) -> list[str]:
    rows = d["rows"]
    out = [f"### Exchange traffic measured by the dry-run exchange ({rows[0]['n_neurons']:,}-neuron whole brain, "
           f"{d['t_ms']:g} ms, {d['partition']} partition, {rows[0]['ranks_per_node']} ranks per node)", "",
           "Command: `python benchmarks/dry_run_exchange.py --ranks "
           + " ".join(str(r["ranks"]) for r in rows) + f" --t-ms {d['t_ms']:g}`",
           f"Machine: {_machine(d['machine'])}", "",
           "Per rank per epoch, mean over ranks and epochs (max: the largest single rank-epoch). The counts equal "
           "those of real MPI runs (tests/mpi).", "",
           "| ranks | records | bytes | messages flat (max) | messages two-level (max) | mean rate (Hz) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['ranks']:,} | {r['records_per_rank_epoch']:,.1f} | {r['bytes_per_rank_epoch']:,.0f} | "
                   f"{r['messages_flat']:,.1f} ({r['messages_flat_max']:,.0f}) | "
                   f"{r['messages_two_level']:,.1f} ({r['messages_two_level_max']:,.0f}) | {r['rate_hz']:.2f} |")
    return out + [""]


def _label(d: dict, toml: str | None) -> str:
    """An assimilation row's subject and overrides, marked when it ran with a TOML other than ``toml``."""
    label = " ".join([d["subject"], *(f"`{o}`" for o in d.get("overrides", []))])
    if d.get("sweep"):
        sw = d["sweep"]
        b = sw["best"]
        label += (f" (kept G {sw['coupling'][b]:g}" + ("" if sw["w_i_trace"][b] != sw["w_i_trace"][b] else
                                                       f", w_i_trace {sw['w_i_trace'][b]:g}")
                  + f"; its fit-window FC r {sw['fc_r'][b]:.3f}, in-sample)")
    if d["machine"].get("gpu"):
        label += f" (on an {d['machine']['gpu']})"
    if toml is not None and d.get("config") != toml:
        label += " (earlier defaults: `config` in its JSON)"
    return label


def _heldout(rows: list[dict]) -> list[str]:
    d0 = rows[0]
    toml = (HERE.parent / "dtb" / "data" / "assimilation.toml").read_text()
    n = lambda m, k: m.get(k, float("nan"))  # noqa: E731
    out = [f"### Assimilation judged on held-out TRs ({d0['members']} members x {d0['neurons_per_member']:,} neurons, "
           f"TRs {d0['calibration_trs']} to {d0['trs'] - 1} of {d0['tr_s']:g} s fitted, {d0['heldout_trs']} held out, "
           f"fitting {', '.join(d0['fitted'])})", "",
           "Command: `python benchmarks/assimilation.py` (`dtb assimilate --subject S`, nothing else: the defaults). "
           "Causal observation; the first TRs only calibrate it. FC figures: r of upper triangles against the "
           "held-out FC; forecasts: means over the 94 regions of r (and mse) on the first "
           f"{d0['forecast_trs']} held-out TRs, the 5-TR ones every {20} TRs.",
           f"Machine: {_machine(d0['machine'])}", "",
           "| subject | heldout_fc_r (twin) | SC | log SC | unfitted | group mean | retest (ceiling) | specific | "
           "1-TR: model / persistence / AR(1) r | 1-TR mse x1e6: model / persistence / AR(1) | "
           "5-TR: model / persistence r | 5-TR mse x1e6: model / persistence / AR(1) | fit-window replay_fc_r "
           "(in-sample) | s per TR | wall | peak RSS |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in rows:
        m = d["metrics"]
        spec = d.get("heldout_specificity") or {}
        best = max(spec.get("other_r", {}).values(), default=float("nan"))
        label = _label(d, toml)
        if (d["machine"]["cpu"], d["machine"]["date"]) != (d0["machine"]["cpu"], d0["machine"]["date"]):
            label += f" ({_machine(d['machine'])})"  # not the table's machine
        out.append(
            f"| {label} | **{m['heldout_fc_r']:.3f}** | {m['baseline_sc_fc_r']:.3f} | "
            f"{m['baseline_log_sc_fc_r']:.3f} | {m['baseline_unfitted_fc_r']:.3f} | {m['baseline_group_fc_r']:.3f} | "
            f"{m['retest_fc_r']:.3f} | {'yes' if m['specific'] else 'no'} (best other {best:.3f}) | "
            f"{n(m, 'heldout_forecast_r'):.3f} / {n(m, 'heldout_persistence_r'):.3f} / {n(m, 'heldout_ar1_r'):.3f} | "
            f"{1e6 * n(m, 'heldout_forecast_mse'):.2f} / {1e6 * n(m, 'heldout_persistence_mse'):.2f} / "
            f"{1e6 * n(m, 'heldout_ar1_mse'):.2f} | "
            f"{n(m, 'heldout_forecast5_r'):.3f} / {n(m, 'heldout_persistence5_r'):.3f} | "
            f"{1e6 * n(m, 'heldout_forecast5_mse'):.1f} / {1e6 * n(m, 'heldout_persistence5_mse'):.1f} / "
            f"{1e6 * n(m, 'heldout_ar1_5_mse'):.1f} | {n(m, 'replay_fc_r'):.3f} | {d['s_per_tr']:.2f} | "
            f"{d['wall_s'] / 60:.1f} min | {d['peak_rss_mb']:.0f} MiB |")
    return out + [""]


def _assimilation(rows: list[dict]) -> list[str]:
    d0 = rows[0]
    out = [f"### Earlier: assimilation scored in-sample ({d0['members']} members x {d0['neurons_per_member']:,} "
           f"neurons, {d0['trs']} TRs of {d0['tr_s']:g} s, fitting {', '.join(d0['fitted'])})", "",
           "Superseded by the held-out table above: these runs (the former `benchmarks/assimilation.toml`, in each "
           "JSON's `config`) preprocessed the whole recording at once (a zero-phase band-pass and a min-max scale "
           "that see the future), and every figure is scored on the TRs the filter was fitted on. Metrics are "
           "means over the 94 regions after the burn-in TRs.",
           f"Machine: {_machine(d0['machine'])}", "",
           "| subject, overrides | tracking_r | forecast_r | persistence_r | forecast5_r | persistence5_r | "
           "replay_fc_r | specific | s per TR | wall | peak RSS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in rows:
        m = d["metrics"]
        spec = d["specificity"]
        label = _label(d, None)
        if d["trs"] != d0["trs"]:
            label += f" ({d['trs']} TRs)"
        out.append(f"| {label} | {m['tracking_r']:.3f} | {m['forecast_r']:.3f} | {m['persistence_r']:.3f} | "
                   f"{m.get('forecast5_r', float('nan')):.3f} | {m.get('persistence5_r', float('nan')):.3f} | "
                   f"{m.get('replay_fc_r', float('nan')):.3f} | {'yes' if spec and spec['specific'] else 'no'} | "
                   f"{d['s_per_tr']:.2f} | {d['wall_s'] / 60:.1f} min | {d['peak_rss_mb']:.0f} MiB |")
    diag = [d for d in rows if "diagnostics" in d]
    if diag:
        names = d0["fitted"]
        out += ["", "What limits them (`diagnostics` in the JSON; means over regions after the burn-in): lag-1 and "
                "lag-5 autocorrelation of the observed and of the replayed (free) BOLD; the hyperparameters' final "
                "ensemble s.d. over the width of their bounds, and the correlation of their posterior means with "
                "the observation; with `hemodynamics = \"separate\"`, the correlation of the members' own "
                "(uncorrected) ensemble-mean BOLD with the observation and of its FC with the observation's.", "",
                "| subject, overrides | obs ac1 | replay ac1 | obs ac5 | replay ac5 | "
                + " | ".join(f"{n} sd/width | {n} r(obs)" for n in names) + " | free r(obs) | free FC r |",
                "|---|---|---|---|---|" + "---|---|" * len(names) + "---|---|"]
        for d in diag:
            g = d["diagnostics"]
            label = _label(d, None)
            out.append(f"| {label} | {g['obs_autocorr_1']:.3f} | {g.get('replay_autocorr_1', float('nan')):.3f} | "
                       f"{g['obs_autocorr_5']:.3f} | {g.get('replay_autocorr_5', float('nan')):.3f} | "
                       + " | ".join(f"{g[n + '_final_sd_over_width']:.2f} | {g[n + '_obs_r']:.3f}" for n in names)
                       + f" | {g.get('free_obs_r', float('nan')):.3f} | {g.get('free_fc_r', float('nan')):.3f} |")
    return out + [""]


def _sensitivity(d: dict) -> list[str]:
    sizes = " ".join(str(r["n_neurons"]) for r in d["runs"])
    out = [f"### What one TR of BOLD says about a region's background gain (subject {d['subject']}, Friston 2003 "
           "hemodynamics)", "",
           f"Command: `python benchmarks/hyper_sensitivity.py --sizes {sizes} --members {d['runs'][0]['members']}`; "
           f"step +-{d['step']:g} of the gain, {d['rest_trs']} TRs at rest, "
           f"{d['step_trs']} after the step (the first {d['settle_trs']} left to settle); means over regions.",
           f"Machine: {_machine(d['machine'])}", "",
           "| neurons per region | level s.d. across draws | BOLD s.d. over TRs | response to +step | r one TR | "
           "r one TR, own level removed | wall (s) |", "|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        out.append(f"| {r['neurons_per_region']:.0f} | {r['level_sd']:.5f} | {r['tr_sd']:.5f} | {r['response']:.5f} | "
                   f"{r['r_tr']:.3f} | {r['r_tr_own_level']:.3f} | {r['wall_s']:.0f} |")
    return out + [""]


def _regression(d: dict) -> list[str]:
    out = [f"### This checkout against commit {d['base']} (medians of {d['repeats']} interleaved runs)", "",
           f"Command: `python benchmarks/refactor_regression.py --base {d['base']} --repeats {d['repeats']}`",
           f"Machine: {_machine(d['machine'])}", "",
           "| case | build (s) base / new | simulation (s) base / new | new / base | peak RSS (MiB) base / new | "
           "same spike count | Python API / CLI |", "|---|---|---|---|---|---|---|"]
    for case, c in d["cases"].items():
        b, n, r = c["median"]["base"], c["median"]["new"], c["ratio_new_over_base"]
        api = f"{r['api_sim_s_over_cli']:.3f}" if "api_sim_s_over_cli" in r else ""
        out.append(f"| {case} | {b['build_s']:.2f} / {n['build_s']:.2f} | {b['sim_s']:.2f} / {n['sim_s']:.2f} | "
                   f"{r['sim_s']:.3f} | {b['peak_rss_mb']:.0f} / {n['peak_rss_mb']:.0f} | "
                   f"{'yes' if c['same_spike_count'] else 'no'} | {api} |")
    return out + [""]


def main() -> None:
    lines = ["# Benchmark results", "",
             "Every table below is produced by the command above it; `python benchmarks/report.py` rebuilds this",
             "file from `benchmarks/results/*.json`. RTF = wall-clock simulation time / biological time (lower is",
             "faster); build = connectome/recipe, partition, synapse generation and state initialisation; peak RSS",
             "of the whole process. The first run of a fresh install compiles the kernels; the scripts warm the",
             "cache first, so no compilation is timed.", ""]
    order = sorted(RESULTS.glob("*.json"))
    for path in order:
        d = json.loads(path.read_text())
        name = d["benchmark"]
        if name.startswith("pd14_vs_nest"):
            lines += _vs_nest(d)
    for path in order:
        d = json.loads(path.read_text())
        if d["benchmark"].startswith("pd14_n"):
            lines += _pd14(d)
    for path in order:
        d = json.loads(path.read_text())
        if d["benchmark"].startswith("wholebrain_sizes"):
            lines += _wholebrain(d)
        if d["benchmark"] == "ensemble_memory":
            lines += _ensemble(d)
        if d["benchmark"].startswith("gpu_bandwidth"):
            lines += _bandwidth(d)
        if d["benchmark"] == "wholebrain_regime":
            lines += _regime(d)
        if d["benchmark"] == "partition_quality":
            lines += _partitions(d)
        if d["benchmark"] == "scaling":
            lines += _scaling(d)
        if d["benchmark"] == "dry_run_exchange":
            lines += _dry_run(d)
        if d["benchmark"] == "refactor_regression":
            lines += _regression(d)
    held = [json.loads(p.read_text()) for p in order if p.name.startswith("heldout_")]
    if held:
        lines += _heldout(held)
    assim = [json.loads(p.read_text()) for p in order if p.name.startswith("assimilation_")]
    if assim:
        lines += _assimilation(assim)
    if (RESULTS / "hyper_sensitivity.json").exists():
        lines += _sensitivity(json.loads((RESULTS / "hyper_sensitivity.json").read_text()))
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
