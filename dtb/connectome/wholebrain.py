"""The whole-brain recipe: the DTB model on a subject's connectome.

Each region gets neurons in proportion to its voxel count (largest-remainder
rounding to exactly ``n_neurons``), split into an E and an I population. Every
neuron has in-degree K: ``k_local_e`` K from its region's E population,
``k_local_i`` K from its region's I population, the rest long-range from E
populations of other regions, the source region drawn with the normalised sc
(`Connectome.long_range_probabilities`). Long-range delays are fibre length /
conduction velocity; local delays are ``local_delay_ms``.
"""

from __future__ import annotations

import numpy as np

from dtb.config import Config
from dtb.connectome.connectome import Connectome
from dtb.errors import ConfigError
from dtb.model.neurons import LifCond
from dtb.model.recipe import Population, Projection, Recipe


def region_sizes(nvoxel: np.ndarray, n_neurons: int) -> np.ndarray:
    """Neurons per region, proportional to ``nvoxel`` and summing to ``n_neurons`` exactly.

    Returns
    -------
    ndarray, shape (R,), int64
    """
    share = nvoxel / nvoxel.sum() * n_neurons
    sizes = np.floor(share).astype(np.int64)
    # largest remainders get the leftover neurons; ties broken by region index
    order = np.lexsort((np.arange(len(share)), -(share - sizes)))
    sizes[order[: n_neurons - sizes.sum()]] += 1
    return sizes


def wholebrain_recipe(cfg: Config, con: Connectome) -> Recipe:
    """Build the whole-brain recipe of a run configuration.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.wholebrain`` and ``cfg.simulation.dt_ms``.
    con : Connectome

    Returns
    -------
    Recipe
        Populations ``<region>.E`` and ``<region>.I`` in region order.

    Raises
    ------
    ConfigError
        When ``n_neurons`` leaves a region without an E or I neuron.
    """
    wb = cfg.wholebrain
    dt = cfg.simulation.dt_ms
    sizes = region_sizes(con.nvoxel.astype(np.float64), wb.n_neurons)
    n_e = np.rint(sizes * wb.e_fraction).astype(np.int64)
    n_i = sizes - n_e
    if n_e.min() < 1 or n_i.min() < 1:
        need = int(np.ceil(con.nvoxel.sum() / con.nvoxel.min() / min(wb.e_fraction, 1 - wb.e_fraction)))
        raise ConfigError(f"wholebrain.n_neurons = {wb.n_neurons}: too small for {con.n_regions} regions "
                          f"(smallest region gets no {'E' if n_e.min() < 1 else 'I'} neuron); use at least {need}")
    pops = []
    for r, label in enumerate(con.labels):
        pops.append(Population(f"{label}.E", int(n_e[r]), True, r))
        pops.append(Population(f"{label}.I", int(n_i[r]), False, r))
    k = wb.in_degree
    k_le = int(round(k * wb.k_local_e))
    k_li = int(round(k * wb.k_local_i))
    k_lr = k - k_le - k_li
    prob = con.long_range_probabilities(wb.sc_normalisation)
    lr_delay_ms = con.len_mm / wb.conduction_velocity_m_s  # mm / (mm/ms)
    projections = []
    one = np.ones(1)
    for r in range(con.n_regions):
        far = np.flatnonzero(prob[r] > 0)
        for tgt in (2 * r, 2 * r + 1):
            if k_le:
                projections.append(Projection(tgt, np.array([2 * r]), one, indegree=k_le, weight_mean=wb.w_e,
                                              delay_ms=np.array([wb.local_delay_ms])))
            if k_li:
                projections.append(Projection(tgt, np.array([2 * r + 1]), one, indegree=k_li, weight_mean=wb.w_i,
                                              delay_ms=np.array([wb.local_delay_ms])))
            if k_lr:
                projections.append(Projection(tgt, 2 * far, prob[r, far] / prob[r, far].sum(), indegree=k_lr,
                                              weight_mean=wb.w_e, delay_ms=lr_delay_ms[r, far]))
    neuron = LifCond(ou_mu=wb.bg_mu, ou_sigma=wb.bg_sigma, ou_tau_ms=wb.bg_tau_ms)
    params = np.tile(neuron.table_row(dt), (len(pops), 1))
    n_pop = len(pops)
    return Recipe(model="wholebrain", neuron_model="lif_cond", populations=tuple(pops),
                  projections=tuple(projections), params=params,
                  v0_mean_mv=np.full(n_pop, -60.0), v0_sd_mv=np.full(n_pop, 4.0),
                  regions=tuple(con.labels), dt_ms=dt)
