"""run: the main job, from a configuration to a complete run file."""

from __future__ import annotations

import resource
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from dtb.config import Config, load_config
from dtb.connectome.connectome import load_connectome
from dtb.connectome.pd14 import pd14_recipe
from dtb.connectome.wholebrain import wholebrain_recipe
from dtb.activity import RegionActivity, steps_per_ms
from dtb.bold import Balloon, bold_params
from dtb.context import Context, cuda_aware_mpi, launcher_rank, launcher_size
from dtb.errors import ConfigError, ResourceError
from dtb.exchange import DryRunExchange, make_exchange
from dtb.io.checkpoint import (check_resumable, load_checkpoint, rank_state, read_rank_state, restore_rank_state,
                               state_path, write_rank_state)
from dtb.io.recording import Recorder
from dtb.io.runfile import RunWriter, check_output, parts_dir
from dtb.device_simulation import DeviceSimulation
from dtb.kernels.gpu import device_free_bytes, make_device, resolve_backend
from dtb.model import hyper
from dtb.model.recipe import Recipe
from dtb.network import build_local
from dtb.partition import partition as make_partition
from dtb.preflight import preflight
from dtb.simulation import Simulation


def version() -> str:
    try:
        return metadata.version("dtb")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def make_recipe(cfg: Config) -> Recipe:
    """The network a configuration asks for (reads the connectome for 'wholebrain')."""
    if cfg.model == "pd14":
        return pd14_recipe(cfg)
    con = load_connectome(cfg.connectome_path(), cfg.wholebrain.subject)
    return wholebrain_recipe(cfg, con)


def steps_of(name: str, value_ms: float, dt_ms: float) -> int:
    """``value_ms`` in steps of ``dt_ms``; a `ConfigError` unless it is a whole number of steps."""
    n = value_ms / dt_ms
    if abs(n - round(n)) > 1e-9 * max(1.0, n) or round(n) < 1:
        raise ConfigError(f"{name} = {value_ms:g}: must be a positive multiple of simulation.dt_ms = {dt_ms:g}")
    return int(round(n))


