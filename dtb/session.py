"""Session: the one job protocol, from a network to a complete run file.

``prepare`` (validate, plan = partition + memory preflight, context, run-file
writer, build), ``run(t_ms)`` as often as needed (each call continues exactly where
the last stopped: the noise is keyed by step), ``checkpoint`` (every
``checkpoint_ms`` on its own), ``close`` (the run file appears under its name by an
atomic rename) or, after a failure, ``abandon`` (nothing under the final name; the
last checkpoint stays to resume from). ``dtb run``, ``dtb assimilate`` and the
replay are clients of it::

    s = dtb.Session(net, out="mine.h5", backend="cpu")
    s.record(spikes=[e, i], state={"v_mv": e[:10]}, rate_bin_ms=1.0)
    s.run(100.0); s.run(100.0)
    summary = s.close()

Every method that advances or writes is collective: under ``mpiexec`` every rank
makes the same calls.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import scipy.sparse

from dtb.activity import RegionActivity, steps_per_ms
from dtb.bold import Balloon, bold_params
from dtb.config import check_value
from dtb.context import Context, check_launcher, cuda_aware_mpi, launcher_rank, launcher_size
from dtb.errors import ConfigError, DataError, ResourceError, UsageError, WriteError
from dtb.exchange import DryRunExchange, make_exchange
from dtb.io import checkpoint as ckpt_io
from dtb.io.recording import Recorder, StateProbe
from dtb.io.runfile import (RunLock, RunWriter, check_output, check_parts, clear_parts, file_digest, output_path,
                            parts_dir)
from dtb.memory import check_total, preflight
from dtb.model import hyper
from dtb.model.builder import Network, PopulationView, as_recipe
from dtb.model.neurons import LIF_GAINS
from dtb.model.recipe import Recipe
from dtb.network import build_local
from dtb.partition import partition as make_partition
from dtb.partition.balance import DEFAULT_STRATEGY
from dtb.simulation import Simulation


def version() -> str:
    """The installed dtb's version."""
    try:
        return metadata.version("dtb")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def steps_of(name: str, value_ms: float, dt_ms: float) -> int:
    """``value_ms`` in steps of ``dt_ms``; a `ConfigError` unless it is a whole, positive number of steps."""
    if isinstance(value_ms, bool) or not isinstance(value_ms, (int, float, np.integer, np.floating)) or \
            not math.isfinite(value_ms):
        raise ConfigError(f"{name} = {value_ms!r}: must be a finite number of ms")
    n = value_ms / dt_ms
    if abs(n - round(n)) > 1e-9 * max(1.0, n) or round(n) < 1:
        raise ConfigError(f"{name} = {value_ms:g}: must be a positive multiple of simulation.dt_ms = {dt_ms:g}")
    return int(round(n))


