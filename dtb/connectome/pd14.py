"""The Potjans & Diesmann (2014) cortical microcircuit recipe (``shared/reference/pd14.md``).

Follows NEST's ``microcircuit-PD14-model``: fixed total numbers of synapses from the
connection probabilities, normal weights (sd 10 %, redrawn to keep their sign) and
delays (redrawn below one step), Poisson or DC background, and for down-scaled
in-degrees (``k_scale`` < 1) weights divided by sqrt(k_scale) with a DC current that
restores the full-scale mean input (computed from the full-scale NEST rates).
"""

from __future__ import annotations

import numpy as np

from dtb.errors import ConfigError
from dtb.model.neurons import IafPscExp
from dtb.model.recipe import Population, Projection, Recipe

LAYERS = ("L23", "L4", "L5", "L6")
NAMES = ("L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I")
FULL_SIZES = np.array([20683, 5834, 21915, 5479, 4850, 1065, 14395, 2948])
K_EXT = np.array([1600, 1500, 2100, 1900, 2000, 1900, 2900, 2100])
V0_MEAN_MV = np.array([-68.28, -63.16, -63.33, -63.45, -63.11, -61.66, -66.72, -61.43])
V0_SD_MV = np.array([5.36, 4.57, 4.74, 4.94, 4.94, 4.55, 5.46, 4.48])
#: full-scale rates of NEST (Hz), used for the DC compensation of down-scaled in-degrees
FULL_RATES_HZ = np.array([0.903, 2.965, 4.414, 5.876, 7.569, 8.633, 1.105, 7.829])
#: connection probabilities C[target, source]
CONN_PROB = np.array([
    [0.1009, 0.1689, 0.0437, 0.0818, 0.0323, 0.0, 0.0076, 0.0],
    [0.1346, 0.1371, 0.0316, 0.0515, 0.0755, 0.0, 0.0042, 0.0],
    [0.0077, 0.0059, 0.0497, 0.135, 0.0067, 0.0003, 0.0453, 0.0],
    [0.0691, 0.0029, 0.0794, 0.1597, 0.0033, 0.0, 0.1057, 0.0],
    [0.1004, 0.0622, 0.0505, 0.0057, 0.0831, 0.3726, 0.0204, 0.0],
    [0.0548, 0.0269, 0.0257, 0.0022, 0.06, 0.3158, 0.0086, 0.0],
    [0.0156, 0.0066, 0.0211, 0.0166, 0.0572, 0.0197, 0.0396, 0.2252],
    [0.0364, 0.001, 0.0034, 0.0005, 0.0277, 0.008, 0.0658, 0.1443]])
W_EXC_PA = 87.81  # PSC amplitude of a 0.15 mV PSP
G_INH = -4.0
DELAY_MS = (1.5, 0.75)  # mean delay of excitatory, inhibitory sources
DELAY_SD_MS = (0.75, 0.375)
TAU_SYN_MS = 0.5


def full_scale_synapses() -> np.ndarray:
    """Full-scale synapse totals K[target, source] = ln(1 - C) / ln(1 - 1 / (N_pre N_post)), float64."""
    prod = np.outer(FULL_SIZES, FULL_SIZES).astype(np.float64)
    return np.log(1.0 - CONN_PROB) / np.log((prod - 1.0) / prod)


def mean_weights_pa() -> np.ndarray:
    """Full-scale mean weights W[target, source] (pA): inhibitory -4x, L4E -> L23E doubled."""
    w = np.tile(np.where(np.arange(8) % 2 == 0, W_EXC_PA, G_INH * W_EXC_PA), (8, 1))
    w[0, 2] *= 2.0
    return w


def pd14_recipe(*, dt_ms: float = 0.1, n_scale: float = 0.1, k_scale: float = 1.0, background: str = "poisson",
                bg_rate_hz: float = 8.0) -> Recipe:
    """The PD14 recipe.

    Parameters
    ----------
    dt_ms : float
    n_scale, k_scale : float
        Fractions of the full-scale neuron counts and in-degrees (DC compensation below 1).
    background : {'poisson', 'dc'}
        External drive: Poisson spikes or the equivalent DC current.
    bg_rate_hz : float
        Rate of each external Poisson source (Hz).

    Returns
    -------
    Recipe
        Eight populations L23E .. L6I.
    """
    sizes = np.rint(FULL_SIZES * n_scale).astype(np.int64)
    if sizes.min() < 1:  # a network missing a population is not the microcircuit
        raise ConfigError(f"pd14.n_scale = {n_scale:g} leaves {NAMES[int(np.argmin(sizes))]} without a neuron: "
                          f"{0.5 / FULL_SIZES.min():.2g} or more")
    k_full = full_scale_synapses()
    indeg_full = k_full / FULL_SIZES[:, None]
    totals = np.rint(indeg_full * sizes[:, None] * k_scale).astype(np.int64)
    w_full = mean_weights_pa()
    sqrt_k = np.sqrt(k_scale)
    w = w_full / sqrt_k
    w_ext = W_EXC_PA / sqrt_k
    k_ext = np.rint(K_EXT * k_scale)
    # mean input lost by scaling in-degrees (NEST's adjust_weights_and_input_to_synapse_scaling)
    rec_input = np.sum(w_full * indeg_full * FULL_RATES_HZ[None, :], axis=1)
    dc_pa = 0.001 * TAU_SYN_MS * (1.0 - sqrt_k) * rec_input
    if background == "poisson":
        dc_pa = dc_pa + 0.001 * TAU_SYN_MS * (1.0 - sqrt_k) * W_EXC_PA * K_EXT * bg_rate_hz
        drive_hz = bg_rate_hz * k_ext
    else:
        dc_pa = dc_pa + 0.001 * TAU_SYN_MS * bg_rate_hz * K_EXT * W_EXC_PA
        drive_hz = np.zeros(8)
    pops = tuple(Population(NAMES[i], int(sizes[i]), i % 2 == 0, i // 2,
                            IafPscExp(tau_syn_ex_ms=TAU_SYN_MS, tau_syn_in_ms=TAU_SYN_MS, i_e_pa=float(dc_pa[i])),
                            float(V0_MEAN_MV[i]), float(V0_SD_MV[i]), float(drive_hz[i]), float(w_ext))
                 for i in range(8))
    projections = []
    for t in range(8):
        for s in range(8):
            if totals[t, s] <= 0:
                continue
            exc = s % 2 == 0
            projections.append(Projection(
                t, np.array([s]), np.ones(1), total=int(totals[t, s]), weight_mean=float(w[t, s]),
                weight_sd=0.1 * abs(float(w[t, s])), delay_ms=np.array([DELAY_MS[0 if exc else 1]]),
                delay_sd_ms=DELAY_SD_MS[0 if exc else 1]))
    return Recipe(model="pd14", populations=pops, projections=tuple(projections), regions=LAYERS, dt_ms=dt_ms)
