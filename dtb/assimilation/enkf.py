"""Perturbed-observation ensemble Kalman filter, mixing per-region and whole-brain analyses.

This is the Digital Twin Brain's hierarchical mesoscale assimilation step: every region
is updated from its own BOLD (local analysis) and, in parallel, the whole state from all
regions' BOLD (global analysis); the two analyses are mixed with a fixed weight.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit

# to_logit keeps theta at least this fraction of (hi - lo) away from either bound, so
# |x| <= logit(1 - 1e-12) ~ 27.6 and the logit of a bound-valued parameter stays finite.
_LOGIT_MARGIN = 1e-12


def to_logit(theta, lo, hi) -> np.ndarray:
    """Map bounded parameters to the real line: the inverse of :func:`from_logit`.

    Parameters
    ----------
    theta : array_like, float
        Parameters, nominally in [lo, hi] (any unit; lo and hi share it).
    lo, hi : array_like, float
        Bounds, broadcast against theta; hi > lo everywhere.

    Returns
    -------
    ndarray, float64, broadcast shape
        x = logit((theta - lo) / (hi - lo)). The fraction is first clipped to
        [1e-12, 1 - 1e-12], so theta on or beyond a bound gives |x| <= ~27.6, never inf.
    """
    lo, hi = _bounds(lo, hi)
    u = (np.asarray(theta, dtype=np.float64) - lo) / (hi - lo)
    return logit(np.clip(u, _LOGIT_MARGIN, 1.0 - _LOGIT_MARGIN))


def from_logit(x, lo, hi) -> np.ndarray:
    """Map real numbers to (lo, hi): theta = lo + (hi - lo) * sigmoid(x), elementwise.

    Parameters
    ----------
    x : array_like, float
        Unbounded (logit) values.
    lo, hi : array_like, float
        Bounds, broadcast against x; hi > lo everywhere.

    Returns
    -------
    ndarray, float64, broadcast shape
        Values in [lo, hi] (the bounds themselves only where sigmoid saturates).
    """
    lo, hi = _bounds(lo, hi)
    return lo + (hi - lo) * expit(np.asarray(x, dtype=np.float64))


def _bounds(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if not np.all(hi > lo):
        raise ValueError("logit bounds need hi > lo everywhere")
    return lo, hi


def enkf_update(states, obs, obs_var: float, noise, local_weight: float = 0.5,
                inflation=1.0) -> np.ndarray:
    """One perturbed-observation EnKF analysis: local_weight * local + (1 - local_weight) * global.

    The prior anomalies (about the ensemble mean) are first multiplied by ``inflation``
    (one factor, or one per state variable); both analyses then update that inflated prior
    with the same perturbed observations y[e, r] = obs[r] + sqrt(obs_var) * noise[e, r].

    - local: each region r alone, state z = states[:, r, :] observed through its last
      component h = states[:, r, -1]: K_r = cov(z, h) / (var(h) + obs_var),
      z_e += K_r * (y[e, r] - h_e).
    - global: the whole state (E x R*D) with all R observations at once:
      K = C_zh (C_hh + obs_var I)^-1. C_hh has rank <= E - 1, so for R >= E it is
      singular and only the obs_var I term makes the system solvable.

    Covariances use the unbiased 1 / (E - 1) normalisation.

    Parameters
    ----------
    states : array_like, shape (E, R, D), float
        Prior ensemble: E members, R regions, D state variables per region; index -1 of
        the last axis is the observed quantity (the region's BOLD, in the units of obs).
    obs : array_like, shape (R,), float
        Observation (recorded, preprocessed BOLD) of this TR.
    obs_var : float
        Observation error variance, > 0, in squared units of obs.
    noise : array_like, shape (E, R), float
        Standard normal draws for the perturbed observations (drawn by the caller).
    local_weight : float, optional
        Weight of the local analysis, in [0, 1]; 1 or 0 give the pure local or global
        analysis (the other is then not computed).
    inflation : float or array_like of shape (D,), optional
        Multiplicative prior anomaly inflation, >= 1 (1 = none): one factor for the whole
        state, or one per state variable (e.g. 1 for parameters that must not be inflated).

    Returns
    -------
    ndarray, shape (E, R, D), float64
        Analysis ensemble (a new array; the input is not modified).

    Raises
    ------
    ValueError
        On wrong shapes, E < 2, non-finite input, obs_var <= 0, local_weight outside
        [0, 1], or an inflation < 1 or of the wrong shape.
    """
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 3:
        raise ValueError(f"states must have shape (E, R, D), got {states.shape}")
    n_ens, n_reg, _ = states.shape
    obs = np.asarray(obs, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if n_ens < 2:
        raise ValueError(f"the ensemble needs at least 2 members, got {n_ens}")
    if obs.shape != (n_reg,):
        raise ValueError(f"obs must have shape ({n_reg},) to match states {states.shape}, got {obs.shape}")
    if noise.shape != (n_ens, n_reg):
        raise ValueError(f"noise must have shape ({n_ens}, {n_reg}) to match states {states.shape}, "
                         f"got {noise.shape}")
    if not (np.isfinite(obs_var) and obs_var > 0):
        raise ValueError(f"obs_var must be finite and > 0, got {obs_var}")
    if not 0.0 <= local_weight <= 1.0:
        raise ValueError(f"local_weight must be in [0, 1], got {local_weight}")
    inflation = np.asarray(inflation, dtype=np.float64)
    if inflation.shape not in ((), (states.shape[2],)):
        raise ValueError(f"inflation must be a scalar or have shape ({states.shape[2]},) to match states "
                         f"{states.shape}, got {inflation.shape}")
    if not np.all(inflation >= 1.0):
        raise ValueError(f"inflation must be >= 1, got {inflation}")
    for name, arr in (("states", states), ("obs", obs), ("noise", noise)):
        if not np.all(np.isfinite(arr)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"{name} contains NaN or inf at index {bad}")

    mean = states.mean(axis=0)
    anom = inflation * (states - mean)                              # (E, R, D)
    prior = mean + anom
    h_anom = anom[:, :, -1]                                         # (E, R)
    innov = obs + np.sqrt(obs_var) * noise - prior[:, :, -1]
    scale = 1.0 / (n_ens - 1)

    out = prior.copy()
    if local_weight > 0.0:
        cov_zh = scale * np.einsum("erd,er->rd", anom, h_anom)
        var_h = scale * np.einsum("er,er->r", h_anom, h_anom)
        gain = cov_zh / (var_h + obs_var)[:, None]                 # (R, D)
        out += local_weight * gain[None] * innov[:, :, None]
    if local_weight < 1.0:
        z_anom = anom.reshape(n_ens, -1)                            # (E, R*D)
        s_hh = scale * (h_anom.T @ h_anom) + obs_var * np.eye(n_reg)  # S = C_hh + obs_var I
        # z_e += C_zh S^-1 innov_e for all e at once, as (S^-1 innov^T)^T C_zh^T (S is
        # symmetric). LU solve rather than Cholesky: with obs_var tiny against the BOLD
        # variance, rounding can leave S numerically indefinite.
        weights = np.linalg.solve(s_hh, innov.T)                    # (R, E)
        delta = weights.T @ (scale * (h_anom.T @ z_anom))           # (E, R*D)
        out += (1.0 - local_weight) * delta.reshape(states.shape)
    return out