class _Progress:
    """tqdm bars on stderr, or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars = []

    def __call__(self, label: str, total: int, unit: str = "syn"):
        if not self.enabled:
            return lambda n: None
        from tqdm import tqdm

        # in a batch log (Slurm, CI) one line every 10 s, not a redraw per epoch
        interval = 0.1 if sys.stderr.isatty() else 10.0
        bar = tqdm(total=total, desc=label, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True,
                   mininterval=interval)
        self.bars.append(bar)
        return bar.update

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
        self.bars.clear()


def abandon(progress: _Progress, writer: RunWriter | None) -> None:
    """After a failure: close the progress bars and drop what rank 0 wrote, keeping the last checkpoint."""
    progress.close()
    if writer is not None:
        writer.abort()


def plan(recipe: Recipe, cfg: Config, n_ranks: int, what: str = "this run", backend: str = "cpu"):
    """The partition of ``recipe`` over ``n_ranks``, after the memory preflight (`dtb.preflight`; host memory,
    and the GPU's on backend 'gpu').

    Runs before MPI starts, so that a run too large fails on every rank alike with one message.
    """
    part = make_partition(recipe, n_ranks, cfg.simulation.partition, seed=cfg.simulation.seed)
    if cfg.simulation.memory_check:
        preflight(recipe, part, what, device_free_bytes() if backend == "gpu" else None,
                  cfg.simulation.compact_weights)
    return part


def build(ctx: Context, recipe: Recipe, cfg: Config, progress=None, allow_dry_run: bool = True, partition=None):
    """Collective: partition ``recipe`` over the ranks, build this rank's part, set up exchange and simulation.

    Neuron gains (lif_cond) start at the ``[hyper]`` values with the neuron-level spread.
    ``partition`` (from `plan`) is used if it is for ``ctx.size`` ranks.

    Returns
    -------
    partition : Partition
    net : LocalNetwork
    exchange : object
    sim : Simulation
    spread : ndarray, shape (len(LIF_GAINS), n_local), float64, or None
        Each local neuron's Gamma factors on its gains (`dtb.model.hyper`); None for iaf_psc_exp.
    """
    sim_cfg = cfg.simulation
    if partition is None or partition.n_ranks != ctx.size:
        partition = make_partition(recipe, ctx.size, sim_cfg.partition, seed=sim_cfg.seed)
    net = build_local(ctx, recipe, partition, sim_cfg.seed, progress=progress, compact_weights=sim_cfg.compact_weights)
    if sim_cfg.exchange == "dry_run":
        if ctx.size > 1 or not allow_dry_run:
            raise ConfigError("simulation.exchange = 'dry_run' plays many ranks in one process: run it without "
                              "mpiexec (and not for an assimilation)")
        fake = make_partition(recipe, sim_cfg.dry_run_ranks, sim_cfg.partition, seed=sim_cfg.seed)
        exchange = DryRunExchange(fake, net, sim_cfg.ranks_per_node or 8)
    else:
        exchange = make_exchange(ctx, partition, net.gids, net.slot_gids, sim_cfg.exchange, sim_cfg.ranks_per_node)
    gain = spread = None
    if recipe.neuron_model == "lif_cond":
        spread = hyper.neuron_spread(sim_cfg.seed, net.gids, cfg.hyper.gamma_alpha)
        theta = hyper.initial_theta(cfg.hyper, len(recipe.regions))
        gain = hyper.neuron_gains(theta, neuron_regions(recipe, net), spread)
    if ctx.backend == "cpu":
        sim = Simulation(ctx, net, exchange, sim_cfg.seed, gain)
    else:
        sim = DeviceSimulation(ctx, net, exchange, sim_cfg.seed, gain, make_device(ctx.backend, ctx.local_rank),
                               graphs=sim_cfg.cuda_graphs)
    return partition, net, exchange, sim, spread


def neuron_regions(recipe: Recipe, net) -> np.ndarray:
    """Region of each local neuron, shape (n_local,), int64."""
    return np.array([p.region for p in recipe.populations], dtype=np.int64)[net.pop]


def run(cfg: Config, out: str | Path, overwrite: bool = False, ctx: Context | None = None, resume: bool = False,
        on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """Collective: build and simulate the configured network and write its run file.

    Parameters
    ----------
    cfg : Config
    out : str or Path
        Run file to write (HDF5); it appears only when complete.
    overwrite : bool
        Replace an existing ``out`` (and an unfinished run's checkpoint).
    ctx : Context, optional
        Defaults to MPI_COMM_WORLD under an MPI launcher, else a serial context.
    resume : bool
        Continue the unfinished run ``out`` from its last checkpoint (``<out>.partial``);
        ``cfg`` must build the same network (`dtb.io.checkpoint.check_resumable`).
    on_checkpoint : callable, optional
        Called with the step after each checkpoint is written (on every rank).

    Returns
    -------
    dict
        The run's summary (as stored in ``/summary``), on every rank.
    """
    sim_cfg = cfg.simulation
    n_steps = steps_of("simulation.t_ms", sim_cfg.t_ms, sim_cfg.dt_ms)
    bin_steps = steps_of("recording.rate_bin_ms", cfg.recording.rate_bin_ms, sim_cfg.dt_ms)
    flush_steps = max(1, int(round(cfg.recording.flush_ms / sim_cfg.dt_ms)))
    tr_steps = ckpt_steps = n_steps + 1  # no boundary unless asked for
    if cfg.recording.bold:
        tr_steps = steps_of("bold.tr_ms", cfg.bold.tr_ms, sim_cfg.dt_ms)
        steps_of("bold.tr_ms", cfg.bold.tr_ms, 1.0)
        steps_per_ms(sim_cfg.dt_ms)
    if sim_cfg.checkpoint_ms:
        ckpt_steps = steps_of("simulation.checkpoint_ms", sim_cfg.checkpoint_ms, sim_cfg.dt_ms)
        if sim_cfg.exchange == "dry_run":
            raise ConfigError("simulation.checkpoint_ms: a dry-run exchange is not checkpointed (set it to 0)")
    # input errors surface before MPI starts, where every rank meets them alike and one message is printed
    out = Path(out)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        check_resumable(load_config(text=ckpt.config_toml), cfg, ckpt.step)
    else:
        check_output(out, overwrite)
    t0 = time.perf_counter()
    recipe = make_recipe(cfg)
    backend = ctx.backend if ctx is not None else resolve_backend(sim_cfg.backend, announce=launcher_rank() == 0)
    part = plan(recipe, cfg, ctx.size if ctx is not None else launcher_size(), backend=backend)
    ctx = ctx or Context.from_environment(backend, sim_cfg.threads)
    if ckpt is not None and ckpt.n_ranks != ctx.size:
        raise ResourceError(f"--resume: the checkpoint was written by {ckpt.n_ranks} rank(s); resume it on as many "
                            f"(this job has {ctx.size})")
    progress = _Progress(cfg.recording.progress and ctx.is_root)
    writer = RunWriter(out, overwrite=overwrite, resume=resume) if ctx.is_root else None
    ctx.barrier()  # rank 0 has cleared an old run's leftovers
    try:
        partition, net, exchange, sim, _ = build(ctx, recipe, cfg, progress, partition=part)
        build_s = ctx.max(time.perf_counter() - t0)
        progress.close()
        synapse_counts = ctx.sum(net.synapse_counts)
        bytes_per_synapse = ctx.sum(net.synapse_bytes) / max(int(synapse_counts.sum()), 1)
        max_delay_steps = ctx.max(net.max_delay_steps)
        offsets = recipe.offsets
        if writer is not None:
            writer.write_header(config_toml=cfg.to_toml(), version=version(), model=recipe.model,
                                seed=sim_cfg.seed, dt_ms=sim_cfg.dt_ms, t_ms=sim_cfg.t_ms,
                                spike_population=recipe.model)
            pops = recipe.populations
            writer.write_network(names=[p.name for p in pops], sizes=[p.size for p in pops],
                                 first_gids=offsets[:-1], excitatory=[p.excitatory for p in pops],
                                 regions=[p.region for p in pops], region_names=recipe.regions,
                                 synapse_counts=synapse_counts, neuron_model=recipe.neuron_model,
                                 min_delay_steps=recipe.min_delay_steps, max_delay_steps=max_delay_steps,
                                 bytes_per_synapse=bytes_per_synapse)
            writer.write_partition(partition.starts, partition.stops, partition.ranks, partition.strategy,
                                   partition.n_ranks)
        folder = parts_dir(out)
        recorder = Recorder(ctx, folder, offsets, sim_cfg.dt_ms, bin_steps, cfg.recording.spikes,
                            segment=ckpt.segments if ckpt else 0)
        sinks, bold_rows = [recorder], []
        activity = balloon = None
        if cfg.recording.bold:
            activity = RegionActivity(ctx, recipe, sim_cfg.dt_ms)
            balloon = Balloon(len(recipe.regions), bold_params(cfg.bold.params), cfg.bold.eps or None)
            sinks.append(activity)
        sim_s_before = 0.0
        if ckpt is not None:
            state = read_rank_state(folder, ctx.rank, ckpt.segments - 1)
            restore_rank_state(state, ckpt.step, sim, activity)
            recorder.restore(state, ckpt.spike_rows[ctx.rank], ckpt.rate_rows)
            if activity is not None:
                balloon.state[:] = ckpt.balloon_state
                bold_rows = list(ckpt.bold.T)
            build_s += ckpt.build_s
            sim_s_before = ckpt.sim_s

        def checkpoint(sim_s: float) -> None:
            k = recorder.segment
            write_rank_state(folder, ctx.rank, k, {**rank_state(sim, activity), **recorder.state()})
            recorder.next_segment()
            table = recorder.spike_table()
            summary = summarize(recipe, cfg, ctx, synapse_counts=synapse_counts,
                                spike_counts=ctx.sum(recorder.total_counts), bytes_per_synapse=bytes_per_synapse,
                                build_s=build_s, sim_s=sim_s, t_ms=sim.step * sim_cfg.dt_ms)
            summary["unfinished"] = True
            if writer is not None:
                arrays = dict(spike_rows=table, rate_rows=np.asarray(recorder.rate_rows, dtype=np.int64))
                if balloon is not None:
                    arrays["balloon_state"] = balloon.state
                    writer.write_bold(np.array(bold_rows).reshape(-1, len(recipe.regions)).T, cfg.bold.tr_ms,
                                      cfg.bold.params, balloon.eps)
                writer.write_checkpoint(summary, arrays, dict(kind="run", step=sim.step, n_ranks=ctx.size,
                                                              segments=k + 1, build_s=build_s, sim_s=sim_s,
                                                              t_ms=sim.step * sim_cfg.dt_ms),
                                        recorder.rate_sources(cfg.recording.rate_bin_ms),
                                        recorder.spike_sources(table))
            ctx.barrier()  # <out>.partial names checkpoint k: the states of k - 1 are no longer needed
            state_path(folder, ctx.rank, k - 1).unlink(missing_ok=True)
            if on_checkpoint is not None:
                on_checkpoint(sim.step)

        advance = progress("simulate", n_steps, unit="step")
        advance(sim.step)
        t1 = time.perf_counter()
        while sim.step < n_steps:
            stop = min(n_steps, *((sim.step // s + 1) * s for s in (flush_steps, tr_steps, ckpt_steps)))
            sim.run(stop - sim.step, sinks, advance)
            if sim.step % tr_steps == 0:
                balloon.advance(activity.take(sim.step // activity.steps_per_ms))
                bold_rows.append(balloon.bold())
            if sim.step % flush_steps == 0 or sim.step % ckpt_steps == 0:
                sim.clock.start()
                recorder.flush(sim.step)
                sim.clock.mark("recording")
            if sim.step % ckpt_steps == 0 and sim.step < n_steps:
                checkpoint(sim_s_before + ctx.max(time.perf_counter() - t1))
        recorder.flush(sim.step, final=True)
        recorder.close()
        if writer is not None and balloon is not None:
            writer.write_bold(np.array(bold_rows).reshape(-1, len(recipe.regions)).T, cfg.bold.tr_ms,
                              cfg.bold.params, balloon.eps)
        sim_s = sim_s_before + ctx.max(time.perf_counter() - t1)
        t2 = time.perf_counter()
        spikes = recorder.finish_spikes(partition.local_ranges(ctx.rank), net.gids)
        spike_sort_s = ctx.max(time.perf_counter() - t2)
        progress.close()
        summary = summarize(recipe, cfg, ctx, synapse_counts=synapse_counts,
                            spike_counts=ctx.sum(recorder.total_counts), bytes_per_synapse=bytes_per_synapse,
                            build_s=build_s, sim_s=sim_s)
        summary["spike_sort_s"] = spike_sort_s
        if ckpt is not None:
            summary["resumed_at_ms"] = ckpt.step * sim_cfg.dt_ms
        if isinstance(exchange, DryRunExchange):
            summary["dry_run"] = exchange.stats()
        summary["peak_rss_mb_per_rank"] = ctx.max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        summary["synapses_per_rank_max"] = int(ctx.max(net.n_synapses))
        summary["phase_s"] = {k: ctx.max(v) for k, v in sim.clock.phase_s.items()}  # slowest rank's
        if ctx.backend != "cpu" and ctx.size > 1:
            # the exchange stages spikes through page-locked host buffers either way (routing runs on the host)
            summary["mpi_cuda_aware"] = cuda_aware_mpi()
        if writer is not None:
            writer.finish(summary, recorder.rate_sources(cfg.recording.rate_bin_ms), spikes)
            recorder.remove_segments()
        ctx.barrier()  # no rank returns before the run file is complete
        return summary
    except BaseException:
        abandon(progress, writer)
        raise


def summarize(recipe: Recipe, cfg: Config, ctx: Context, *, synapse_counts: np.ndarray, spike_counts: np.ndarray,
              bytes_per_synapse: float, build_s: float, sim_s: float, t_ms: float | None = None) -> dict:
    """The facts a run reports: sizes, timings, rates per population and per kind.

    ``t_ms`` is the time simulated so far (default: all of ``simulation.t_ms``).
    """
    t_ms = cfg.simulation.t_ms if t_ms is None else t_ms
    t_s = t_ms * 1e-3
    sizes = np.array([p.size for p in recipe.populations])
    exc = np.array([p.excitatory for p in recipe.populations])
    rates = spike_counts / sizes / t_s
    return dict(
        model=recipe.model, neuron_model=recipe.neuron_model, dtb_version=version(),
        n_neurons=int(sizes.sum()), n_synapses=int(synapse_counts.sum()), n_spikes=int(spike_counts.sum()),
        t_ms=t_ms, dt_ms=cfg.simulation.dt_ms, seed=cfg.simulation.seed,
        mean_rate_hz=float(spike_counts.sum() / sizes.sum() / t_s),
        rates_hz={p.name: float(r) for p, r in zip(recipe.populations, rates)},
        rate_e_hz=float(spike_counts[exc].sum() / sizes[exc].sum() / t_s),
        rate_i_hz=float(spike_counts[~exc].sum() / sizes[~exc].sum() / t_s),
        build_s=build_s, sim_s=sim_s, rtf=sim_s / t_s, bytes_per_synapse=bytes_per_synapse,
        n_ranks=ctx.size, threads=ctx.threads, backend=ctx.backend,
        connectome=(f"{cfg.connectome_path() or 'bundled HCP/AAL2'} (subject {cfg.wholebrain.subject})"
                    if recipe.model == "wholebrain" else ""))