class Progress:
    """Progress on stderr, or nothing: tqdm bars on a terminal; in a batch log (not a terminal) a plain line
    every `LOG_EVERY_S` seconds, so that a log reads line by line."""

    #: seconds between the progress lines of a batch log
    LOG_EVERY_S = 10.0

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars = []

    def __call__(self, label: str, total: int, unit: str = "syn"):
        """A new bar; returns its ``update(n)``."""
        if not self.enabled:
            return lambda n: None
        if not sys.stderr.isatty():
            bar = _LogLines(label, total, unit, self.LOG_EVERY_S)
        else:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=label, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True,
                       mininterval=0.1)
        self.bars.append(bar)
        return bar.update

    def note(self, text: str) -> None:
        """One line ``dtb: <text>`` on stderr (when enabled)."""
        if self.enabled:
            print(f"dtb: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
        self.bars.clear()


class _LogLines:
    """A progress bar for logs: ``dtb: simulate 41% (4,100/10,000 step), 12 s, about 17 s left``, every
    ``every_s`` seconds and once at the end (when it took longer than ``every_s``)."""

    def __init__(self, label: str, total: int, unit: str, every_s: float):
        import time

        self.label, self.total, self.unit, self.every_s = label, max(int(total), 1), unit, every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        self.closed = False

    def update(self, n: int) -> None:
        import time

        self.done += int(n)
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line(now)

    def close(self) -> None:
        import time

        now = time.monotonic()
        if not self.closed and now - self.start >= self.every_s:
            self._line(now)
        self.closed = True

    def _line(self, now: float) -> None:
        took = now - self.start
        frac = min(self.done / self.total, 1.0)
        left = f", about {took * (1 - frac) / frac:.0f} s left" if 0 < frac < 1 else ""
        print(f"dtb: {self.label} {100 * frac:.0f}% ({self.done:,}/{self.total:,} {self.unit}), {took:.0f} s{left}",
              file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Stimulus:
    """A current step onto some neurons: ``amplitude`` (pA for iaf_psc_exp, mV/ms for lif_cond) from
    ``start_ms`` to ``stop_ms``."""

    gids: np.ndarray
    amplitude: float
    start_ms: float
    stop_ms: float


class Session:
    """A simulation of one network with its run file: the job protocol, once.

    Parameters
    ----------
    network : Network or Recipe
        What to simulate (`dtb.Network`, `dtb.wholebrain`, `dtb.pd14`, or a frozen `Recipe`).
    out : str or Path, optional
        Run file to write (HDF5); it appears only when `close` completes. None: nothing is written
        (an ensemble or replay inside another job).
    backend : str or Backend
        'cpu', 'gpu', 'auto', 'gpu_emulated' (`dtb.backends`); ignored when ``ctx`` is given.
    ctx : Context, optional
        Defaults to MPI_COMM_WORLD under an MPI launcher, else one process.
    seed : int, optional
        Seed of the connectivity, initial state and noise; default the network's.
    overwrite : bool
        Replace an existing ``out`` (and an unfinished run's checkpoint).
    resume : bool
        Continue the unfinished run ``out`` from its last checkpoint; the network must be the same
        (checked by its fingerprint) and ``ctx`` must have as many ranks.
    partition, exchange, ranks_per_node, dry_run_ranks, threads, memory_check, compact_weights, cuda_graphs :
        As the ``[simulation]`` keys of the same names.
    checkpoint_ms : float
        Write the full state to ``<out>.partial`` every this much biological time; 0: never.
    flush_ms : float
        Write the recording buffers every this much biological time.
    progress : bool
        Progress bars on stderr (rank 0).
    region_gains : ndarray, shape (len(LIF_GAINS), n_regions), optional
        lif_cond region hyperparameters (`dtb.model.hyper`); default all 1.
    gain_spread : float
        Gamma shape of each neuron's spread around its region's gains; 0: none.
    config : Config, optional
        The configuration the network came from, stored in the run file (``/config``).
    kind : str
        'run' or 'assimilation': the kind of checkpoint, so that each command resumes only its own.
    what : str
        How errors name this job ("this run", "the replay").
    inputs : sequence of paths
        The job's input files (config, connectome, data): ``out`` may not be one of them.
    digests : sequence of paths
        Input files whose content a checkpoint records (sha256), so that a resume refuses changed inputs
        (the connectome, the BOLD data; the config is compared key by key instead).
    stitch : {'copy', 'virtual'}
        A many-rank run file gets its spikes copied in (self-contained), or as virtual datasets over the
        ranks' files kept in ``<out>.parts``.
    """

    def __init__(self, network: Network | Recipe, out: str | Path | None = None, *, backend="cpu",
                 ctx: Context | None = None, seed: int | None = None, overwrite: bool = False, resume: bool = False,
                 partition: str = DEFAULT_STRATEGY, exchange: str = "alltoall", ranks_per_node: int = 0,
                 dry_run_ranks: int = 64, threads: int = 0, checkpoint_ms: float = 0.0, flush_ms: float = 100.0,
                 memory_check: bool = True, compact_weights: bool = True, cuda_graphs: bool = True,
                 progress: bool = True, region_gains: np.ndarray | None = None, gain_spread: float = 0.0,
                 config=None, kind: str = "run", what: str = "this run", inputs=(), stitch: str = "copy",
                 digests=()):
        self.recipe, net_seed = as_recipe(network)
        self.seed = int(net_seed if seed is None else check_value("simulation", "seed", seed, "simulation.seed"))
        self.dt_ms = self.recipe.dt_ms
        self.out = output_path(out) if out is not None else None
        self.backend_name = check_value("simulation", "backend", backend, "simulation.backend") \
            if isinstance(backend, str) else backend
        self.ctx = ctx
        for key, value in dict(overwrite=overwrite, resume=resume).items():
            if not isinstance(value, (bool, np.bool_)):
                raise UsageError(f"Session: {key} = {value!r}: must be True or False")
        self.overwrite, self.resume = bool(overwrite), bool(resume)
        self.checkpointed = False  # whether this session began a checkpoint (its parts are then to be kept)
        self.lock_note = None  # the job's lock note, as rank 0 wrote it
        # the same values a config file may give these keys
        self.options = {key: check_value("simulation", key, value, f"simulation.{key}") for key, value in dict(
            partition=partition, exchange=exchange, ranks_per_node=ranks_per_node, dry_run_ranks=dry_run_ranks,
            threads=threads, memory_check=memory_check, compact_weights=compact_weights,
            cuda_graphs=cuda_graphs).items()}
        checkpoint_ms = check_value("simulation", "checkpoint_ms", checkpoint_ms, "simulation.checkpoint_ms")
        flush_ms = check_value("recording", "flush_ms", flush_ms, "recording.flush_ms")
        stitch = check_value("recording", "stitch", stitch, "recording.stitch")
        gain_spread = check_value("hyper", "gamma_alpha", gain_spread, "hyper.gamma_alpha (gain_spread)")
        if exchange == "dry_run" and checkpoint_ms:
            raise ConfigError("simulation.checkpoint_ms: a dry-run exchange is not checkpointed (set it to 0)")
        self.checkpoint_steps = steps_of("simulation.checkpoint_ms", checkpoint_ms, self.dt_ms) if checkpoint_ms \
            else 0
        self.flush_steps = max(1, int(round(flush_ms / self.dt_ms)))
        self.progress = Progress(False)
        self.show_progress = progress
        self.theta = np.ones((len(LIF_GAINS), len(self.recipe.regions))) if region_gains is None else \
            self._gains(region_gains)
        self.gain_spread = gain_spread
        self.config = config
        self.kind, self.what = kind, what
        self.inputs = [str(p) for p in inputs if p]
        self.digest_paths = [str(p) for p in digests if p]
        self._digests: str | None = None
        self.stitch = stitch
        self.lock = None
        # what record() and stimulate() set before prepare
        self.spikes_of: list[int] | None = list(range(len(self.recipe.populations)))
        self.rates = out is not None
        self.rate_bin_ms = 1.0
        self.state_vars: dict[str, tuple[np.ndarray, float]] = {}
        self.bold: dict | None = None
        self.stimuli: list[Stimulus] = []
        self.activity_wanted = False
        self.prepared = self.closed = False
        self.on_checkpoint = None
        self.resumed: dict | None = None  # the checkpoint's arrays and attributes, after a resume
        self.sim_s = 0.0
        self.checkpoint_due = False

    # -- what to record and stimulate (before prepare) -----------------------------------------------------

    def record(self, spikes=True, state: dict | None = None, rate_bin_ms: float | None = None, rates: bool = True,
               bold: bool = False, tr_ms: float = 720.0, bold_params: str = "dtb", bold_eps: float = 0.0,
               state_every_ms: float | None = None) -> None:
        """Say what the run file gets (call before the first `run`).

        Parameters
        ----------
        spikes : bool or list of PopulationView, population names or indices
            Whose spikes are stored (SONATA layout); True: every population, False: none.
        state : dict, optional
            ``{variable: neurons}``: record a state variable of some neurons every ``state_every_ms``
            (default every step). Variables: 'v_mv' (both models), 'i_bg_mv_ms', 'j_ampa', 'j_nmda',
            'j_gaba_a', 'j_gaba_b' (lif_cond), 'i_ex_pa', 'i_in_pa' (iaf_psc_exp). Neurons: a
            `PopulationView` (``e[:10]``) or an array of gids.
        rate_bin_ms : float, optional
            Bin width of the population rates (default 1 ms).
        rates : bool
            Store the population and region rates.
        bold : bool
            Compute each region's BOLD (Balloon-Windkessel), sampled every ``tr_ms``, with the parameter
            set ``bold_params`` ('dtb' or 'friston2003') and efficacy ``bold_eps`` (0: the set's).
        """
        self._before_prepare("record")
        for name, flag in dict(rates=rates, bold=bold).items():
            if not isinstance(flag, (bool, np.bool_)):
                raise UsageError(f"Session.record: {name} = {flag!r}: must be True or False")
        if not (isinstance(bold_eps, (int, float, np.integer, np.floating)) and math.isfinite(bold_eps)
                and bold_eps >= 0) or isinstance(bold_eps, bool):
            raise ConfigError(f"Session.record: bold_eps = {bold_eps!r}: must be a finite number >= 0")
        if spikes is True:
            self.spikes_of = list(range(len(self.recipe.populations)))
        elif spikes is False or spikes is None:
            self.spikes_of = []
        else:
            many = isinstance(spikes, (list, tuple, set))
            self.spikes_of = sorted({i for s in (spikes if many else [spikes]) for i in self._populations_of(s)})
        if rate_bin_ms is not None:
            steps_of("recording.rate_bin_ms", rate_bin_ms, self.dt_ms)
            self.rate_bin_ms = float(rate_bin_ms)
        self.rates = rates
        every = self.dt_ms if state_every_ms is None else state_every_ms
        for name, who in (state or {}).items():
            gids = self._gids_of(who, f"recording.state.{name}")
            self.state_vars[name] = (gids, every)
            StateProbe.check_variable(name, self.recipe.neuron_model)
            steps_of(f"recording.state.{name}.every_ms", every, self.dt_ms)
        if bold:
            steps_of("bold.tr_ms", tr_ms, self.dt_ms)
            steps_of("bold.tr_ms", tr_ms, 1.0)
            steps_per_ms(self.dt_ms)
            self.bold = dict(tr_ms=float(tr_ms), params=bold_params, eps=float(bold_eps))
        else:
            self.bold = None

    def stimulate(self, neurons, amplitude: float, start_ms: float, stop_ms: float) -> None:
        """Add a current step to ``neurons`` (a `PopulationView` or gids) from ``start_ms`` to ``stop_ms``.

        ``amplitude`` is in the model's current unit: pA for iaf_psc_exp, mV/ms for lif_cond (C = 1).
        Stimuli add up where they overlap.
        """
        self._before_prepare("stimulate")
        numbers = (amplitude, start_ms, stop_ms)
        if not all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) for x in numbers) \
                or not (math.isfinite(amplitude) and 0 <= start_ms < stop_ms):
            raise ConfigError(f"stimulus: need a finite amplitude and 0 <= start_ms < stop_ms "
                              f"(got {amplitude!r}, {start_ms!r}, {stop_ms!r})")
        for t in (start_ms, stop_ms):
            if t > 0:
                steps_of("stimulus start_ms/stop_ms", t, self.dt_ms)
        self.stimuli.append(Stimulus(self._gids_of(neurons, "stimulus"), float(amplitude), float(start_ms),
                                     float(stop_ms)))

    def _before_prepare(self, what: str) -> None:
        if self.prepared:
            raise UsageError(f"Session.{what}: call it before the first run()")

    def _populations_of(self, sel, what: str = "recording.spikes") -> list[int]:
        pops = self.recipe.populations
        if isinstance(sel, PopulationView):
            return [sel.index]
        if isinstance(sel, (int, np.integer)) and 0 <= sel < len(pops):
            return [int(sel)]
        if isinstance(sel, str):
            hits = [i for i, p in enumerate(pops) if p.name == sel]
            if not hits and sel in self.recipe.regions:  # a region: all its populations
                hits = [i for i, p in enumerate(pops) if self.recipe.regions[p.region] == sel]
            if hits:
                return hits
        raise ConfigError(f"{what}: {sel!r} is no population or region of this network")

    def _gids_of(self, who, what: str) -> np.ndarray:
        if isinstance(who, PopulationView):
            return who.gids(self.recipe)
        if isinstance(who, str):
            offsets = self.recipe.offsets
            return np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in self._populations_of(who, what)])
        raw = np.asarray(who) if isinstance(who, (list, tuple, np.ndarray, range)) else np.empty(0, np.float64)
        if raw.dtype.kind not in "iu":  # a float would be truncated, a bool read as 0 and 1
            raise ConfigError(f"{what}: neurons must be a population, its name, or integer gids (got {who!r:.80})")
        gids = np.unique(raw.astype(np.int64))
        if gids.size == 0 or gids[0] < 0 or gids[-1] >= self.recipe.n_neurons:
            raise ConfigError(f"{what}: neurons must be gids in [0, {self.recipe.n_neurons})")
        return gids

    # -- the protocol ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Collective: validate, partition and preflight, start the context, open the run file, build.

        Called by the first `run`; errors in the input surface before MPI starts, where every rank meets
        them alike and one message is printed.
        """
        if self.prepared:
            return
        recipe, opts = self.recipe, self.options
        _warn_if_silent(recipe)
        ck = None
        if self.out is not None:
            if self.resume:
                ck = ckpt_io.read_checkpoint(self.out)
                check_parts(self.out)
                self._check_resumable(ck)
            else:
                check_output(self.out, self.overwrite, self.inputs)
        t0 = time.perf_counter()
        ctx = self.ctx
        if ctx is None:
            from dtb.kernels.gpu import resolve_backend

            name = resolve_backend(self.backend_name, announce=launcher_rank() == 0) \
                if isinstance(self.backend_name, str) else self.backend_name.name
            check_launcher()  # before the rank count is read from it
            n_ranks = launcher_size()
        else:
            name, n_ranks = ctx.backend.name, ctx.size
        # the job's shape, checked before MPI starts: one error line, not one per rank (one process exchanges
        # nothing, whatever the strategy)
        if opts["exchange"] == "two_level" and n_ranks > 1 and opts["ranks_per_node"] and \
                n_ranks % opts["ranks_per_node"]:
            raise ConfigError(f"simulation.ranks_per_node = {opts['ranks_per_node']}: must divide the number of "
                              f"ranks ({n_ranks})")
        if ck is not None and int(ck.attrs["n_ranks"]) != n_ranks:
            raise ResourceError(f"--resume: the checkpoint was written by {ck.attrs['n_ranks']} rank(s); resume it "
                                f"on as many (this job has {n_ranks})")
        if opts["memory_check"]:  # the population tables before partitioning allocates them; the loads after
            check_total(0.0, 0.0, n_ranks, self.what, recipe.n_population_pairs)
        part = make_partition(recipe, n_ranks, opts["partition"], seed=self.seed,
                              ranks_per_node=opts["ranks_per_node"] or 8)
        if opts["memory_check"]:
            free = None
            if name == "gpu":
                from dtb.kernels.gpu import device_free_bytes

                free = device_free_bytes()
            preflight(recipe, part, self.what, free, opts["compact_weights"])
        if ctx is None:
            ctx = Context.from_environment(name if isinstance(self.backend_name, str) else self.backend_name,
                                           opts["threads"])
        self.ctx = ctx
        self.progress = Progress(self.show_progress and ctx.is_root)
        notice = getattr(ctx.backend, "compile_notice", lambda: None)() if self.progress.enabled else None
        if notice:
            self.progress.note(notice)
        self.writer = None
        if self.out is not None:
            # one writer per run, taken before anything of it is created or removed; every rank learns the outcome:
            # rank 0 has cleared an old run's leftovers, or every rank stops
            ctx.on_root(self._open_writer)
            # every rank knows the job's lock, to take it away if it must end rank 0 before rank 0 can
            self.lock_note = ctx.bcast(self.lock.note() if self.lock is not None else None)
        self.prepared = True
        try:
            self._build(part, t0, ck)
        except BaseException:
            self.abandon()
            raise

    def _build(self, part, t0: float, ck) -> None:
        ctx, recipe, opts = self.ctx, self.recipe, self.options
        net = build_local(ctx, recipe, part, self.seed, progress=self.progress,
                          compact_weights=opts["compact_weights"])
        if opts["exchange"] == "dry_run":
            if ctx.size > 1:
                raise ConfigError("simulation.exchange = 'dry_run' plays many ranks in one process: run it without "
                                  "mpiexec")
            fake = make_partition(recipe, opts["dry_run_ranks"], opts["partition"], seed=self.seed,
                                  ranks_per_node=opts["ranks_per_node"] or 8)
            exchange = DryRunExchange(fake, net, opts["ranks_per_node"] or 8)
        else:
            exchange = make_exchange(ctx, part, net.gids, net.slot_gids, opts["exchange"], opts["ranks_per_node"])
        self.partition, self.net, self.exchange = part, net, exchange
        self.region_of = np.array([p.region for p in recipe.populations], dtype=np.int64)[net.pop]
        gain = None
        if recipe.neuron_model == "lif_cond":
            self.spread = hyper.neuron_spread(self.seed, net.gids, self.gain_spread)
            gain = hyper.neuron_gains(self.theta, self.region_of, self.spread)
        self.sim = Simulation(ctx, net, exchange, self.seed, gain, graphs=opts["cuda_graphs"])
        self.build_s = ctx.max(time.perf_counter() - t0)
        self.progress.close()
        counts = net.synapse_counts  # sparse, on the recipe's pattern: the same on every rank
        self.synapse_counts = scipy.sparse.csr_array((ctx.sum(counts.data), counts.indices, counts.indptr),
                                                     shape=counts.shape)
        self.bytes_per_synapse = ctx.sum(net.synapse_bytes) / max(int(self.synapse_counts.sum()), 1)
        self.max_delay_steps = ctx.max(net.max_delay_steps)
        self.sinks = []
        self.recorder = None
        if self.out is not None:
            folder = parts_dir(self.out)
            segment = int(ck.attrs["segments"]) if ck is not None else 0
            # a run always counts its spikes (the summary's rates), even when it stores none of them
            if self.rates or self.spikes_of or self.state_vars or self.kind == "run":
                probes = [StateProbe(name, gids, steps_of("every_ms", every, self.dt_ms), recipe, net)
                          for name, (gids, every) in self.state_vars.items()]
                self.recorder = Recorder(ctx, folder, recipe.offsets, self.dt_ms,
                                         steps_of("recording.rate_bin_ms", self.rate_bin_ms, self.dt_ms),
                                         self.spikes_of, segment=segment, rates=self.rates, probes=probes)
                self.sinks.append(self.recorder)
            if ctx.is_root:
                self._write_description()
        self.activity = self.balloon = None
        self.bold_rows: list[np.ndarray] = []
        if self.bold is not None or self.activity_wanted:
            self.activity = RegionActivity(ctx, recipe, self.dt_ms)
            self.sinks.append(self.activity)
        if self.bold is not None:
            self.balloon = Balloon(len(recipe.regions), bold_params(self.bold["params"]), self.bold["eps"] or None)
            self.tr_steps = steps_of("bold.tr_ms", self.bold["tr_ms"], self.dt_ms)
        self._stim_edges = sorted({steps for s in self.stimuli for steps in
                                   (round(s.start_ms / self.dt_ms), round(s.stop_ms / self.dt_ms))})
        self.segment = int(ck.attrs["segments"]) if ck is not None else 0  # closed checkpoint segments
        if ck is not None:
            self._restore(ck)
        if self.recorder is not None:
            self.recorder.start()
        self._apply_stimulus()

    def _write_description(self) -> None:
        recipe, w = self.recipe, self.writer
        config_toml = self.config.to_toml() if self.config is not None else ""
        w.write_header(config_toml=config_toml, version=version(), model=recipe.model, seed=self.seed,
                       dt_ms=self.dt_ms, spike_population=recipe.model, fingerprint=recipe.fingerprint(),
                       backend=self.ctx.backend.name, recorded=self._recorded())
        if self.kind != "run":
            return
        pops = recipe.populations
        w.write_network(names=[p.name for p in pops], sizes=[p.size for p in pops],
                        first_gids=recipe.offsets[:-1], excitatory=[p.excitatory for p in pops],
                        regions=[p.region for p in pops], region_names=recipe.regions,
                        synapse_counts=self.synapse_counts, neuron_model=recipe.neuron_model,
                        min_delay_steps=recipe.min_delay_steps, max_delay_steps=self.max_delay_steps,
                        bytes_per_synapse=self.bytes_per_synapse)
        p = self.partition
        w.write_partition(p.starts, p.stops, p.ranks, p.strategy, p.n_ranks)

    def _recorded(self) -> list[str]:
        """The groups the run file will hold (`RunWriter.write_header`): the spikes' group (empty when no
        population's spikes are stored) whenever the run has a recorder (every simulation with a file)."""
        if self.recorder is None:
            return []
        return ["spikes"] + (["rates"] if self.rates else []) + [f"state/{name}" for name in self.state_vars]

    def _check_resumable(self, ck) -> None:
        if ck.attrs.get("kind", "run") != self.kind:
            other = "dtb assimilate --resume" if ck.attrs.get("kind") == "assimilation" else "dtb run --resume"
            raise DataError(f"{str(self.out)!r}: the checkpoint is of another kind of job: resume it with {other}")
        stored = ck.attrs.get("fingerprint")
        if stored is not None and stored != self.recipe.fingerprint():
            raise ConfigError(f"--resume: the network differs from the one the checkpoint of {str(self.out)!r} was "
                              "built from (its inputs, connectome or parameters changed)")
        import json

        for path, digest in json.loads(ck.attrs.get("inputs", "{}")).items():
            now = file_digest(path) if Path(path).is_file() else None
            if now != digest:
                raise DataError(f"--resume: the input {path!r} {'changed' if now else 'is gone'} since the checkpoint "
                                "was written; a resumed run reads the same inputs")

    def _restore(self, ck) -> None:
        ctx, folder = self.ctx, parts_dir(self.out)
        built = (int(self.synapse_counts.sum()), int(self.max_delay_steps))
        stored = (ck.attrs.get("n_synapses", built[0]), ck.attrs.get("max_delay_steps", built[1]))
        if built != stored:
            raise DataError(f"--resume: this build has {built[0]:,} synapses and delays up to {built[1]} steps, the "
                            f"checkpoint's had {stored[0]:,} and {stored[1]}: not the same network")
        state = ckpt_io.read_rank_state(folder, ctx.rank, int(ck.attrs["segments"]) - 1)
        if self.recorder is not None:
            # every segment the checkpoint names must be whole now, not at the end of the resumed run
            digests = [d.decode() for d in np.atleast_1d(state.get("recorder/segment_sha256", []))]
            problem = self.recorder.check_segments(ck.arrays["spike_rows"][ctx.rank], ck.arrays["rate_rows"], digests)
            problems = ctx.gather_objects(problem)
            first = next((p for p in problems if p), None) if ctx.is_root else None
            first = ctx.bcast(first)
            if first is not None:
                raise DataError(f"--resume: {first}; the checkpoint cannot be resumed (start again with --overwrite)")
        step = int(ck.attrs["step"])
        ckpt_io.restore_rank_state(state, step, self.sim, self.activity)
        if self.recorder is not None:
            self.recorder.restore(state, ck.arrays["spike_rows"][ctx.rank], ck.arrays["rate_rows"],
                                  {k[len("state_rows/"):]: v for k, v in ck.arrays.items()
                                   if k.startswith("state_rows/")})
        if self.balloon is not None:
            self.balloon.state[:] = ck.arrays["balloon_state"]
            self.bold_rows = list(ck.arrays["bold"].T)
        self.build_s += float(ck.attrs["build_s"])
        self.sim_s = float(ck.attrs["sim_s"])
        self.resumed = dict(step=step, attrs=ck.attrs, arrays=ck.arrays, rank_state=state)

    @property
    def step(self) -> int:
        """Steps simulated so far."""
        return self.sim.step if self.prepared else 0

    @property
    def t_ms(self) -> float:
        """Biological time simulated so far (ms)."""
        return self.step * self.dt_ms

    def run(self, t_ms: float, sinks=(), on_progress=None) -> None:
        """Collective: simulate ``t_ms`` more (a whole number of steps), recording, checkpointing and
        stimulating as set; the next call continues exactly where this one stopped.

        ``sinks`` get every epoch's local spikes besides the recording (`dtb.simulation.SpikeSink`).
        """
        t_ms = check_value("simulation", "t_ms", t_ms, "Session.run: t_ms")  # the bounds of simulation.t_ms
        self.run_steps(steps_of("Session.run: t_ms", t_ms, self.dt_ms), sinks, on_progress)

    def run_steps(self, n_steps: int, sinks=(), on_progress=None) -> None:
        """Collective: `run` by a number of steps (0 does nothing)."""
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise UsageError(f"Session.run_steps: n_steps = {n_steps!r}: must be a whole number >= 0")
        if self.closed:
            raise UsageError("Session.run: the session is closed")
        self.prepare()
        try:
            if self.recorder is not None:
                self.ctx.on_root(lambda: self._check_disk(n_steps))
            self._advance(n_steps, list(sinks), on_progress)
        except BaseException:
            self.abandon()
            raise

    def _check_disk(self, n_steps: int) -> None:
        """A `ResourceError` if the rates and state that ``n_steps`` more steps record cannot fit the output's
        disk: each is written to a segment, then copied into the run file (spikes, which no one can know in
        advance, are not counted)."""
        import shutil

        rec, n_pop, n_reg = self.recorder, len(self.recipe.populations), len(self.recipe.regions)
        need = (n_steps // rec.bin_steps + 1) * (2 * n_pop + n_reg) * 4 if rec.rates else 0  # float32
        need += sum((n_steps // p.every_steps + 1) * p.n_total * 8 * 2 for p in rec.probes)  # float64
        try:
            free = shutil.disk_usage(self.out.parent).free
        except OSError:
            return  # a filesystem that does not say: its writes are checked as they happen
        if need > free:
            mib = 2**20
            raise ResourceError(f"not enough disk for {self.what}: its rates and state records need about "
                                f"{need / mib:,.1f} MiB in {str(self.out.parent)!r}, which has {free / mib:,.1f} MiB "
                                "free; record less (recording.rate_bin_ms, recording.state) or write elsewhere (--out)")

    def _advance(self, n_steps: int, sinks: list, on_progress) -> None:
        sim, ctx = self.sim, self.ctx
        if self.checkpoint_due:
            self.checkpoint()
        target = sim.step + n_steps
        bar = self.progress("simulate", n_steps, unit="step") if on_progress is None else on_progress
        t1 = time.perf_counter()
        sim_s0 = self.sim_s
        every = [self.flush_steps] + ([self.tr_steps] if self.balloon is not None else []) + \
            ([self.checkpoint_steps] if self.checkpoint_steps else [])
        probes = self.recorder.probes if self.recorder is not None else []
        every += [p.every_steps for p in probes]
        while sim.step < target:
            stop = min(target, *((sim.step // s + 1) * s for s in every),
                       *(e for e in self._stim_edges if e > sim.step))
            sim.run(stop - sim.step, self.sinks + sinks, bar)
            step = sim.step
            for p in probes:
                if step % p.every_steps == 0:
                    p.sample(sim.engine, step)
            if self.balloon is not None and step % self.tr_steps == 0:
                self.balloon.advance(self.activity.take(step // self.activity.steps_per_ms))
                self.bold_rows.append(self.balloon.bold())
            if step in self._stim_edges:
                self._apply_stimulus()
            if self.recorder is not None and (step % self.flush_steps == 0 or
                                              (self.checkpoint_steps and step % self.checkpoint_steps == 0)):
                sim.clock.start()
                self.recorder.flush(step)
                sim.clock.mark("recording")
            if self.checkpoint_steps and step % self.checkpoint_steps == 0:
                self.sim_s = sim_s0 + ctx.max(time.perf_counter() - t1)
                if step < target:
                    self.checkpoint()
                else:  # at the end of this call: written when the run goes on, needless if it closes now
                    self.checkpoint_due = True
        self.sim_s = sim_s0 + ctx.max(time.perf_counter() - t1)
        self.progress.close()

    def _apply_stimulus(self) -> None:
        if not self.stimuli:
            return
        step = self.sim.step
        current = np.zeros(self.net.n_local)
        for s in self.stimuli:
            if round(s.start_ms / self.dt_ms) <= step < round(s.stop_ms / self.dt_ms):
                current[np.isin(self.net.gids, s.gids)] += s.amplitude
        self.sim.set_stimulus(current)

    def _gains(self, theta) -> np.ndarray:
        """``theta`` as region gains, float64 (len(LIF_GAINS), n_regions), or a `ConfigError`."""
        shape = (len(LIF_GAINS), len(self.recipe.regions))
        try:
            theta = np.array(theta, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"region gains: {type(theta).__name__} is not an array of numbers") from None
        if theta.shape != shape:
            raise ConfigError(f"region gains have shape {theta.shape}, expected {shape} (gains x regions)")
        if not np.all(np.isfinite(theta) & (theta > 0)):
            raise ConfigError("region gains must be finite and > 0")
        return theta

    def set_region_gains(self, theta: np.ndarray) -> None:
        """Replace the lif_cond region hyperparameters, shape (len(LIF_GAINS), n_regions), between runs."""
        theta = self._gains(theta)
        self.prepare()
        self.theta = theta
        self.sim.set_gains(hyper.neuron_gains(self.theta, self.region_of, self.spread))

    def checkpoint(self, arrays: dict | None = None, attrs: dict | None = None, summary: dict | None = None) -> None:
        """Collective: write the full state, so that a stopped job can finish with ``resume=True``.

        ``arrays`` and ``attrs`` (rank 0's) are stored in the checkpoint beside the simulation's and
        come back as ``resumed['arrays']`` / ``resumed['attrs']``; ``summary`` replaces the run's.
        """
        if self.out is None:
            raise UsageError("Session.checkpoint: a session without a run file has nothing to resume")
        self.prepare()
        self.checkpoint_due = False
        self.checkpointed = True
        ctx, sim = self.ctx, self.sim
        folder = parts_dir(self.out)
        folder.mkdir(exist_ok=True)
        k = self.recorder.segment if self.recorder is not None else self.segment
        table = None
        if self.recorder is not None:
            self.recorder.next_segment()  # segment k closed (and its digest taken) before the state names it
            table = self.recorder.spike_table()
        state = ckpt_io.rank_state(sim, self.activity)
        if self.recorder is not None:
            state.update(self.recorder.state())
        ctx.everywhere(lambda: ckpt_io.write_rank_state(folder, ctx.rank, k, state), WriteError)
        self.segment = k + 1
        if summary is None:
            summary = self.summary()
        summary["unfinished"] = True

        def write():
            if self.writer is None:
                return
            ck_arrays = dict(arrays or {})
            if self.recorder is not None:
                ck_arrays.update(spike_rows=table, rate_rows=np.asarray(self.recorder.rate_rows, dtype=np.int64))
                ck_arrays.update({f"state_rows/{k}": np.asarray(v, dtype=np.int64)
                                  for k, v in self.recorder.state_rows.items()})
            if self.balloon is not None:
                ck_arrays["balloon_state"] = self.balloon.state
                self._write_bold()
            ck_attrs = dict(kind=self.kind, step=sim.step, n_ranks=ctx.size, segments=k + 1, build_s=self.build_s,
                            sim_s=self.sim_s, t_ms=self.t_ms, fingerprint=self.recipe.fingerprint(),
                            inputs=self._input_digests(), n_synapses=int(self.synapse_counts.sum()),
                            max_delay_steps=int(self.max_delay_steps), **(attrs or {}))
            rec = self.recorder
            self.writer.write_checkpoint(summary, ck_arrays, ck_attrs,
                                         rec.rate_sources(self.rate_bin_ms) if rec is not None and rec.rates
                                         else None,
                                         rec.spike_sources(table) if rec is not None else None,
                                         rec.state_sources() if rec is not None else None)

        ctx.on_root(write)  # <out>.partial names checkpoint k: the states of k - 1 are no longer needed
        ckpt_io.state_path(folder, ctx.rank, k - 1).unlink(missing_ok=True)
        if self.on_checkpoint is not None:
            self.on_checkpoint(sim.step)

    def _input_digests(self) -> str:
        """JSON of {path: sha256} of the `digests` inputs (read once per job)."""
        if self._digests is None:
            import json

            self._digests = json.dumps({p: file_digest(p) for p in self.digest_paths})
        return self._digests

    def _write_bold(self) -> None:
        bold = np.array(self.bold_rows).reshape(-1, len(self.recipe.regions)).T
        self.writer.write_bold(bold, self.bold["tr_ms"], self.bold["params"], self.balloon.eps)

    def write_bold(self, bold: np.ndarray, tr_ms: float, params: str, eps: float) -> None:
        """Rank 0: store a BOLD signal, shape (n_regions, n_trs), as the run file's ``/bold`` (the replay's)."""
        if self.writer is not None:
            self.writer.write_bold(bold, tr_ms, params, eps)

    def summary(self) -> dict:
        """Collective: the facts of the run so far (what ``/summary`` stores)."""
        self.prepare()
        recipe, ctx = self.recipe, self.ctx
        counts = ctx.sum(self.recorder.total_counts) if self.recorder is not None else \
            np.zeros(len(recipe.populations), np.int64)
        t_s = max(self.t_ms, self.dt_ms) * 1e-3
        sizes = np.array([p.size for p in recipe.populations])
        exc = np.array([p.excitatory for p in recipe.populations])
        rates = counts / sizes / t_s

        def mean_rate(mask):
            return float(counts[mask].sum() / sizes[mask].sum() / t_s) if mask.any() else 0.0

        s = dict(model=recipe.model, neuron_model=recipe.neuron_model, dtb_version=version(),
                 n_neurons=int(sizes.sum()), n_synapses=int(self.synapse_counts.sum()), n_spikes=int(counts.sum()),
                 t_ms=self.t_ms, dt_ms=self.dt_ms, seed=self.seed, mean_rate_hz=mean_rate(sizes > 0),
                 rates_hz={p.name: float(r) for p, r in zip(recipe.populations, rates)},
                 rate_e_hz=mean_rate(exc), rate_i_hz=mean_rate(~exc), build_s=self.build_s, sim_s=self.sim_s,
                 rtf=self.sim_s / t_s, bytes_per_synapse=self.bytes_per_synapse, n_ranks=ctx.size,
                 threads=ctx.threads, backend=ctx.backend.name, connectome=getattr(self, "connectome", ""))
        if self.spikes_of != list(range(len(recipe.populations))):
            s["recorded_populations"] = [recipe.populations[i].name for i in self.spikes_of]
        return s

    def close(self, summary: dict | None = None, groups: dict | None = None) -> dict:
        """Collective: finish the run file (it appears under its name, complete) and return the summary.

        ``summary`` replaces the run's own; ``groups`` (``{name: (arrays, attrs)}``, rank 0's) are
        stored beside it (the assimilation's results).
        """
        if self.closed:
            raise UsageError("Session.close: the session is closed already")
        self.prepare()
        ctx = self.ctx
        try:
            if self.checkpoint_due:
                self.checkpoint_due = False
            if self.recorder is not None:
                self.recorder.flush(self.sim.step, final=True)
                self.recorder.close()
            if summary is None:
                t2 = time.perf_counter()
                spikes = self.recorder.finish_spikes(self.partition.local_ranges(ctx.rank), self.net.gids) \
                    if self.recorder is not None else None
                spike_sort_s = ctx.max(time.perf_counter() - t2)
                summary = self.summary()
                summary["spike_sort_s"] = spike_sort_s
                if self.resumed is not None:
                    summary["resumed_at_ms"] = self.resumed["step"] * self.dt_ms
                if isinstance(self.exchange, DryRunExchange):
                    summary["dry_run"] = self.exchange.stats()
                summary["peak_rss_mb_per_rank"] = ctx.max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                summary["synapses_per_rank_max"] = int(ctx.max(self.net.n_synapses))
                summary["phase_s"] = {k: ctx.max(v) for k, v in self.sim.clock.phase_s.items()}  # slowest rank's
                if ctx.backend.name != "cpu" and ctx.size > 1:
                    # the exchange stages spikes through page-locked host buffers either way
                    summary["mpi_cuda_aware"] = cuda_aware_mpi()
            else:
                spikes = None
            ctx.on_root(lambda: self._finish_file(summary, groups, spikes))  # no rank returns before it is complete
            self._unlock()
        except BaseException:
            self.abandon()
            raise
        self.closed = True
        return summary

    def _open_writer(self) -> None:
        """Rank 0: take the run's lock and open its writer (which clears an old run's leftovers)."""
        try:
            self.lock = RunLock(self.out)
            self.lock.acquire()  # a refusal leaves the holder's lock alone: release() needs our own
            self.writer = RunWriter(self.out, overwrite=self.overwrite, resume=self.resume)
        except BaseException:
            self._unlock()
            raise

    def _finish_file(self, summary: dict, groups: dict | None, spikes) -> None:
        """Rank 0: write the run file's last parts and commit it under its name (nothing without a file)."""
        if self.writer is None:
            return
        if self.balloon is not None:
            self._write_bold()
        for name, (arrays, attrs) in (groups or {}).items():
            self.writer.write_group(name, arrays, attrs)
        rec = self.recorder
        self.writer.finish(summary, rec.rate_sources(self.rate_bin_ms) if rec is not None and rec.rates
                           else None, spikes, rec.state_sources() if rec is not None else None,
                           stitch=self.stitch)
        if rec is not None and self.stitch == "virtual" and self.ctx.size > 1:
            rec.remove_segments([part[0] for part in spikes])  # the run file's spikes point into these
        else:
            import shutil

            shutil.rmtree(parts_dir(self.out), ignore_errors=True)

    def abandon(self) -> None:
        """After a failure: close the progress bars and drop what was written, keeping the last checkpoint."""
        self.progress.close()
        self.closed = True
        if getattr(self, "recorder", None) is not None:
            self.recorder.discard()
            if not (self.ctx.is_root or self.resume or self.checkpointed):
                # no checkpoint to keep: rank 0 clears the parts and its lock, but it may be held in a collective
                # this rank left (a signal) and be ended by this rank's abort first
                clear_parts(self.out)
                RunLock(self.out).remove_if(self.lock_note)
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.abort()
            self.writer = None
        self._unlock()

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if self.closed:
            return
        if kind is None:
            self.close()
        else:
            self.abandon()


def _warn_if_silent(recipe: Recipe) -> None:
    """Warn about populations that nothing drives: no external drive, background, stimulus or current."""
    import warnings

    silent = [p.name for p in recipe.populations if p.drive_rate_hz == 0 and not _has_background(p.neuron)]
    if silent and len(silent) == len(recipe.populations):
        warnings.warn("no population of this network has a drive (Poisson input, background or constant current): "
                      "it will fire no spikes unless stimulated. Add one with Network.drive(...)", stacklevel=3)


def _has_background(neuron) -> bool:
    if neuron.model == "lif_cond":
        return neuron.ou_mu != 0 or neuron.ou_sigma != 0 or neuron.i_ext != 0
    return neuron.i_e_pa != 0
