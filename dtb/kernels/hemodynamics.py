"""Balloon-Windkessel hemodynamics (numba): RK4 over bins of piecewise-constant neural input.

State rows are (s, f, v, q): vasodilatory signal, inflow, volume, deoxyhemoglobin, the
last three normalised to 1 at rest. See :mod:`dtb.bold` for the equations and parameters.
"""

from __future__ import annotations

import math

import numba as nb

# v and f enter fractional powers (v^(1/alpha), (1 - E0)^(1/f)), which are NaN or
# infinite for v, f <= 0. An external state update (a Kalman filter step) can push them
# there, so they are raised to this floor on entry and in every RK stage.
POSITIVE_FLOOR = 1e-6


@nb.njit(inline="always", cache=True)
def _rhs(s, f, v, q, drive, c):
    """Time derivatives of (s, f, v, q) under the drive ``eps * u`` (1/s^2).

    ``c`` holds 1/tau_s, 1/tau_f, 1/tau_0, 1/alpha, log(1 - E0), 1/E0, precomputed
    because divisions and logs would otherwise dominate the four stages.
    """
    inv_tau_s, inv_tau_f, inv_tau_0, inv_alpha, log_1m_e0, inv_e0 = c
    f = max(f, POSITIVE_FLOOR)
    v = max(v, POSITIVE_FLOOR)
    v_out = v ** inv_alpha
    e_f = 1.0 - math.exp(log_1m_e0 / f)
    ds = drive - s * inv_tau_s - (f - 1.0) * inv_tau_f
    dv = (f - v_out) * inv_tau_0
    dq = (f * e_f * inv_e0 - q * v_out / v) * inv_tau_0
    return ds, s, dv, dq


@nb.njit(cache=True)
def advance_balloon(state, u, dt_s, eps, tau_s_s, tau_f_s, tau_0_s, alpha, e0):
    """Integrate the balloon state in place through ``n_bins`` bins of constant input.

    Classical RK4, one step per bin: the input is constant within a bin, so the
    right-hand side is smooth over each step and RK4 keeps its 4th order.

    Parameters
    ----------
    state : ndarray, shape (4, n), float64
        Rows s (1/s), f, v, q (dimensionless); updated in place. v and f at or below
        ``POSITIVE_FLOOR`` on entry are raised to it.
    u : ndarray, shape (n_bins, n), float32 or float64
        Fraction of each region's neurons that fired in each bin (dimensionless).
    dt_s : float
        Bin width (s).
    eps : float
        Neural efficacy (1/s^2 per unit of u).
    tau_s_s, tau_f_s, tau_0_s : float
        Signal decay, flow feedback and transit time constants (s).
    alpha, e0 : float
        Grubb's exponent and resting oxygen extraction fraction (dimensionless).
    """
    n_bins, n = u.shape
    c = (1.0 / tau_s_s, 1.0 / tau_f_s, 1.0 / tau_0_s, 1.0 / alpha, math.log(1.0 - e0), 1.0 / e0)
    h = dt_s
    h2 = 0.5 * dt_s
    h6 = dt_s / 6.0
    # region-outer, bin-inner: the four state values stay in registers over all bins
    for i in range(n):
        s = state[0, i]
        f = max(state[1, i], POSITIVE_FLOOR)
        v = max(state[2, i], POSITIVE_FLOOR)
        q = state[3, i]
        for b in range(n_bins):
            x = eps * u[b, i]
            k1s, k1f, k1v, k1q = _rhs(s, f, v, q, x, c)
            k2s, k2f, k2v, k2q = _rhs(s + h2 * k1s, f + h2 * k1f, v + h2 * k1v, q + h2 * k1q, x, c)
            k3s, k3f, k3v, k3q = _rhs(s + h2 * k2s, f + h2 * k2f, v + h2 * k2v, q + h2 * k2q, x, c)
            k4s, k4f, k4v, k4q = _rhs(s + h * k3s, f + h * k3f, v + h * k3v, q + h * k3q, x, c)
            s += h6 * (k1s + 2.0 * (k2s + k3s) + k4s)
            f += h6 * (k1f + 2.0 * (k2f + k3f) + k4f)
            v += h6 * (k1v + 2.0 * (k2v + k3v) + k4v)
            q += h6 * (k1q + 2.0 * (k2q + k3q) + k4q)
        state[0, i] = s
        state[1, i] = f
        state[2, i] = v
        state[3, i] = q
