"""Fit metrics between simulated and recorded BOLD: correlations and functional connectivity."""

from __future__ import annotations

import numpy as np


def _centred_unit_rows(x: np.ndarray) -> np.ndarray:
    # A constant row is detected by its range, not by its centred values: the mean of a
    # constant float row can differ from the values by an ulp, which would leave a tiny
    # nonzero residue and a meaningless correlation. Such rows become NaN.
    c = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("rt,rt->r", c, c))[:, None]
    flat = (np.ptp(x, axis=1) == 0)[:, None]
    return np.divide(c, norm, out=np.full_like(c, np.nan), where=~flat & (norm > 0))


def _rows(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"{name} must have shape (R, T) with T >= 2, got {x.shape}")
    return x


def pearson_rows(a, b) -> np.ndarray:
    """Pearson correlation of each row of a with the same row of b.

    Parameters
    ----------
    a, b : array_like, shape (R, T), float
        Time series, one per row (any units).

    Returns
    -------
    ndarray, shape (R,), float64
        r in [-1, 1]; NaN where either row is constant (no warning is emitted).
    """
    a, b = _rows("a", a), _rows("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    r = np.einsum("rt,rt->r", _centred_unit_rows(a), _centred_unit_rows(b))
    return np.clip(r, -1.0, 1.0)


def persistence_r(obs, lag: int) -> np.ndarray:
    """Skill of the persistence forecast: r of obs[:, :-lag] with obs[:, lag:], per row.

    The baseline a ``lag``-TR-ahead prediction must beat ("the value lag TRs ahead equals
    this one").

    Parameters
    ----------
    obs : array_like, shape (R, T), float
    lag : int
        Lag in TRs, 1 <= lag <= T - 2.

    Returns
    -------
    ndarray, shape (R,), float64
        NaN where a lagged row is constant.
    """
    obs = _rows("obs", obs)
    if int(lag) != lag or not 1 <= lag <= obs.shape[1] - 2:
        raise ValueError(f"lag must be an integer in [1, {obs.shape[1] - 2}], got {lag}")
    return pearson_rows(obs[:, :-lag], obs[:, lag:])


def functional_connectivity(bold) -> np.ndarray:
    """Functional connectivity: the Pearson correlation matrix of the rows.

    Parameters
    ----------
    bold : array_like, shape (R, T), float

    Returns
    -------
    ndarray, shape (R, R), float64
        Symmetric, entries in [-1, 1], unit diagonal; the row and column of a constant
        region are NaN (as np.corrcoef, but without a warning).
    """
    u = _centred_unit_rows(_rows("bold", bold))
    fc = np.clip(u @ u.T, -1.0, 1.0)
    ok = ~np.isnan(u[:, 0])
    fc[np.diag(ok)] = 1.0
    return fc


def fc_similarity(fc_a, fc_b) -> float:
    """Pearson r between the strict upper triangles of two FC matrices of the same shape (R, R), R >= 3.

    NaN entries (constant regions) propagate: the result is then NaN.
    """
    fc_a, fc_b = np.asarray(fc_a, dtype=np.float64), np.asarray(fc_b, dtype=np.float64)
    if fc_a.ndim != 2 or fc_a.shape[0] != fc_a.shape[1] or fc_a.shape != fc_b.shape or fc_a.shape[0] < 3:
        raise ValueError(f"fc_a and fc_b must be square of the same size >= 3, got {fc_a.shape} and {fc_b.shape}")
    iu = np.triu_indices(fc_a.shape[0], k=1)
    return float(pearson_rows(fc_a[iu][None], fc_b[iu][None])[0])


def specificity(fc_model, fc_by_subject: dict[str, np.ndarray], own: str) -> dict:
    """Whether a model's FC resembles its own subject's recorded FC more than anyone else's.

    Parameters
    ----------
    fc_model : array_like, shape (R, R), float
        FC of the simulated BOLD.
    fc_by_subject : dict of str to ndarray, shape (R, R)
        Recorded FC per subject; must contain ``own``.
    own : str
        The subject the model was fitted to.

    Returns
    -------
    dict
        ``own_r`` (float): :func:`fc_similarity` with the own subject's FC;
        ``other_r`` (dict str -> float): the same for every other subject;
        ``specific`` (bool): own_r is strictly greater than every other r. False when
        there are no other subjects (nothing to be specific against) or any r is NaN.
    """
    if own not in fc_by_subject:
        raise ValueError(f"own subject {own!r} not among {sorted(fc_by_subject)}")
    own_r = fc_similarity(fc_model, fc_by_subject[own])
    other_r = {s: fc_similarity(fc_model, fc) for s, fc in fc_by_subject.items() if s != own}
    specific = bool(other_r) and all(own_r > r for r in other_r.values())
    return {"own_r": own_r, "other_r": other_r, "specific": bool(specific)}


def ar1_fit(fit) -> tuple[np.ndarray, np.ndarray]:
    """Per-row AR(1) model ``y[t] - mu = phi (y[t-1] - mu)`` by least squares.

    Parameters
    ----------
    fit : array_like, shape (R, T), float
        The window the model is fitted on, T >= 3.

    Returns
    -------
    mu, phi : ndarray, shape (R,), float64
        Each row's mean and lag-1 coefficient (0 for a constant row).
    """
    y = _rows("fit", fit)
    if y.shape[1] < 3:
        raise ValueError(f"an AR(1) fit needs at least 3 TRs, got {y.shape[1]}")
    mu = y.mean(axis=1)
    a, b = y[:, :-1] - mu[:, None], y[:, 1:] - mu[:, None]
    den = np.einsum("rt,rt->r", a, a)
    phi = np.divide(np.einsum("rt,rt->r", a, b), den, out=np.zeros_like(den), where=den > 0)
    return mu, phi


def ar1_forecast(mu, phi, past, lag: int) -> np.ndarray:
    """``lag``-step-ahead AR(1) forecast from ``past`` (R, T): ``mu + phi**lag (past - mu)``, the same shape.

    Per row an affine map of ``past``, so its correlation with the target equals persistence's wherever
    phi > 0: the AR(1) baseline differs from persistence in its error (`mse_rows`), not in r.
    """
    past = np.asarray(past, dtype=np.float64)
    mu, phi = np.asarray(mu)[:, None], np.asarray(phi)[:, None]
    return mu + phi ** int(lag) * (past - mu)


def mse_rows(a, b) -> np.ndarray:
    """Mean squared difference of each row of a from the same row of b, shape (R,) (units of a squared)."""
    a, b = _rows("a", a), _rows("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    return np.mean((a - b) ** 2, axis=1)
