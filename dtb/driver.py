"""run: the main job, from a configuration to a complete run file (a client of `dtb.session.Session`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dtb.config import Config, load_config
from dtb.context import Context
from dtb.io.checkpoint import check_resumable, read_checkpoint
from dtb.model import hyper
from dtb.model.builder import Network
from dtb.model.registry import network_from_config
from dtb.session import Session, steps_of


def session_from_config(cfg: Config, out: str | Path | None, *, network: Network | None = None,
                        ctx: Context | None = None, overwrite: bool = False, resume: bool = False,
                        kind: str = "run", what: str = "this run", inputs=(), digests=()) -> Session:
    """A `Session` with the ``[simulation]``, ``[hyper]`` and ``[recording]`` settings of ``cfg``.

    ``network`` defaults to the one ``cfg.model`` builds (`dtb.model.registry.network_from_config`);
    ``inputs`` (file paths) may not be the output, nor may the connectome's and the per-region values' files; the
    checkpoints record the content of ``digests`` and of those files, which a resume must find unchanged.
    """
    sim = cfg.simulation
    net = network if network is not None else network_from_config(cfg)
    recipe = net.recipe()
    value_files = cfg.region_value_files()
    gains = {name: getattr(cfg.hyper, name) for name in hyper.LIF_GAINS}
    s = Session(net, out, backend=sim.backend, ctx=ctx, seed=sim.seed, overwrite=overwrite, resume=resume,
                partition=sim.partition, exchange=sim.exchange, ranks_per_node=sim.ranks_per_node,
                dry_run_ranks=sim.dry_run_ranks, threads=sim.threads, checkpoint_ms=sim.checkpoint_ms,
                flush_ms=cfg.recording.flush_ms, memory_check=sim.memory_check, compact_weights=sim.compact_weights,
                cuda_graphs=sim.cuda_graphs, progress=cfg.recording.progress,
                region_gains=hyper.initial_theta(gains, recipe.regions) if recipe.neuron_model == "lif_cond" else None,
                gain_spread=cfg.hyper.gamma_alpha, config=cfg, kind=kind, what=what,
                inputs=[*inputs, *cfg.connectome_files(), *value_files], stitch=cfg.recording.stitch,
                digests=[*digests, *(cfg.connectome_files() if cfg.connectome_path() else []), *value_files])
    if cfg.model == "wholebrain":
        from dtb.connectome.connectome import subject_of

        s.connectome = (f"{cfg.connectome_path() or 'bundled HCP/AAL2'} "
                        f"(subject {subject_of(cfg.connectome_path(), cfg.wholebrain.subject)})")
    return s


def run(cfg: Config, out: str | Path, overwrite: bool = False, ctx: Context | None = None, resume: bool = False,
        on_checkpoint: Callable[[int], None] | None = None, inputs=()) -> dict:
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
    inputs : sequence of paths
        Input files (the config file) that ``out`` must not be.

    Returns
    -------
    dict
        The run's summary (as stored in ``/summary``), on every rank.
    """
    if not isinstance(cfg, Config):
        from dtb.errors import UsageError

        raise UsageError(f"dtb.run takes a Config (dtb.load_config), not {type(cfg).__name__}; simulate a "
                         "dtb.Network with dtb.Session(network, out=...)")
    rec = cfg.recording
    n_steps = steps_of("simulation.t_ms", cfg.simulation.t_ms, cfg.simulation.dt_ms)
    if resume:
        ck = read_checkpoint(out)
        if ck.config_toml:
            check_resumable(load_config(text=ck.config_toml), cfg, int(ck.attrs.get("step", 0)))
    s = session_from_config(cfg, out, ctx=ctx, overwrite=overwrite, resume=resume, inputs=inputs)
    s.on_checkpoint = on_checkpoint
    state = {name: _state_neurons(s, name, spec) for name, spec in rec.state.items()}
    s.record(spikes=rec.spikes if isinstance(rec.spikes, bool) else list(rec.spikes), rate_bin_ms=rec.rate_bin_ms,
             bold=rec.bold, tr_ms=cfg.bold.tr_ms, bold_params=cfg.bold.params, bold_eps=cfg.bold.eps, state=state,
             state_every_ms=min([spec.get("every_ms", cfg.simulation.dt_ms) for spec in rec.state.values()],
                                default=None))
    for stim in cfg.stimulus:
        for who in stim["populations"]:
            s.stimulate(who, stim["amplitude"], stim["start_ms"], stim["stop_ms"])
    s.prepare()
    s.run_steps(n_steps - s.step)
    return s.close()


def _state_neurons(s: Session, name: str, spec: dict):
    """The gids a ``recording.state`` entry names: its populations' first ``max_neurons`` neurons each."""
    import numpy as np

    gids = [s._gids_of(p, f"recording.state.{name}")[: spec.get("max_neurons", 100)] for p in spec["populations"]]
    return np.concatenate(gids)
