"""assimilate: fit region hyperparameters so that an ensemble of brains tracks a recorded BOLD.

The ensemble is ``members`` disjoint copies of the subject's brain in one recipe
(`Recipe.replicate`), partitioned and distributed like any network. Per TR:
random-walk the logit-transformed hyperparameters, push them to the neurons,
simulate one TR, advance every member's hemodynamics, and update hyperparameters
and hemodynamic states with the ensemble Kalman filter (`enkf_update`) against the
preprocessed observation. Every rank runs the same filter on the same (summed)
activity with the same counter-based draws, so no rank needs another's result and
the outcome does not depend on the number of ranks.

The observation is causal (`observation.preprocess`): the first ``calibration_trs``
TRs set its scale and are not assimilated. After the fitted TRs the ensemble goes
on through held-out TRs with its hyperparameters frozen (forecasts only), and the
twin, one brain at the fitted hyperparameters, runs free beside the unfitted model
for the held-out length: `_heldout_metrics` judges them against baselines.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dtb.activity import steps_per_ms
from dtb.assimilation import metrics
from dtb.assimilation.enkf import enkf_update, from_logit, to_logit
from dtb.assimilation.observation import describe_preprocessing, load_observed_bold, preprocess, subjects
from dtb.bold import Balloon, bold_params
from dtb.config import Config, fitted, load_config
from dtb.connectome.connectome import bundled_connectome_path, load_connectome
from dtb.context import Context
from dtb.driver import session_from_config
from dtb.errors import ConfigError, DataError
from dtb.io.checkpoint import check_resumable, read_checkpoint
from dtb.io.runfile import check_output
from dtb.kernels import rng
from dtb.model.builder import Network
from dtb.model.recipe import Recipe
from dtb.model.neurons import LIF_GAINS
from dtb.model.registry import network_from_config
from dtb.session import Session, steps_of, version

#: draw indices of the filter's random numbers (purpose rng.ASSIMILATION), per TR
_PRIOR, _WALK, _OBS = 0, 1, 2
_FORECAST_TRS = 5
#: box the filter's hemodynamic states are clipped to: |s| (1/s), and f, v, q (relative to rest)
HEMO_S_MAX, HEMO_MIN, HEMO_MAX = 10.0, 0.2, 5.0
#: the per-TR records a checkpoint carries
_RECORDS = ("prior", "posterior", "forecast5", "free", "hyper_mean", "hyper_sd")
METRIC_NAMES = ("tracking_r", "forecast_r", "persistence_r", "forecast5_r", "persistence5_r")


class Twin:
    """A brain (or an ensemble of them) with its hemodynamics, simulated TR by TR through a `Session`.

    Parameters
    ----------
    session : Session
        Over the brain, or over ``members`` copies of it (`Recipe.replicate`); prepared here.
    n_regions : int
        Regions of one brain: `advance` returns BOLD as (copies, n_regions).
    bold : BoldConfig
    tracked : bool
        Keep a second copy of the hemodynamics (``self.tracked``), driven by the same activity,
        for a filter to correct while ``self.balloon`` stays the members' own.
    """

    def __init__(self, session: Session, n_regions: int, bold, tracked: bool = False):
        self.session = session
        session.activity_wanted = True
        session.prepare()
        self.sim, self.activity, self.net = session.sim, session.activity, session.net
        self.theta = session.theta.copy()
        n_all = len(session.recipe.regions)
        self.balloon = Balloon(n_all, bold_params(bold.params), bold.eps or None)
        self.tracked = Balloon(n_all, bold_params(bold.params), bold.eps or None) if tracked else None
        self.n_regions = n_regions

    def set_hyper(self, rows: list[int], values: np.ndarray) -> None:
        """Set hyperparameters ``rows`` of `LIF_GAINS` to ``values``, shape (len(rows), n_regions_total)."""
        self.theta[rows] = values
        self.session.set_region_gains(self.theta)

    def _run(self, steps: int, on_progress=None) -> np.ndarray:
        self.session.run_steps(steps, on_progress=on_progress or (lambda n: None))
        return self.activity.take(self.sim.step // self.activity.steps_per_ms)

    def spin_up(self, steps: int) -> None:
        """Collective: simulate ``steps``, then put the hemodynamics at the steady state of the last half's rates."""
        if steps == 0:
            return
        u = self._run(steps)
        self.balloon.set_steady_state(u[len(u) // 2:].mean(axis=0))
        if self.tracked is not None:
            self.tracked.state[...] = self.balloon.state

    def advance(self, steps: int, on_progress=None) -> np.ndarray:
        """Collective: simulate ``steps`` and return the BOLD at their end, shape (members, n_regions)."""
        u = self._run(steps, on_progress)
        for balloon in self._balloons():
            balloon.advance(u)
        return self.balloon.bold().reshape(-1, self.n_regions)

    def tracked_bold(self) -> np.ndarray:
        """BOLD of the tracked copy of the hemodynamics, shape (members, n_regions)."""
        return self.tracked.bold().reshape(-1, self.n_regions)

    def _balloons(self) -> list[Balloon]:
        return [self.balloon] if self.tracked is None else [self.balloon, self.tracked]

    def snapshot(self):
        return self.sim.snapshot(), [b.state.copy() for b in self._balloons()], self.activity.ms0

    def restore(self, snap) -> None:
        sim_snap, states, ms0 = snap
        self.sim.restore(sim_snap)
        for balloon, state in zip(self._balloons(), states):
            balloon.state[...] = state
        self.activity.skip(ms0)


def assimilate(cfg: Config, out: str | Path, data: str | Path | None = None, subject: str | None = None,
               overwrite: bool = False, ctx: Context | None = None, resume: bool = False,
               on_checkpoint: Callable[[int], None] | None = None, inputs=()) -> dict:
    """Collective: assimilate a subject's recorded BOLD and write the run file with its ``/assimilation`` group.

    Parameters
    ----------
    cfg : Config
        Uses ``[assimilation]``, ``[hyper]``, ``[bold]``, ``[wholebrain]`` (but the
        connectome is the subject's own, from ``data``) and ``[simulation]``.
    out : str or Path
        Run file to write.
    data : str or Path, optional
        HDF5 file with the subjects' connectomes and BOLD (layout of the bundled file,
        which is the default).
    subject : str, optional
        Subject id in ``data``; default ``wholebrain.subject``.
    overwrite : bool
    ctx : Context, optional
    resume : bool
        Continue the unfinished assimilation ``out`` from its last checkpoint (written every
        ``simulation.checkpoint_ms`` of biological time, rounded to whole TRs).
    on_checkpoint : callable, optional
        Called with the number of TRs done after each checkpoint (on every rank).
    inputs : sequence of paths
        Input files (the config file) that ``out`` must not be; ``data`` is one too.

    Returns
    -------
    dict
        Summary with the metrics averaged over regions (``metrics``), on every rank.
    """
    da, sim_cfg = cfg.assimilation, cfg.simulation
    data = Path(data) if data is not None else bundled_connectome_path()
    subject = str(subject if subject is not None else cfg.wholebrain.subject)
    cfg = dataclasses.replace(cfg, wholebrain=dataclasses.replace(cfg.wholebrain, subject=subject,
                                                                  connectome=str(data.resolve())))
    if cfg.model != "wholebrain":
        raise ConfigError(f"model = {cfg.model!r}: assimilation fits the wholebrain model")
    names = fitted(cfg)
    rows = [LIF_GAINS.index(n) for n in names]
    lo = np.array([getattr(da, f"{n}_bounds")[0] for n in names])[:, None]
    hi = np.array([getattr(da, f"{n}_bounds")[1] for n in names])[:, None]
    for n, a, b in zip(names, lo[:, 0], hi[:, 0]):
        if not isinstance(getattr(cfg.hyper, n), float):
            raise ConfigError(f"hyper.{n}: a fitted hyperparameter starts from one value for every region")
        if not a < getattr(cfg.hyper, n) < b:
            raise ConfigError(f"hyper.{n} = {getattr(cfg.hyper, n):g}: the initial value of a fitted hyperparameter "
                              f"must lie inside assimilation.{n}_bounds = [{a:g}, {b:g}]")
    out = Path(out)
    if resume:
        ck = read_checkpoint(out)
        if ck.attrs.get("kind") != "assimilation":
            raise DataError(f"{str(out)!r}: the checkpoint is a simulation run's: resume it with dtb run --resume")
        check_resumable(load_config(text=ck.config_toml), cfg, 0)
    else:
        check_output(out, overwrite, [*inputs, data, *cfg.connectome_files(), *cfg.region_value_files()])
    obs = load_observed_bold(data, subject)
    n_trs, members, calib = da.trs, da.members, da.calibration_trs
    n_rec = obs.bold.shape[1]
    if n_trs > n_rec:
        raise ConfigError(f"assimilation.trs = {n_trs}: the recording of subject {subject} has only {n_rec} TRs")
    val = cfg.validation
    n_val = val.trs or n_rec - n_trs
    if n_trs + n_val > n_rec:
        raise ConfigError(f"validation.trs = {val.trs}: the recording of subject {subject} has {n_rec} TRs, "
                          f"{n_rec - n_trs} after the {n_trs} assimilated")
    if 0 < n_val < 3:
        raise ConfigError(f"validation.trs: {n_val} held-out TRs are too few for an FC (0 = all that is left)")
    n_fore = min(val.forecast_trs, n_val)
    n_loop = n_trs + n_fore     # the filter's TRs: fitted, then held out with the hyperparameters frozen
    tr_ms = obs.tr_s * 1e3
    tr_steps = steps_of(f"the TR of {data.name} ({tr_ms:g} ms)", tr_ms, sim_cfg.dt_ms)
    steps_of(f"the TR of {data.name} ({tr_ms:g} ms)", tr_ms, 1.0)
    steps_per_ms(sim_cfg.dt_ms)
    spin_steps = 0 if da.spinup_ms == 0 else steps_of("assimilation.spinup_ms", da.spinup_ms, sim_cfg.dt_ms)
    every_trs = max(1, round(sim_cfg.checkpoint_ms / tr_ms)) if sim_cfg.checkpoint_ms else n_loop + 1
    band = (da.band_lo_hz, da.band_hi_hz)
    prep = dict(calibration_trs=calib, detrend_order=da.detrend_order, band_hz=band, lo=da.obs_lo, hi=da.obs_hi)
    n_used = n_trs + n_val      # causal: no TR after the last one used is read
    try:
        y = _prepare(obs.bold[:, :n_used], obs.tr_s, da.preprocess, prep)
    except ValueError as err:
        raise ConfigError(f"assimilation preprocessing: {err}") from None
    base = network_from_config(cfg)
    if list(base.recipe().regions) != list(obs.labels):
        raise DataError(f"{data}: the labels of /labels and of subject {subject}'s connectome differ")
    n_reg = len(base.recipe().regions)
    # the twin's brain (and the replay's), built now so that a size too small for the regions fails before the
    # filter runs; the unfitted model is the configured one, whatever the sweep keeps
    replay_net = unfitted_net = None
    if da.replay or n_val:
        try:
            unfitted_net = network_from_config(cfg, n_neurons=val.n_neurons or cfg.wholebrain.n_neurons)
        except ConfigError as err:
            raise ConfigError(f"validation.n_neurons: {err}") from None
    cfg_user = cfg   # what the run file stores; the sweep's choice is in its summary and /assimilation/sweep
    grid = _sweep_grid(cfg)
    sweep = None
    if len(grid) > 1:
        if len(grid) > members:
            raise ConfigError(f"assimilation.sweep_*: {len(grid)} pairs of global parameters for {members} members "
                              "(each pair needs a member at least)")
        if resume:
            if "sweep" not in ck.attrs:
                raise DataError(f"{str(out)!r}: the checkpoint holds no sweep of global parameters; it cannot be "
                                "resumed with assimilation.sweep_* set")
            sweep = json.loads(ck.attrs["sweep"])  # what the interrupted job measured and kept
        else:
            sweep, ctx = _sweep(cfg, grid, y, members, n_reg, calib + da.burn_in_trs, n_trs, obs.tr_s, ctx,
                                spin_steps, tr_steps, dict(preprocessed=da.preprocess, prep=prep))
        cfg = _with_globals(cfg, *grid[sweep["best"]])
        base = network_from_config(cfg)
    if unfitted_net is not None:
        replay_net = unfitted_net if sweep is None else \
            network_from_config(cfg, n_neurons=val.n_neurons or cfg.wholebrain.n_neurons)
    one = base.recipe()
    if sim_cfg.memory_check:  # before the ensemble's recipe is made: its size is members times the brain's
        from dtb.context import launcher_size
        from dtb.memory import check_total

        check_total(base.n_neurons * members, float(one.incoming_synapses().sum()) * members,
                    ctx.size if ctx is not None else launcher_size(), "this assimilation",
                    one.n_population_pairs * members)
    ensemble = Network.from_recipe(one.replicate(members), seed=sim_cfg.seed)
    # the filter checkpoints at TR boundaries itself (every_trs), not on the session's clock
    cfg_ens = dataclasses.replace(cfg, simulation=dataclasses.replace(sim_cfg, checkpoint_ms=0.0))
    others = {}
    if da.replay or n_val:  # every subject checked now, not after hours
        others = _other_recordings(data, subject, obs, n_used, da.preprocess, prep)
    session = session_from_config(cfg_ens, out, network=ensemble, ctx=ctx, overwrite=overwrite, resume=resume,
                                  kind="assimilation", what="this assimilation", inputs=[*inputs, data],
                                  digests=[data])
    session.config = cfg_user
    session.record(spikes=False, rates=False)
    separate = da.hemodynamics == "separate"
    ens = Twin(session, n_reg, cfg.bold, tracked=separate)
    ctx = session.ctx
    progress = session.progress
    try:
        build_s = session.build_s
        n_synapses = int(session.synapse_counts.sum())
        ids = np.arange(len(names) * members * n_reg, dtype=np.int64)
        obs_ids = np.arange(members * n_reg, dtype=np.int64)

        def normals(ids_, tr, use):
            return rng.normals(sim_cfg.seed, rng.ASSIMILATION, ids_, 3 * (tr + 1) + use)

        shape = (n_reg, n_loop)
        # ensemble means per region and TR; 'free' is the members' own BOLD (the prior unless separate); NaN in
        # the calibration window, which is not assimilated
        prior, posterior, forecast5, free = (np.full(shape, np.nan) for _ in range(4))
        hyper_mean = np.full((n_trs, n_reg, len(names)), np.nan)
        hyper_sd = np.full((n_trs, n_reg, len(names)), np.nan)
        t1 = time.perf_counter()
        start, assim_before = calib, 0.0
        if resume:
            # the filter's state and records from the checkpoint (the session restored the ensemble's)
            ck, ck_attrs = session.resumed["arrays"], session.resumed["attrs"]
            x, past, offset, start = ck["x"], ck["x_past"], ck["bold_offset"], int(ck_attrs["trs_done"])
            y = ck["bold_observed"]
            prior, posterior, forecast5, free, hyper_mean, hyper_sd = (ck[k] for k in _RECORDS)
            ens.balloon.state[...] = ck["balloon_state"]
            if separate:
                ens.tracked.state[...] = ck["tracked_state"]
            assim_before = float(ck_attrs["assimilation_s"])
        else:
            # the filter's state: hyperparameters in logit space, (H, members * regions), and the
            # smoother's window: past[k - 1] = those of TR t - k, (<= smoother_trs, H, members * regions)
            x = to_logit(ens.theta[rows], lo, hi) + da.prior_sd * normals(ids, -1, _PRIOR).reshape(len(names), -1)
            past = np.zeros((0, *x.shape))
            # 'member' spins up at the [hyper] values, so that the members' levels differ only by their draws
            if da.obs_baseline != "member":
                ens.set_hyper(rows, from_logit(x, lo, hi))
            ens.spin_up(spin_steps)
            level = ens.balloon.bold().reshape(members, n_reg)
            if da.obs_baseline != "range":
                y = _on_model_baseline(y, level.mean(axis=0), calib)
            # taken from each member's BOLD before it meets the observation, (members, regions)
            offset = level - level.mean(axis=0) if da.obs_baseline == "member" else np.zeros_like(level)
        advance = progress("assimilate", n_loop - calib, unit="TR")
        advance(start - calib)
        for t in range(start, n_loop):
            # held-out TRs (t >= n_trs): the hyperparameters stay as fitted; only the hemodynamics are filtered
            learn = t < n_trs
            if learn:
                x = x + da.walk_sd * normals(ids, t, _WALK).reshape(x.shape)
            ens.set_hyper(rows, from_logit(x, lo, hi))
            bold = ens.advance(tr_steps) - offset
            free[:, t] = bold.mean(axis=0)
            # (1 + lags, H, members * regions), nothing when held out
            window = np.concatenate([x[None], past]) if learn else np.zeros((0, *x.shape))
            n_h = window.shape[0] * len(names)
            hemo = _hemo_states(ens.balloon, members)[:, :, : 0 if separate else 4]
            states = np.concatenate([window.reshape(n_h, members, n_reg).transpose(1, 2, 0), hemo, bold[:, :, None]],
                                    axis=2)
            # inflation per state variable: the hyperparameters (every lag), s, f, v, q (when updated), BOLD
            inflation = np.full(states.shape[2], da.inflation)
            if not da.inflate_hyper:
                inflation[:n_h] = 1.0
            noise = normals(obs_ids, t, _OBS).reshape(members, n_reg)
            states = enkf_update(states, y[:, t], da.obs_var, noise, da.local_weight, inflation)
            if learn:
                window = states[:, :, :n_h].transpose(2, 0, 1).reshape(window.shape)
                x, past = window[0], window[: da.smoother_trs]
            if separate:
                # the dual filter's second analysis: the tracked copy alone, with the same perturbed observations.
                # Without the members' offsets: their levels' spread gives the update its weight, and pulling
                # the members together costs nothing here, where no hyperparameter learns from it.
                bold = ens.tracked_bold()
                states = enkf_update(np.concatenate([_hemo_states(ens.tracked, members), bold[:, :, None]], axis=2),
                                     y[:, t], da.obs_var, noise, da.local_weight, da.inflation)
                _set_hemo_states(ens.tracked, states[:, :, :4])
            else:
                _set_hemo_states(ens.balloon, states[:, :, n_h: n_h + 4])
            prior[:, t] = bold.mean(axis=0)
            posterior[:, t] = states[:, :, -1].mean(axis=0)
            if learn:
                # the latest estimate of every TR in the window (TR t - k's is final once k = smoother_trs)
                theta = from_logit(window, lo, hi).reshape(len(window), len(names), members, n_reg)
                hyper_mean[t - len(window) + 1: t + 1] = theta.mean(axis=2).transpose(0, 2, 1)[::-1]
                hyper_sd[t - len(window) + 1: t + 1] = theta.std(axis=2, ddof=1).transpose(0, 2, 1)[::-1]
            if da.forecast5_every and t % da.forecast5_every == 0 and t + _FORECAST_TRS < n_loop:
                # the free forecast from this posterior, then back to it
                ens.set_hyper(rows, from_logit(x, lo, hi))
                snap = ens.snapshot()
                for _ in range(_FORECAST_TRS):
                    bold5 = ens.advance(tr_steps)
                forecast5[:, t + _FORECAST_TRS] = (ens.tracked_bold() if separate else bold5).mean(axis=0)
                ens.restore(snap)
            advance(1)
            if (t + 1) % every_trs == 0 and t + 1 < n_loop:
                assim_s = assim_before + ctx.max(time.perf_counter() - t1)
                records = dict(zip(_RECORDS, (prior, posterior, forecast5, free, hyper_mean, hyper_sd)))
                if separate:
                    records["tracked_state"] = ens.tracked.state
                session.checkpoint(
                    dict(x=x, x_past=past, bold_offset=offset, balloon_state=ens.balloon.state, bold_observed=y,
                         **records),
                    dict(trs_done=t + 1, assimilation_s=assim_s, **({} if sweep is None else
                                                                     dict(sweep=json.dumps(sweep)))),
                    dict(kind="assimilation", dtb_version=version(), subject=subject, data=str(data),
                         members=members, trs=n_loop, trs_done=t + 1, n_ranks=ctx.size, seed=sim_cfg.seed))
                if on_checkpoint is not None:
                    on_checkpoint(t + 1)
        assim_s = assim_before + ctx.max(time.perf_counter() - t1)
        peak_rss_mb = ctx.max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        progress.close()

        # in-sample: one brain replaying the posterior-mean hyperparameters of each assimilated TR
        replay = None
        if da.replay:
            replay = np.full((n_reg, n_trs), np.nan)
            replay[:, calib:] = _free_run(cfg_ens, replay_net, n_reg, ctx, rows, hyper_mean[calib:], n_trs - calib,
                                          spin_steps, tr_steps, "replay")[0][0]
        # out of sample: the twin (the fitted hyperparameters, fixed) and the unfitted model, free on the held-out TRs
        twin = unfitted = theta_twin = None
        if n_val:
            n_avg = val.average_trs or max(1, (n_trs - calib - da.burn_in_trs) // 2)
            theta_twin = hyper_mean[max(calib, n_trs - n_avg):].mean(axis=0)           # (regions, H)
            # the model's BOLD goes through the observation's causal filter (its first calib TRs settle it)
            runs = {}
            for what, theta, net in (("twin", theta_twin, replay_net), ("unfitted", None, unfitted_net)):
                per_tr = None if theta is None else np.broadcast_to(theta, (n_val + calib, *theta.shape))
                bold = _free_run(cfg_ens, net, n_reg, ctx, rows, per_tr, n_val + calib, spin_steps, tr_steps,
                                 what)[0][0]
                runs[what] = _prepare(bold, obs.tr_s, da.preprocess, prep)[:, calib:]
            twin, unfitted = runs["twin"], runs["unfitted"]

        result = _metrics(y, prior, posterior, forecast5, replay, calib + da.burn_in_trs, others, subject, n_trs)
        if n_val:
            sc = load_connectome(data, subject).sc
            sc = (sc + sc.T) / 2  # FC is symmetric: a directed coupling is compared by its mean of both ways
            held, result["heldout_specificity"] = _heldout_metrics(y, prior, forecast5, twin, unfitted, sc, others,
                                                                   subject, n_trs, n_fore, calib + da.burn_in_trs)
            result["mean"].update(held)
        summary = dict(kind="assimilation", dtb_version=version(), subject=subject, data=str(data),
                       members=members, trs=n_trs, calibration_trs=calib, heldout_trs=n_val, forecast_trs=n_fore,
                       tr_s=obs.tr_s, fitted=names, n_regions=n_reg,
                       neurons_per_member=base.n_neurons, n_neurons=base.n_neurons * members, n_synapses=n_synapses,
                       seed=sim_cfg.seed, dt_ms=sim_cfg.dt_ms, n_ranks=ctx.size, threads=ctx.threads,
                       backend=ctx.backend.name, build_s=build_s, assimilation_s=assim_s,
                       s_per_tr=assim_s / (n_loop - calib), peak_rss_mb_per_rank=peak_rss_mb,
                       validation_s=ctx.max(time.perf_counter() - t1) + assim_before - assim_s,
                       metrics=result["mean"], specificity=result["specificity"])
        if replay_net is not None:
            summary["replay_n_neurons"] = replay_net.n_neurons
        if sweep is not None:
            summary["sweep"] = sweep
            summary["metrics"]["sweep_fc_r"] = sweep["fc_r"][sweep["best"]]
        groups = {}
        if ctx.is_root:
            arrays = dict(hyper_mean=hyper_mean, hyper_sd=hyper_sd, hyper_names=np.array(names),
                          regions=np.array(obs.labels), bold_observed=y[:, :n_trs], bold_prior=prior[:, :n_trs],
                          bold_posterior=posterior[:, :n_trs], bold_forecast5=forecast5[:, :n_trs])
            if replay is not None:
                arrays["bold_replay"] = replay
            if separate:
                arrays["bold_free"] = free[:, :n_trs]
            for name, vals in result["per_region"].items():
                arrays[f"metrics/{name}"] = vals
            preprocessing = (describe_preprocessing(calib, da.detrend_order, band, da.obs_lo, da.obs_hi)
                             if da.preprocess else "none: the recorded BOLD as it is")
            if da.obs_baseline != "range":
                preprocessing += (f"; then each region shifted so that the mean of its first {calib} TRs is the "
                                  "region's ensemble-mean model BOLD at the end of the spin-up")
            if da.obs_baseline == "member":
                preprocessing += ", which each member's BOLD meets less its own level there minus that mean"
            attrs = dict(subject=subject, data=str(data), members=members, trs=n_trs, tr_s=obs.tr_s,
                         calibration_trs=calib, preprocessing=preprocessing,
                         bold_params=cfg.bold.params, burn_in_trs=da.burn_in_trs)
            attrs.update({f"metrics/{k}": v for k, v in result["mean"].items()})
            groups["assimilation"] = (arrays, attrs)
            if replay is not None:
                session.write_bold(replay[:, calib:], tr_ms, cfg.bold.params,
                                   cfg.bold.eps or bold_params(cfg.bold.params).eps)
            if sweep is not None:
                groups["assimilation/sweep"] = (
                    {k: np.array(sweep[k]) for k in ("coupling", "w_i_trace", "fc_r", "member_fc_r")},
                    dict(best=sweep["best"], fit_trs=sweep["fit_trs"],
                         about="the ensemble's members run free on the fit window at the global couplings and "
                               "inhibitory weights of each pair (member e: pair e mod pairs); fc_r: each pair's mean "
                               "over its members of the FC r against the fit window's FC (in-sample); the best pair "
                               "was kept for the filter, the twin and the replay"))
            spec = result["specificity"]
            if spec is not None:
                groups["assimilation/specificity"] = _specificity_group(spec)
            if n_val:
                v0, v1 = n_trs, n_trs + n_fore
                groups["assimilation/validation"] = (
                    dict(bold_observed=y[:, n_trs:], bold_twin=twin, bold_unfitted=unfitted,
                         hyper_twin=theta_twin, bold_prior=prior[:, v0:v1], bold_forecast5=forecast5[:, v0:v1]),
                    dict(trs=n_val, first_tr=n_trs, forecast_trs=n_fore,
                         twin=f"hyperparameters: the posterior mean averaged over assimilated TRs "
                              f"{max(calib, n_trs - n_avg)} to {n_trs - 1}, fixed; run free after a "
                              f"{da.spinup_ms:g} ms spin-up; its BOLD filtered as the observation"))
                groups["assimilation/validation/specificity"] = _specificity_group(result["heldout_specificity"])
        if n_val:
            summary["heldout_specificity"] = result.get("heldout_specificity")
        return session.close(summary, groups)
    except BaseException:
        session.abandon()
        raise


def _free_run(cfg: Config, net: Network, n_regions: int, ctx: Context | None, rows: list[int],
              theta: np.ndarray | None, n: int, spin_steps: int, tr_steps: int, what: str) -> tuple[np.ndarray, Context]:
    """Collective: a brain, or copies of it (`Recipe.stack`), run free (no filter) for ``n`` TRs after a spin-up.

    ``n_regions`` are one brain's. ``theta`` (n, n_regions, H) gives one brain's fitted hyperparameters ``rows``
    of `LIF_GAINS` for each TR (the first also for the spin-up); None keeps the [hyper] values.

    Returns
    -------
    ndarray, shape (copies, regions, n)
        BOLD of every copy of the brain in ``net``.
    Context
        The one the run used (made from the environment when ``ctx`` is None).
    """
    session = session_from_config(cfg, None, network=net, ctx=ctx, what=f"the {what}")
    session.record(spikes=False, rates=False)
    brain = Twin(session, n_regions, cfg.bold)
    try:
        if theta is not None:
            brain.set_hyper(rows, theta[0].T)
        brain.spin_up(spin_steps)
        out = np.zeros((len(session.recipe.regions) // n_regions, n_regions, n))
        advance = session.progress(what, n, unit="TR")
        for t in range(n):
            if theta is not None:
                brain.set_hyper(rows, theta[t].T)
            out[:, :, t] = brain.advance(tr_steps)
            advance(1)
        session.close()
    except BaseException:
        session.abandon()
        raise
    return out, session.ctx


def _sweep_grid(cfg: Config) -> list[tuple[float, float | None]]:
    """The (coupling, w_i_trace) pairs ``assimilation.sweep_*`` spans; None: the configured w_i_trace."""
    da, wb = cfg.assimilation, cfg.wholebrain
    return [(g, w) for g in (da.sweep_coupling or (wb.coupling,)) for w in (da.sweep_w_i_trace or (None,))]


def _with_globals(cfg: Config, coupling: float, w_i_trace: float | None) -> Config:
    """``cfg`` with the whole brain's global coupling and (unless None) every region's inhibitory weight set."""
    wb = dataclasses.replace(cfg.wholebrain, coupling=coupling,
                             **({} if w_i_trace is None else dict(w_i_trace=w_i_trace)))
    return dataclasses.replace(cfg, wholebrain=wb)


def _sweep(cfg: Config, grid: list, y: np.ndarray, members: int, n_reg: int, fit_from: int, n_trs: int,
           tr_s: float, ctx: Context | None, spin_steps: int, tr_steps: int, observe: dict) -> tuple[dict, Context]:
    """Collective: the global parameters that bring the model's FC closest to the fit window's.

    One simulation of ``members`` brains, member ``e`` at ``grid[e % len(grid)]``, runs free for
    the ``n_trs`` fitted TRs (the calibration window included, so that the model's BOLD goes
    through the observation's causal filter as the twin's does); each member's FC over TRs
    ``fit_from`` to ``n_trs - 1`` is compared with the observation's ``y`` over the same TRs
    (in-sample: these TRs are the fit's). Finite-size noise makes one member's FC r noisy, so a
    pair is scored by the mean over its members.

    Returns
    -------
    dict
        ``coupling``, ``w_i_trace`` (per pair; NaN: as configured), ``fc_r`` (per pair),
        ``member_fc_r`` (per member), ``best`` (index of the kept pair), ``fit_trs`` ([first, last + 1]).
    Context
    """
    seed = cfg.simulation.seed
    recipes = [network_from_config(_with_globals(cfg, g, w)).recipe() for g, w in grid]
    net = Network.from_recipe(Recipe.stack([recipes[e % len(grid)] for e in range(members)]), seed=seed)
    cfg_run = dataclasses.replace(cfg, simulation=dataclasses.replace(cfg.simulation, checkpoint_ms=0.0))
    bold, ctx = _free_run(cfg_run, net, n_reg, ctx, [], None, n_trs, spin_steps, tr_steps, "sweep")
    fc_fit = metrics.functional_connectivity(y[:, fit_from:n_trs])
    member_r = np.array([metrics.fc_similarity(metrics.functional_connectivity(
        _prepare(b, tr_s, observe["preprocessed"], observe["prep"])[:, fit_from:]), fc_fit) for b in bold])
    pair_r = np.array([member_r[k::len(grid)].mean() for k in range(len(grid))])
    return dict(coupling=[g for g, _ in grid], w_i_trace=[float("nan") if w is None else w for _, w in grid],
                fc_r=pair_r.tolist(), member_fc_r=member_r.tolist(), best=int(np.argmax(pair_r)),
                fit_trs=[fit_from, n_trs]), ctx


def _specificity_group(spec: dict) -> tuple[dict, dict]:
    """The run file's group for a `metrics.specificity` result: arrays and attributes."""
    return (dict(subjects=np.array(list(spec["other_r"])), fc_r=np.array(list(spec["other_r"].values()))),
            dict(own_r=spec["own_r"], specific=spec["specific"]))


def _heldout_metrics(y, prior, forecast5, twin, unfitted, sc, others: dict, subject: str, n_trs: int, n_fore: int,
                     fit_from: int) -> tuple[dict, dict]:
    """The out-of-sample report: the twin's FC and the ensemble's forecasts on the held-out TRs, with baselines.

    Parameters
    ----------
    y : ndarray, shape (R, n_trs + n_val)
        The causal observation: fitted TRs, then held-out ones.
    prior, forecast5 : ndarray, shape (R, n_trs + n_fore)
        The ensemble's 1-TR and 5-TR-ahead forecasts (NaN where none was made).
    twin, unfitted : ndarray, shape (R, n_val)
        BOLD of the fitted twin and of the unfitted model, run free.
    sc : ndarray, shape (R, R)
        The subject's structural connectivity.
    others : dict of str to ndarray (R, n_trs + n_val)
        Every comparable subject's observation, the own one included.
    n_trs, n_fore : int
        Fitted TRs; held-out TRs with ensemble forecasts.
    fit_from : int
        First fitted TR the fit-window figures use (after the calibration and the burn-in).

    Returns
    -------
    dict
        Region-averaged figures (``heldout_*``, ``baseline_*``, ``retest_fc_r``, ``specific``).
    dict
        The held-out specificity (`metrics.specificity`).
    """
    held = y[:, n_trs:]
    fc_held = metrics.functional_connectivity(held)
    fc_of = {s: metrics.functional_connectivity(b[:, n_trs:]) for s, b in others.items()}
    group = [fc for s, fc in fc_of.items() if s != subject]
    spec = metrics.specificity(metrics.functional_connectivity(twin), fc_of, subject)
    spec = dict(own_r=float(spec["own_r"]), other_r={k: float(v) for k, v in spec["other_r"].items()},
                specific=bool(spec["specific"]))
    out = dict(heldout_fc_r=spec["own_r"],
               baseline_sc_fc_r=metrics.fc_similarity(sc, fc_held),
               baseline_log_sc_fc_r=metrics.fc_similarity(np.log1p(sc), fc_held),
               baseline_unfitted_fc_r=metrics.fc_similarity(metrics.functional_connectivity(unfitted), fc_held),
               baseline_group_fc_r=metrics.fc_similarity(np.mean(group, axis=0), fc_held) if group else float("nan"),
               retest_fc_r=metrics.fc_similarity(metrics.functional_connectivity(y[:, fit_from:n_trs]), fc_held),
               specific=spec["specific"])
    # forecasts of held-out TRs: the model's, persistence's, and an AR(1)'s fitted on the fit window
    mu, phi = metrics.ar1_fit(y[:, fit_from:n_trs])
    for lag, suffix, model in ((1, "", prior), (_FORECAST_TRS, "5", forecast5)):
        targets = n_trs + np.flatnonzero(~np.isnan(model[0, n_trs:n_trs + n_fore]))
        if len(targets) < 3:
            continue
        obs, past = y[:, targets], y[:, targets - lag]
        for name, pred in ((f"heldout_forecast{suffix}", model[:, targets]), (f"heldout_persistence{suffix}", past),
                           (f"heldout_ar1{'_5' if suffix else ''}", metrics.ar1_forecast(mu, phi, past, lag))):
            out[f"{name}_r"] = float(np.nanmean(metrics.pearson_rows(pred, obs)))
            out[f"{name}_mse"] = float(np.mean(metrics.mse_rows(pred, obs)))
    return out, spec


def _prepare(raw: np.ndarray, tr_s: float, preprocessed: bool, prep: dict) -> np.ndarray:
    """The observation the filter sees: ``raw`` preprocessed as configured (or as it is), shape (R, T)."""
    return preprocess(raw, tr_s, **prep) if preprocessed else np.asarray(raw, dtype=np.float64)


def _hemo_states(balloon: Balloon, members: int) -> np.ndarray:
    """The hemodynamic states s, f, v, q of ``balloon`` as filter state variables, shape (members, regions, 4)."""
    return balloon.state.reshape(4, members, -1).transpose(1, 2, 0)


def _set_hemo_states(balloon: Balloon, states: np.ndarray) -> None:
    """Put filtered states (members, regions, 4) back into ``balloon``.

    A linear update can leave the reachable set (f, v, q > 0, where the model is defined),
    so the states are clipped to a box around rest.
    """
    hemo = states.transpose(2, 0, 1).reshape(4, -1)
    balloon.state[0] = np.clip(hemo[0], -HEMO_S_MAX, HEMO_S_MAX)
    balloon.state[1:] = np.clip(hemo[1:], HEMO_MIN, HEMO_MAX)


def _on_model_baseline(y: np.ndarray, baseline: np.ndarray, calibration_trs: int) -> np.ndarray:
    """``y`` (R, T) with each row shifted so that its mean over the first ``calibration_trs`` TRs (the calibration
    window: causal after it) is ``baseline`` (R,), the model's BOLD.

    The recorded BOLD carries no absolute level, while the model's differs from region to
    region (with its rates); a common range would make the filter spend the
    hyperparameters on moving every region's level into it.
    """
    return y - y[:, :calibration_trs].mean(axis=1, keepdims=True) + baseline[:, None]


def _other_recordings(data: Path, subject: str, obs, n_trs: int, preprocessed: bool, prep: dict) -> dict:
    """Every subject's observation of ``data`` comparable with ``obs`` (same regions, TR, at least ``n_trs``), as
    the replay's specificity needs them: read and validated before the filter runs, so that a malformed
    subject fails the job at once, not after hours. ``{subject: (R, n_trs) array}``."""
    out = {}
    for s in subjects(data):
        other = obs if s == subject else load_observed_bold(data, s)
        if other.bold.shape[0] == obs.bold.shape[0] and other.bold.shape[1] >= n_trs and other.tr_s == obs.tr_s:
            out[s] = _prepare(other.bold[:, :n_trs], obs.tr_s, preprocessed, prep)
    return out


def _metrics(y, prior, posterior, forecast5, replay, burn_in, others: dict, subject, n_trs) -> dict:
    """Per-region and region-averaged figures of merit on the fitted TRs (in-sample: docs/concepts/assimilation.md),
    from TR ``burn_in`` on (the calibration window and the filter's burn-in); the replay's FC is compared with
    every subject's in ``others`` over the same TRs."""
    y, prior, posterior, forecast5 = (a[:, :n_trs] for a in (y, prior, posterior, forecast5))
    others = {s: bold[:, :n_trs] for s, bold in others.items()}
    b = min(burn_in, n_trs - 3)
    per = dict(tracking_r=metrics.pearson_rows(posterior[:, b:], y[:, b:]),
               forecast_r=metrics.pearson_rows(prior[:, max(b, 1):], y[:, max(b, 1):]),
               persistence_r=metrics.pearson_rows(y[:, max(b, 1) - 1:-1], y[:, max(b, 1):]))
    has5 = np.flatnonzero(~np.isnan(forecast5[0]))
    has5 = has5[has5 >= max(b, _FORECAST_TRS)]
    if len(has5) >= 3:
        per["forecast5_r"] = metrics.pearson_rows(forecast5[:, has5], y[:, has5])
        per["persistence5_r"] = metrics.pearson_rows(y[:, has5 - _FORECAST_TRS], y[:, has5])
    spec = None
    if replay is not None:
        fc_model = metrics.functional_connectivity(replay[:, b:])
        per_fc = {s: metrics.functional_connectivity(bold[:, b:]) for s, bold in others.items()}
        spec = metrics.specificity(fc_model, per_fc, subject)
        spec = dict(own_r=float(spec["own_r"]), other_r={k: float(v) for k, v in spec["other_r"].items()},
                    specific=bool(spec["specific"]))
    mean = {k: float(np.nanmean(v)) for k, v in per.items()}
    if spec is not None:
        mean["replay_fc_r"] = spec["own_r"]
    return dict(per_region=per, mean=mean, specificity=spec)
