"""How much one TR of a region's BOLD tells the filter about that region's hyperparameter.

The assimilation's update rests on the covariance, across members, of a region's
hyperparameter with that region's BOLD in the same TR. This script measures the
parts of that covariance on the assimilation benchmark's network
(`benchmarks/assimilation.toml`, Friston 2003 hemodynamics, one subject) at several
sizes: an ensemble of ``members`` network draws, as `dtb assimilate` builds it, is
spun up, run ``--rest-trs`` TRs at the default hyperparameters, then every
member-region's background gain is stepped by +-``--step`` (random signs) and the
ensemble runs ``--step-trs`` more TRs. Reported per size (means over regions):

- ``level_sd``: s.d. across members of a region's mean BOLD at rest (the members are
  different network draws, so their levels differ without any hyperparameter);
- ``tr_sd``: s.d. over TRs of a member-region's BOLD at rest (finite-size noise);
- ``response``: half the difference of the mean BOLD change of stepped-up and
  stepped-down member-regions over the last ``--step-trs`` - 5 TRs (after the
  hemodynamic response has settled): BOLD per +``--step`` of the gain;
- ``r_tr``: correlation, over member-regions, of the step's sign with one settled TR
  of BOLD (what the filter's update has to go on, with a spread of +-step), and
  ``r_tr_own_level``: the same with each member-region's rest level subtracted (what a
  filter that knew every draw's level would have).

    python benchmarks/hyper_sensitivity.py                          # 40, 160, 640 neurons per region
    python benchmarks/hyper_sensitivity.py --sizes 3760 --members 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import save

from dtb.assimilation.driver import Twin
from dtb.config import load_config
from dtb.context import Context
from dtb.driver import session_from_config
from dtb.model.builder import Network
from dtb.model.neurons import LIF_GAINS
from dtb.model.registry import network_from_config

CONFIG = Path(__file__).with_name("assimilation.toml")
#: as the assimilation benchmark's runs with the Friston 2003 hemodynamics (README, Benchmarks)
OVERRIDES = ["bold.params=friston2003", "recording.progress=false"]
TR_MS = 720.0
SETTLE_TRS = 5


def measure_size(n_neurons: int, members: int, subject: str, step: float, rest_trs: int, step_trs: int,
                 threads: int, seed: int) -> dict:
    """The figures of one network size (see the module docstring)."""
    cfg = load_config(CONFIG, overrides=OVERRIDES + [f"wholebrain.n_neurons={n_neurons}",
                                                     f"wholebrain.subject={subject}"])
    base = network_from_config(cfg).recipe()
    n_reg = len(base.regions)
    t0 = time.perf_counter()
    ensemble = Network.from_recipe(base.replicate(members), seed=cfg.simulation.seed)
    session = session_from_config(cfg, None, network=ensemble, ctx=Context.from_environment("cpu", threads))
    session.record(spikes=False, rates=False)
    twin = Twin(session, n_reg, cfg.bold)
    tr_steps = round(TR_MS / cfg.simulation.dt_ms)
    twin.spin_up(round(cfg.assimilation.spinup_ms / cfg.simulation.dt_ms))
    rest = np.stack([twin.advance(tr_steps) for _ in range(rest_trs)], axis=2)         # (members, regions, TRs)
    level = rest.mean(axis=2)
    k = LIF_GAINS.index("i_bg")
    sign = np.random.default_rng(seed).choice([-1.0, 1.0], size=(members, n_reg))
    twin.set_hyper([k], (twin.theta[k] + step * sign.ravel())[None])
    stepped = np.stack([twin.advance(tr_steps) for _ in range(step_trs)], axis=2)[:, :, SETTLE_TRS:]
    change = stepped.mean(axis=2) - level
    last = stepped[:, :, -1]
    return dict(n_neurons=n_neurons, neurons_per_region=n_neurons / n_reg, members=members,
                level_sd=float(level.std(axis=0, ddof=1).mean()), tr_sd=float(rest.std(axis=2, ddof=1).mean()),
                response=float((change[sign > 0].mean() - change[sign < 0].mean()) / 2),
                r_tr=float(np.corrcoef(sign.ravel(), last.ravel())[0, 1]),
                r_tr_own_level=float(np.corrcoef(sign.ravel(), (last - level).ravel())[0, 1]),
                wall_s=time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[3760, 15040, 60160], help="neurons per brain")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--subject", default="101309")
    ap.add_argument("--step", type=float, default=0.1, help="step of the background gain (its bounds: 0.7-1.3)")
    ap.add_argument("--rest-trs", type=int, default=10)
    ap.add_argument("--step-trs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1, help="draws the signs of the steps")
    args = ap.parse_args()
    if args.step_trs <= SETTLE_TRS:
        ap.error(f"--step-trs must exceed the {SETTLE_TRS} TRs the hemodynamic response needs to settle")
    runs = []
    for n in args.sizes:
        runs.append(measure_size(n, args.members, args.subject, args.step, args.rest_trs, args.step_trs,
                                 args.threads, args.seed))
        print({k: round(v, 5) if isinstance(v, float) else v for k, v in runs[-1].items()}, flush=True)
    save("hyper_sensitivity", dict(subject=args.subject, step=args.step, rest_trs=args.rest_trs,
                                   step_trs=args.step_trs, settle_trs=SETTLE_TRS, overrides=OVERRIDES, runs=runs))


if __name__ == "__main__":
    main()
