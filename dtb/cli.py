"""Command line: ``dtb run | assimilate | inspect | plot | compare | partition | connectome | slurm | config``. Thin: parses, calls, prints.

A `DTBError` prints one line ``dtb: error: ...`` and exits with status 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import traceback
import warnings

from dtb.errors import DTBError, LauncherError, WriteError


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dtb")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _say(line: str) -> None:
    """``line`` to stderr in one write: the lines of ranks that fail at once never run into each other."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line as every other error (the usage is one ``--help`` away)."""

    def error(self, message: str):
        from dtb.context import launcher_rank

        if launcher_rank() == 0:  # every rank of a job meets it
            _say(f"dtb: error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="dtb", description="Digital twin brain: spiking whole-brain simulation.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--version", action="version", version=f"dtb {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="build and simulate a network, write a run file")
    run.add_argument("config", nargs="?", help="TOML run configuration (defaults: the bundled HCP brain)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one key (repeatable), e.g. --set simulation.t_ms=500")
    run.add_argument("--out", default=None, help="run file to write (default: dtb_run.h5)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    run.add_argument("--resume", metavar="RUN", default=None,
                     help="finish the stopped run RUN (its final path or RUN.partial) from its last checkpoint; "
                          "its stored config is used unless CONFIG is given, --set may extend simulation.t_ms")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--backend", choices=("cpu", "gpu", "auto", "gpu_emulated"), default=None,
                     help="compute backend (default: simulation.backend)")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    asm = sub.add_parser("assimilate", help="fit region hyperparameters to a recorded BOLD (ensemble Kalman filter)")
    asm.add_argument("config", nargs="?", help="TOML configuration (defaults as dtb run, plus [assimilation])")
    asm.add_argument("--data", default=None, help="HDF5 file with connectomes and BOLD (default: the bundled HCP file)")
    asm.add_argument("--subject", default=None, help="subject id in the data file (default: wholebrain.subject)")
    asm.add_argument("--members", type=int, default=None, help="ensemble size (default: assimilation.members)")
    asm.add_argument("--trs", type=int, default=None, help="TRs to assimilate (default: assimilation.trs)")
    asm.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    asm.add_argument("--out", default=None, help="run file to write (default: dtb_assimilation.h5)")
    asm.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    asm.add_argument("--resume", metavar="RUN", default=None,
                     help="finish the stopped assimilation RUN from its last checkpoint (simulation.checkpoint_ms)")
    asm.add_argument("--quiet", action="store_true", help="no progress bars")
    asm.add_argument("--backend", choices=("cpu", "gpu", "auto", "gpu_emulated"), default=None,
                     help="compute backend (default: simulation.backend)")
    asm.add_argument("--json", action="store_true", help="print the summary as JSON")
    asm.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    ins = sub.add_parser("inspect", help="print the facts of a run file")
    ins.add_argument("run_file")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.add_argument("--verify", action="store_true",
                     help="also read every dataset and check it against the sha256 digests stored when the run "
                          "finished")
    ins.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    plo = sub.add_parser("plot", help="draw a run: raster, rates, BOLD and its FC")
    plo.add_argument("run_file")
    plo.add_argument("-o", "--out", default=None, help="image to write (default: RUN_FILE with .png)")
    plo.add_argument("--neurons", type=int, default=500, help="about how many neurons the raster shows")
    _compare_args(plo)
    plo.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    cmp = sub.add_parser("compare", help="a run's BOLD FC beside a recorded (empirical) FC: their correlation, with "
                                         "the SC-FC baseline")
    cmp.add_argument("run_file")
    _compare_args(cmp)
    cmp.add_argument("-o", "--out", default=None, help="also draw the two FCs and their scatter into this image")
    cmp.add_argument("--json", action="store_true", help="machine-readable output")
    cmp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    par = sub.add_parser("partition", help="split a network over P ranks and report balance and traffic (no MPI)")
    par.add_argument("config", nargs="?")
    par.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    par.add_argument("--ranks", type=int, required=True, help="number of ranks P")
    par.add_argument("--strategy", default=None,
                     help="hierarchical, metis, greedy or contiguous (default: simulation.partition)")
    par.add_argument("--rate-hz", type=float, default=5.0,
                     help="nominal firing rate for traffic (default 5; above 0, at most 10000)")
    par.add_argument("--ranks-per-node", type=int, default=8, help="for the two-level exchange (default 8)")
    par.add_argument("--json", action="store_true", help="machine-readable output")
    par.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    con = sub.add_parser("connectome", help="read a connectome (TVB, CSV/TSV, NPY, .mat, HDF5): show it, or import "
                                            "it as dtb's HDF5")
    con_sub = con.add_subparsers(dest="action", required=True)
    for action, text in (("show", "print a connectome's regions, density, symmetry, sizes and delays"),
                         ("import", "convert a connectome to dtb's HDF5 (what wholebrain.connectome reads fastest)")):
        c = con_sub.add_parser(action, help=text)
        c.add_argument("source", help="dtb HDF5, TVB connectivity (.zip or folder), or a weights matrix "
                                      "(.csv/.tsv/.txt/.npy/.mat)")
        c.add_argument("--subject", default=None,
                       help="subject id inside an HDF5 source (default 101309); for import also the id written "
                            "(default: the source's, or its file name)")
        c.add_argument("--lengths", default=None, help="fibre lengths (mm), a matrix file like the weights")
        c.add_argument("--labels", default=None, help="region names, one per line or a lookup table")
        c.add_argument("--sizes", default=None, help="region sizes, one per line or label,value rows")
        c.add_argument("--sc-rows", choices=("targets", "sources"), default="targets",
                       help="the matrices' rows are the receiving regions (TVB, dtb; default) or the sending ones")
        if action == "show":
            c.add_argument("--velocity-m-s", type=float, default=5.0,
                           help="conduction velocity for the delays (default 5, wholebrain's; 0.01 to 1000)")
            c.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            c.add_argument("-o", "--out", required=True, help="HDF5 file to write (*.h5)")
            c.add_argument("--overwrite", action="store_true", help="replace an existing file")
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    slu = sub.add_parser("slurm", help="write an sbatch script that runs dtb over MPI ranks")
    slu.add_argument("config", nargs="?")
    slu.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    slu.add_argument("--nodes", type=int, required=True)
    slu.add_argument("--ntasks-per-node", type=int, required=True, help="MPI ranks per node")
    slu.add_argument("--gpus-per-task", type=int, default=0, help="GPUs per rank (GPU template when > 0)")
    slu.add_argument("--cpus-per-task", type=int, default=None,
                     help="cores (kernel threads) per rank (default: the run's simulation.threads, or 1 when that is 0)")
    slu.add_argument("--time", default="01:00:00", help="time limit (default %(default)s)")
    slu.add_argument("--job-name", default="dtb")
    slu.add_argument("--partition", default=None)
    slu.add_argument("--account", default=None)
    slu.add_argument("--mem", default=None, help="memory per node, as sbatch --mem (e.g. 64G)")
    slu.add_argument("--setup", action="append", default=[], metavar="LINE",
                     help="a shell line run before srun, e.g. 'module load openmpi' (repeatable)")
    slu.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                     help="another #SBATCH option, e.g. --constraint=a100 (repeatable)")
    slu.add_argument("--out", default="dtb_run.h5", help="run file the job writes (default %(default)s)")
    slu.add_argument("--script", "-o", "--output", dest="output", default=None,
                     help="write the sbatch script here instead of stdout")
    slu.add_argument("--overwrite", action="store_true", help="replace an existing script")
    slu.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    cfg = sub.add_parser("config", help="print the resolved configuration as TOML (or every key with --keys)")
    cfg.add_argument("config", nargs="?")
    cfg.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    cfg.add_argument("--keys", action="store_true", help="a table of every key, its default and allowed values")
    cfg.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0 (argparse names the option when this refuses)."""
    value = float(text)
    if not 0 <= value < 1e9:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r}: seconds, a number >= 0 and < 1e9")
    return value


def _compare_args(p) -> None:
    p.add_argument("--data", default=None, help="HDF5 file with the recorded BOLD (default: the bundled HCP file"
                                                "; for dtb plot, no comparison without it)")
    p.add_argument("--subject", default=None, help="subject id in the data file (default: the run's)")
    p.add_argument("--transient-s", type=_seconds, default=10.0,
                   help="seconds of the run's BOLD left out of its FC, the rise from rest (default 10)")


def describe() -> str:
    """Every command, its usage and its options as Markdown (docs/reference/cli.md is this, under an intro)."""
    commands = _parser()._subparsers._group_actions[0]
    out = []

    def section(full, parser, text):
        out.extend([f"## dtb {full}", ""] + ([text[0].upper() + text[1:] + ".", ""] if text else []))
        usage = " ".join(parser.format_usage().replace("usage: ", "").split())
        out.extend(["```text", usage, "```", "", "| argument | meaning |", "|---|---|"])
        for a in parser._actions:
            if a.help == argparse.SUPPRESS or isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            names = ", ".join(f"`{o}`" for o in a.option_strings) or f"`{a.dest}`"
            out.append(f"| {names} | {(a.help or '').replace('%(default)s', str(a.default)).replace('|', '/')} |")
        out.append("")

    helps = {a.dest: a.help for a in commands._choices_actions}
    for name, parser in commands.choices.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            sub_helps = {a.dest: a.help for a in nested[0]._choices_actions}
            for sub, p in nested[0].choices.items():
                section(f"{name} {sub}", p, sub_helps.get(sub))
        else:
            section(name, parser, helps.get(name))
    return "\n".join(out)


def format_assimilation(s: dict) -> str:
    """Human-readable summary of an assimilation (what ``dtb assimilate`` and ``dtb inspect`` print)."""
    if s.get("unfinished"):
        return (f"dtb {s['dtb_version']} | unfinished assimilation of subject {s['subject']} ({s['data']}) | seed "
                f"{s['seed']} | {s['n_ranks']} rank(s)\ncheckpoint after {s['trs_done']} of {s['trs']} TRs "
                f"({s['members']} members); finish it with dtb assimilate --resume")
    m = s["metrics"]
    calib = s.get("calibration_trs", 0)
    lines = [
        f"dtb {s['dtb_version']} | assimilation of subject {s['subject']} ({s['data']}) | seed {s['seed']} | "
        f"{s['n_ranks']} rank(s) x {s['threads']} thread(s), {s['backend']}",
        f"ensemble   {s['members']} members x {s['neurons_per_member']:,} neurons ({s['n_synapses']:,} synapses), "
        f"fitting {', '.join(s['fitted'])} in {s['n_regions']} regions",
        f"time       build {s['build_s']:.1f} s, TRs {calib} to {s['trs'] - 1} of {s['tr_s']:g} s fitted"
        + (f" and {s['forecast_trs']} held-out TRs forecast" if s.get("forecast_trs") else "")
        + f" in {s['assimilation_s']:.1f} s ({s['s_per_tr']:.2f} s per TR)"
        + (f", validation {s['validation_s']:.1f} s" if "validation_s" in s else ""),
        f"fit window (in-sample: scored on the TRs the filter saw; the first {calib} TRs only calibrate the "
        "observation)",
    ]
    sweep = s.get("sweep")
    if sweep:
        b = sweep["best"]
        w_i = sweep["w_i_trace"][b]
        lines.insert(2, f"sweep      {len(sweep['fc_r'])} pairs of global coupling x inhibitory weight on the fit "
                        f"window: kept G {sweep['coupling'][b]:g}"
                        + ("" if w_i != w_i else f", w_i_trace {w_i:g}")
                        + f" (fit-window FC r {sweep['fc_r'][b]:.3f}, in-sample; worst pair {min(sweep['fc_r']):.3f})")
    for name in ("tracking_r", "forecast_r", "persistence_r", "forecast5_r", "persistence5_r", "replay_fc_r"):
        if name in m:
            lines.append(f"  {name:<24} {m[name]:.3f}")
    spec = s.get("specificity")
    if spec:
        best = max(spec["other_r"].values(), default=float("nan"))
        lines.append(f"  {'replay specificity':<24} " + ("n/a (no other subject in the data file)" if not spec["other_r"]
                     else f"{'yes' if spec['specific'] else 'no'} (own FC r {spec['own_r']:.3f}, best other "
                          f"{best:.3f})"))
    if "heldout_fc_r" in m:
        lines.append(f"held out   (TRs {s['trs']} to {s['trs'] + s['heldout_trs'] - 1}: never seen by the fit)")
        lines.append(f"  FC r, the twin           {m['heldout_fc_r']:.3f}   beside: SC {m['baseline_sc_fc_r']:.3f}, "
                     f"log SC {m['baseline_log_sc_fc_r']:.3f}, unfitted model {m['baseline_unfitted_fc_r']:.3f}, "
                     f"group mean {_r(m['baseline_group_fc_r'], 'no other subject')}, own fit window (ceiling) "
                     f"{m['retest_fc_r']:.3f}")
        spec = s.get("heldout_specificity") or {}
        best = max(spec.get("other_r", {}).values(), default=float("nan"))
        lines.append("  specific                 " + ("n/a (no other subject in the data file)"
                     if not spec.get("other_r") else f"{'yes' if m['specific'] else 'no'} (best other subject "
                                                    f"{best:.3f})"))
        for lag, k, a in ((1, "", ""), (5, "5", "_5")):
            if f"heldout_forecast{k}_r" in m:
                lines.append(f"  {lag}-TR forecast r (mse)    model {m[f'heldout_forecast{k}_r']:.3f} "
                             f"({m[f'heldout_forecast{k}_mse']:.2e}), persistence "
                             f"{m[f'heldout_persistence{k}_r']:.3f} ({m[f'heldout_persistence{k}_mse']:.2e}), AR(1) "
                             f"{m[f'heldout_ar1{a}_r']:.3f} ({m[f'heldout_ar1{a}_mse']:.2e})")
    elif "heldout_trs" in s:
        lines.append("held out   none: no TRs of the recording are left after the fit (all figures are in-sample)")
    if "path" in s:
        lines.append(f"run file   {s['path']}")
    return "\n".join(lines)


def format_summary(s: dict) -> str:
    """Human-readable run summary (what ``dtb run`` and ``dtb inspect`` print)."""
    if s.get("kind") == "assimilation":
        return format_assimilation(s)
    lines = [
        f"dtb {s['dtb_version']} | {s['model']} ({s['neuron_model']}) | seed {s['seed']} | "
        f"{s['n_ranks']} rank(s) x {s['threads']} thread(s), {s['backend']}",
        f"network    {s['n_neurons']:,} neurons, {s['n_synapses']:,} synapses, "
        f"{s['bytes_per_synapse']:.2f} bytes/synapse",
        f"build      {s['build_s']:.2f} s",
        f"simulation {s['t_ms']:g} ms in {s['sim_s']:.2f} s (real-time factor {s['rtf']:.2f}), "
        f"{s['n_spikes']:,} spikes",
        f"rates      E {s['rate_e_hz']:.2f} Hz, I {s['rate_i_hz']:.2f} Hz, all {s['mean_rate_hz']:.2f} Hz",
    ]
    rates = s["rates_hz"]
    if len(rates) <= 16:
        lines.append("           " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    else:
        vals = sorted(rates.values())
        lines.append(f"           {len(rates)} populations: min {vals[0]:.2f} Hz, median "
                     f"{vals[len(vals) // 2]:.2f} Hz, max {vals[-1]:.2f} Hz")
    if s.get("connectome"):
        lines.append(f"input      connectome {s['connectome']}")
    if s.get("unfinished"):
        lines.append("checkpoint of an unfinished run: finish it with dtb run --resume")
    if "path" in s:
        lines.append(f"run file   {s['path']}")
    return "\n".join(lines)


def _common_overrides(args) -> list[str]:
    """--set items plus what --quiet and --backend stand for."""
    return (list(args.overrides) + (["recording.progress=false"] if args.quiet else [])
            + ([f"simulation.backend={args.backend}"] if args.backend else []))


def _run(args) -> int:
    from dtb import driver
    from dtb.config import load_config

    overrides = _common_overrides(args)
    if args.resume is None:
        out = "dtb_run.h5" if args.out is None else args.out
        cfg = load_config(args.config, overrides)
        summary = driver.run(cfg, out, overwrite=args.overwrite, inputs=[args.config])
    else:
        from dtb.errors import ConfigError
        from dtb.io.checkpoint import read_checkpoint, resume_target

        out = resume_target(args.resume)
        if args.overwrite or (args.out is not None and resume_target(args.out) != out):
            raise ConfigError("--resume finishes the run it names: leave out --out and --overwrite")
        ckpt = read_checkpoint(out)
        cfg = load_config(args.config, overrides, text=None if args.config else ckpt.config_toml)
        summary = driver.run(cfg, out, resume=True, inputs=[args.config])
    summary["path"] = str(out)
    from dtb.context import launcher_rank

    if launcher_rank() == 0:  # every rank holds the summary; one prints it
        print(format_summary(summary))
    return 0


def _assimilate(args) -> int:
    from dtb.assimilation.driver import assimilate
    from dtb.config import ASSIMILATION_DEFAULTS, load_config

    overrides = _common_overrides(args)
    overrides += [f"assimilation.{k}={v}" for k, v in (("members", args.members), ("trs", args.trs)) if v is not None]
    if args.resume is None:
        out = "dtb_assimilation.h5" if args.out is None else args.out
        cfg = load_config(args.config, overrides, defaults=ASSIMILATION_DEFAULTS)
        summary = assimilate(cfg, out, data=args.data, subject=args.subject, overwrite=args.overwrite,
                             inputs=[args.config])
    else:
        from dtb.errors import ConfigError
        from dtb.io.checkpoint import read_checkpoint, resume_target

        out = resume_target(args.resume)
        if args.overwrite or args.data or args.subject or (args.out is not None and resume_target(args.out) != out):
            raise ConfigError("--resume finishes the assimilation it names, with its data and subject: leave out "
                              "--out, --overwrite, --data and --subject")
        stored = read_checkpoint(out).config_toml
        cfg = load_config(args.config, overrides, text=None if args.config else stored)
        summary = assimilate(cfg, out, data=cfg.wholebrain.connectome, subject=cfg.wholebrain.subject, resume=True,
                             inputs=[args.config])
    summary["path"] = str(out)
    from dtb.context import launcher_rank

    if launcher_rank() == 0:
        print(json.dumps(summary, indent=1) if args.json else format_assimilation(summary))
    return 0


def _inspect(args) -> int:
    from dtb.io.runfile import read_summary

    facts = read_summary(args.run_file)
    if args.verify:
        from dtb.io.runfile import verify_file

        facts["verified"] = verify_file(args.run_file)
    if args.json:
        print(json.dumps(facts, indent=1))
        return 0
    text = format_summary(facts)
    if args.verify:
        v = facts["verified"]
        text += (f"\nverified   {v['datasets']} datasets ({v['bytes'] / 2**20:.1f} MiB) match their sha256"
                 + (f", {len(v['virtual'])} of them virtual, read from <run>.parts" if v["virtual"] else ""))
    print(text)
    return 0


def _plot(args) -> int:
    from pathlib import Path

    from dtb.errors import ConfigError
    from dtb.plot import plot_run

    if args.neurons < 1:
        raise ConfigError(f"--neurons {args.neurons}: must be >= 1")
    out = args.out if args.out is not None else str(Path(args.run_file).with_suffix(".png"))
    _check_picture(out, args)
    data, subject = _compare_target(args) if args.data is not None or args.subject is not None else (None, None)
    panels = plot_run(args.run_file, out, args.neurons, data=data, subject=subject, transient_s=args.transient_s)
    print(f"{out}: {', '.join(panels)}")
    return 0


def _check_picture(out: str, args) -> None:
    """A `DTBError` unless ``out`` may receive a figure: not the run file or data file it draws, not a folder,
    device or FIFO (an existing picture is replaced)."""
    from pathlib import Path

    from dtb.errors import ConfigError
    from dtb.io.runfile import check_output

    if out and Path(out).resolve() == Path(args.run_file).resolve():
        raise ConfigError(f"the picture {out!r} would replace the run file it draws: give another -o")
    check_output(out, True, inputs=[args.run_file, args.data])
    try:
        with open(out, "rb") as f:
            head = f.read(64).lstrip()
    except OSError:
        return  # nothing there (check_output refused what is not a regular file)
    if head and not head.startswith(_PICTURE_MAGIC):  # a file with an image suffix that holds something else
        raise ConfigError(f"{out!r} exists and is not a picture: it would be replaced by the figure; give another "
                          "-o, or remove it")


#: how the pictures matplotlib writes begin (PNG, PDF, SVG, PostScript, JPEG, TIFF): only these are replaced
_PICTURE_MAGIC = (b"\x89PNG", b"%PDF", b"<?xml", b"<svg", b"%!PS", b"\xff\xd8", b"II*\x00", b"MM\x00*")


def _compare_target(args) -> tuple:
    """The data file and subject a run is compared with: the options, else the bundled file and the run's
    subject."""
    from dtb.connectome.connectome import bundled_connectome_path
    from dtb.io.analysis import open_run

    subject = args.subject
    if subject is None:
        with open_run(args.run_file) as run:
            cfg = run.config
        subject = cfg.wholebrain.subject if cfg is not None else "101309"
    return args.data or str(bundled_connectome_path()), subject


def _compare(args) -> int:
    from pathlib import Path

    from dtb.io.analysis import compare_fc, open_run

    if args.out is not None:
        _check_picture(args.out, args)
    data, subject = _compare_target(args)
    with open_run(args.run_file) as run:
        cmp = compare_fc(run, data, subject, args.transient_s)
        regions = run.regions
    if args.out:
        from dtb.plot import plot_compare

        plot_compare(cmp, regions, args.out, f"{Path(args.run_file).name} against subject {subject}")
    facts = {k: v for k, v in cmp.items() if not k.startswith("fc_") or k == "fc_r"}
    if args.json:
        print(json.dumps(facts, indent=1))
        return 0
    base = f"{cmp['sc_fc_r']:.3f}" if cmp["sc_fc_r"] is not None else "n/a (no connectome in the data file)"
    print(f"{args.run_file} against subject {subject} ({data})")
    print(f"run FC          {cmp['run_trs']} TRs of {cmp['tr_s']:g} s (the first {cmp['skipped_trs']} left out: "
          f"{args.transient_s:g} s transient)")
    print(f"empirical FC    {cmp['empirical_trs']} TRs of {cmp['empirical_tr_s']:g} s")
    print(f"FC r            {cmp['fc_r']:.3f} (Pearson r of the {len(regions) * (len(regions) - 1) // 2:,} region "
          "pairs)")
    print(f"baseline SC-FC  {base} (the subject's structural coupling as a predictor of its FC)")
    if args.out:
        print(f"figure          {args.out}")
    return 0


def _partition(args) -> int:
    from dtb.config import check_value, load_config
    from dtb.errors import ConfigError
    from dtb.model.registry import network_from_config
    from dtb.partition import cross_node_lower_bound, partition, quality

    cfg = load_config(args.config, args.overrides)
    if not 1 <= args.ranks_per_node <= 100_000:  # as simulation.ranks_per_node
        raise ConfigError(f"--ranks-per-node {args.ranks_per_node}: must be >= 1 and <= 100,000")
    check_value("pd14", "bg_rate_hz", args.rate_hz, "--rate-hz")  # a rate's bounds (NaN, 1e-320 refused)
    if args.rate_hz == 0:
        raise ConfigError("--rate-hz 0: at 0 Hz there is no traffic to weigh; give a rate > 0")
    import time
    import tracemalloc

    recipe = network_from_config(cfg).recipe()
    tracemalloc.start()
    t0 = time.perf_counter()
    part = partition(recipe, args.ranks, cfg.simulation.partition if args.strategy is None else args.strategy,
                     seed=cfg.simulation.seed, ranks_per_node=args.ranks_per_node)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    q = quality(recipe, part, rate_hz=args.rate_hz, ranks_per_node=args.ranks_per_node)
    q.update(model=recipe.model, n_neurons=recipe.n_neurons, n_synapses=float(recipe.incoming_synapses().sum()),
             partition_s=seconds, partition_peak_mib=peak / 2**20,
             cross_node_spikes_lower_bound=cross_node_lower_bound(recipe, args.ranks, rate_hz=args.rate_hz,
                                                                  ranks_per_node=args.ranks_per_node))
    base = q if part.strategy == "contiguous" else \
        quality(recipe, partition(recipe, args.ranks, "contiguous"), rate_hz=args.rate_hz,
                ranks_per_node=args.ranks_per_node)
    compared = ("imbalance_neurons", "imbalance_synapses", "imbalance_input_spikes", "spikes_sent_per_rank_epoch",
                "spikes_sent_per_rank_epoch_max", "cross_node_spikes_per_rank_epoch", "messages_two_level")
    q["contiguous"] = {key: base[key] for key in compared}
    if args.json:
        print(json.dumps(q, indent=1))
        return 0
    print(f"{q['model']}: {q['n_neurons']:,} neurons, {q['n_synapses']:.3g} synapses over {q['n_ranks']:,} ranks "
          f"({q['strategy']}, {q['n_ranges']:,} gid ranges)")
    print(f"neurons per rank    max {q['neurons_max']:,.0f}, mean {q['neurons_mean']:,.0f} "
          f"(imbalance {q['imbalance_neurons']:.3f})")
    print(f"synapses per rank   max {q['synapses_max']:,.0f}, mean {q['synapses_mean']:,.0f} "
          f"(imbalance {q['imbalance_synapses']:.3f})")
    print(f"cut fraction        {q['cut_fraction']:.3f} of synapses have their source on another rank")
    print(f"per rank per epoch  ({q['epoch_ms']:g} ms at {q['rate_hz']:g} Hz): "
          f"{q['spikes_sent_per_rank_epoch']:,.1f} spike records sent (max {q['spikes_sent_per_rank_epoch_max']:,.1f})")
    print(f"messages            flat {q['messages_flat']:,.1f} (max {q['messages_flat_max']:,.1f}), two-level "
          f"{q['messages_two_level']:,.1f} (max {q['messages_two_level_max']:,.1f}; {q['ranks_per_node']} ranks/node)")
    print(f"input spikes        {q['input_spikes_per_rank_epoch']:,.0f} synaptic events per rank-epoch (imbalance "
          f"{q['imbalance_input_spikes']:.3f}); received {q['spikes_received_per_rank_epoch']:,.1f} records "
          f"(max {q['spikes_received_per_rank_epoch_max']:,.1f})")
    print(f"cross-node          {q['cross_node_spikes_per_rank_epoch']:,.1f} spike records per rank-epoch (max "
          f"{q['cross_node_spikes_per_rank_epoch_max']:,.1f}), {q['messages_cross_node']:,.1f} messages; no "
          f"partition within 3 % of balance goes below {q['cross_node_spikes_lower_bound']:,.1f}")
    print(f"partitioning        {q['partition_s']:.2f} s, {q['partition_peak_mib']:,.1f} MiB peak (Python and NumPy "
          "allocations)")
    if part.strategy != "contiguous":
        c = q["contiguous"]

        def rel(key):
            return f"{100 * (q[key] / c[key] - 1):+.1f} %" if c[key] else "n/a"

        print(f"vs contiguous       cross-node spikes {rel('cross_node_spikes_per_rank_epoch')}, spikes sent "
              f"{rel('spikes_sent_per_rank_epoch')} (max {rel('spikes_sent_per_rank_epoch_max')}), two-level "
              f"messages {rel('messages_two_level')}, imbalance {c['imbalance_neurons']:.3f} -> "
              f"{q['imbalance_neurons']:.3f}")
    return 0


def _connectome(args) -> int:
    from dtb.config import check_value
    from dtb.connectome.connectome import check_subject_id, load_connectome, save_connectome, summarize
    from dtb.errors import ConfigError

    if args.subject is not None and not args.subject.strip():
        raise ConfigError("--subject '': give a subject id, or leave --subject out")
    if args.action == "import":  # what is wrong with the output is said before the input is read
        from dtb.io.runfile import check_output

        out = check_output(args.out, args.overwrite,
                           inputs=[p for p in (args.source, args.lengths, args.labels, args.sizes) if p])
        if out.suffix.lower() not in (".h5", ".hdf5", ".hdf"):
            raise ConfigError(f"-o {str(args.out)!r}: an imported connectome is an HDF5 file: name it *.h5")
        if args.subject is not None:
            check_subject_id(args.subject)
    else:
        check_value("wholebrain", "conduction_velocity_m_s", args.velocity_m_s, "--velocity-m-s")
    con = load_connectome(args.source, args.subject or "101309", lengths=args.lengths, labels=args.labels,
                          sizes=args.sizes, sc_rows=args.sc_rows)
    if args.action == "import":
        save_connectome(con, out, args.subject)
        print(f"{out}: {con.n_regions} regions, subject {args.subject or con.subject} "
              f"(run it: dtb run --set wholebrain.connectome={out} --set wholebrain.subject="
              f"{args.subject or con.subject})")
        return 0
    q = summarize(con, args.velocity_m_s)
    if args.json:
        print(json.dumps(q, indent=1))
        return 0
    alone = q["without_input"]
    print(f"{q['source']} (subject {q['subject']}): {q['n_regions']} regions, {q['n_connections']:,} directed "
          f"connections (density {q['density']:.3f})")
    print(f"symmetry      {'symmetric' if q['symmetric'] else 'directed'} (asymmetry {q['asymmetry']:.3g}; "
          "rows are the receiving regions)")
    print(f"sizes         {q['size_min']:g} to {q['size_max']:g} (median {q['size_median']:g}, spread "
          f"{q['size_spread']:.1f}x)")
    if "len_mm_min" in q:
        print(f"weights       {q['sc_min']:.4g} to {q['sc_max']:.4g}")
        print(f"fibre length  {q['len_mm_min']:.1f} to {q['len_mm_max']:.1f} mm (median {q['len_mm_median']:.1f})")
        print(f"delays        {q['delay_ms_min']:.2f} to {q['delay_ms_max']:.2f} ms at {q['conduction_velocity_m_s']:g} "
              "m/s")
    print(f"no input      {len(alone)} region(s){': ' + ', '.join(alone[:8]) if alone else ''}"
          f"{', ...' if len(alone) > 8 else ''}")
    print(f"labels        {', '.join(con.labels[:6])}{', ...' if con.n_regions > 6 else ''}")
    return 0


def _slurm(args) -> int:
    from dtb.config import load_config
    from dtb.slurm import render

    from dtb.errors import ConfigError

    cfg = load_config(args.config, args.overrides)  # a bad config fails now, not in the queue
    cpus = args.cpus_per_task if args.cpus_per_task is not None else (cfg.simulation.threads or 1)
    if args.out.endswith((".sbatch", ".sh", ".slurm")):
        raise ConfigError(f"--out {args.out!r} is the run file the job writes (HDF5); the script goes to --script")
    script = render(nodes=args.nodes, ntasks_per_node=args.ntasks_per_node, time=args.time, out=args.out,
                    config=args.config, overrides=args.overrides, gpus_per_task=args.gpus_per_task,
                    cpus_per_task=cpus, job_name=args.job_name, partition=args.partition,
                    account=args.account, mem=args.mem, setup=args.setup, sbatch=args.sbatch)
    if args.output is not None:  # "" is refused as an empty path, not taken for stdout
        from dtb.io.runfile import check_output, write_replacing

        path = check_output(args.output, args.overwrite, inputs=[args.config])
        write_replacing(path, lambda tmp: tmp.write_text(script), "writing the script")
    else:
        print(script, end="")
    return 0


def _config(args) -> int:
    from dtb.config import describe, load_config

    if args.keys:
        print(describe())
    else:
        print(load_config(args.config, args.overrides).to_toml(), end="")
    return 0


class _Terminated(BaseException):
    """SIGTERM (a scheduler's time limit, ``scancel``), raised where the process is, so that the job cleans up."""


#: seconds after which a SIGTERM that a finalizer swallowed is raised again
_REDELIVER_S = 0.01


def _on_sigterm(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _terminate_on_sigterm():
    """Within: SIGTERM raises `_Terminated` where the main thread is, and is never lost.

    A signal's exception raised inside a finalizer (``__del__``, a weakref callback, run whenever the garbage
    collector runs) cannot propagate: Python prints it and goes on, and the job would run to its end past the
    scheduler's limit. Such a swallowed `_Terminated` re-arms a one-shot timer whose SIGALRM raises it again a
    moment later, in ordinary code. Handlers and hook are restored on exit.
    """
    import signal

    def unraisable(info):
        if isinstance(info.exc_value, _Terminated):
            signal.setitimer(signal.ITIMER_REAL, _REDELIVER_S)
        else:
            previous_hook(info)

    previous = {sig: signal.signal(sig, _on_sigterm) for sig in (signal.SIGTERM, signal.SIGALRM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = previous_hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dtb`` command; returns the exit status."""
    import threading

    args = _parser().parse_args(argv)
    # started with standard output or error closed (>&-, 2>&-): what goes there goes nowhere
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    # signal handlers belong to the main thread (a caller may run main() from another)
    guard = _terminate_on_sigterm() if threading.current_thread() is threading.main_thread() else \
        contextlib.nullcontext()
    for stream in (sys.stdout, sys.stderr):  # a label the terminal's encoding lacks is escaped, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    stdout = sys.stdout
    sys.stdout = _Output(stdout)
    try:
        with guard, warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return _main(args)
    finally:
        sys.stdout = stdout


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line ``dtb: warning: ...``, from rank 0 only (every rank meets the same ones)."""
    from dtb.context import launcher_rank

    if launcher_rank() == 0:
        _say(f"dtb: warning: {message}")


def _reading(command, args) -> int:
    """Run a command that only reads a run file: a file that is HDF5 but not what dtb wrote is one line, whatever
    the code meets first."""
    from dtb.io.analysis import NOT_AS_WRITTEN, not_readable

    try:
        return command(args)
    except (DTBError, BrokenPipeError):
        raise
    except NOT_AS_WRITTEN as err:
        also = " (or the data file it is compared with)" if args.command != "inspect" else ""
        raise not_readable(args.run_file, err, also) from err


def _r(value, missing: str) -> str:
    """A correlation to 3 decimals, or why there is none (NaN: nothing to correlate with)."""
    return f"{value:.3f}" if value is not None and math.isfinite(value) else f"n/a ({missing})"


class _OutputError(Exception):
    """Standard output failed (not a closed pipe): its strerror."""


class _Output:
    """Standard output whose write errors (a full disk, an I/O error) are told apart from every other OSError."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise _OutputError(err.strerror or str(err)) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise _OutputError(err.strerror or str(err)) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _drop_stdout() -> None:
    """Point standard output at /dev/null, so that nothing more (the interpreter's last flush included) fails."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _end_every_rank(status: int) -> int:
    """``status``, after ending every rank of an MPI job with it: a signal may have reached this rank alone (Slurm
    signals every task, a user one), and the others would wait for it in their next collective."""
    from dtb.context import abort_all

    abort_all(status)
    return status


def _check_environment() -> None:
    """Variables that the libraries would meet with a traceback (numba reads its own at import)."""
    from dtb.errors import ConfigError

    threads = os.environ.get("NUMBA_NUM_THREADS")
    if threads is not None and not (threads.strip().isdigit() and int(threads) > 0):
        raise ConfigError(f"NUMBA_NUM_THREADS={threads[:50]!r}: must be a whole number > 0, or unset "
                          "(simulation.threads sets the threads of a run)")


def _main(args) -> int:
    try:
        _check_environment()
        commands = {"run": _run, "assimilate": _assimilate, "inspect": _inspect, "plot": _plot, "compare": _compare,
                    "partition": _partition, "connectome": _connectome, "slurm": _slurm, "config": _config}
        command = commands[args.command]
        status = _reading(command, args) if args.command in ("inspect", "plot", "compare") else command(args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handlers, not at the interpreter's exit
        return status
    except DTBError as err:
        from dtb.context import abort_all, launcher_rank, launcher_size, mpi_running, mpi_world_size, stale_launcher

        if args.debug:
            traceback.print_exc()
        if mpi_running():
            # the error may be this rank's alone: say which, and end every rank
            _say(f"dtb: error: rank {launcher_rank()}: {err}")
            abort_all(2)
        elif launcher_rank() == 0 or launcher_size() == 1 or mpi_world_size() == 1 or stale_launcher() or \
                isinstance(err, LauncherError):
            # before MPI starts every rank meets the same error: one line is enough (a job of one rank, or
            # a launcher's variables left in a shell without one, is its own rank 0; so is a process that MPI
            # started alone)
            _say(f"dtb: error: {err}")
        if isinstance(err, WriteError):
            # HDF5 would retry the failed writes of the open files at exit, print a page and may crash:
            # everything that matters (the last checkpoint) is on disk, so leave now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2
    except KeyboardInterrupt:
        _say("dtb: interrupted")
        return _end_every_rank(130)
    except MemoryError:
        from dtb.context import abort_all, launcher_rank, mpi_running

        _say(f"dtb: error: rank {launcher_rank()}: out of memory (the preflight, simulation.memory_check, refuses "
             "what it can foresee before anything is allocated)")
        if mpi_running():
            abort_all(2)
        return 2
    except BrokenPipeError:
        # the reader went away (``dtb inspect --json | head``): nothing more to say, and nowhere to say it
        _drop_stdout()
        return 141
    except _OutputError as err:
        # a full disk or an I/O error under ``> file``: the output is incomplete, say so once
        _drop_stdout()
        _say(f"dtb: error: cannot write the output ({err})")
        return 2
    except _Terminated:
        _say("dtb: terminated (SIGTERM): nothing under the final name; the last checkpoint, if any, is kept for "
             "--resume")
        return _end_every_rank(143)
    except BaseException:
        from dtb.context import abort_all, mpi_running

        if mpi_running():
            # a bug or a signal on one rank: the others would wait for it forever in their next collective
            traceback.print_exc()
            abort_all(1)
        raise
