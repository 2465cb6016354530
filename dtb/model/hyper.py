"""Region hyperparameters: a few numbers per region that set every neuron's parameters.

A hyperparameter is a gain on a lif_cond parameter (`LIF_GAINS`: the four receptor
conductances and the mean of the background current). Neuron ``n`` of region ``r``
gets ``theta[k, r] * gamma[k, n]`` times its population's value, where
``gamma[k, n]`` is a Gamma(alpha, alpha) draw (mean 1) keyed by (seed, k, gid): the
same neuron gets the same draw on any partition, and changing ``theta`` between
run windows needs no rebuild.
"""

from __future__ import annotations

import numpy as np

from dtb.kernels import rng
from dtb.model.neurons import LIF_GAINS


def neuron_spread(seed: int, gids: np.ndarray, alpha: float) -> np.ndarray:
    """Each neuron's Gamma(alpha, alpha) factor on every gain.

    Parameters
    ----------
    seed : int
    gids : ndarray, shape (N,), int64
    alpha : float
        Gamma shape; 0 means no spread (all ones).

    Returns
    -------
    ndarray, shape (len(LIF_GAINS), N), float64
    """
    if alpha == 0:
        return np.ones((len(LIF_GAINS), len(gids)))
    return np.stack([rng.gammas(seed, rng.GAMMA, k, gids, alpha) for k in range(len(LIF_GAINS))])


def initial_theta(values: dict, labels) -> np.ndarray:
    """Region gains from ``{gain name: value}`` (a number, one value per region, a dict by region label or a
    CSV/TSV file of them; missing names: 1), shape (len(LIF_GAINS), len(labels)), float64."""
    from dtb.model.registry import per_region, read_table

    theta = np.ones((len(LIF_GAINS), len(labels)))
    for k, name in enumerate(LIF_GAINS):
        if name in values:
            theta[k] = per_region(read_table(values[name], f"hyper.{name}", "hyper"), labels, 1.0, f"hyper.{name}")
    return theta


def neuron_gains(theta: np.ndarray, neuron_region: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per-neuron gains from region hyperparameters.

    Parameters
    ----------
    theta : ndarray, shape (len(LIF_GAINS), n_regions), float64
    neuron_region : ndarray, shape (N,), int64
        Region of each local neuron.
    spread : ndarray, shape (len(LIF_GAINS), N), float64
        From `neuron_spread`.

    Returns
    -------
    ndarray, shape (len(LIF_GAINS), N), float64
    """
    return theta[:, neuron_region] * spread
