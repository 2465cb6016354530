"""The whole-brain recipe: the DTB model on a subject's connectome.

Each region gets neurons in proportion to its voxel count (largest-remainder
rounding to exactly ``n_neurons``), split into an E and an I population. Every
neuron has in-degree K: ``k_local_e`` K from its region's E population,
``k_local_i`` K from its region's I population, the rest long-range from E
populations of other regions, the source region drawn with the normalised sc
(`Connectome.long_range_probabilities`); a region that receives no long-range
connection gets its local share only. Long-range delays are fibre length /
conduction velocity; local delays are ``local_delay_ms``.
"""

from __future__ import annotations

import numpy as np

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


def wholebrain_recipe(con: Connectome, *, dt_ms: float = 0.1, n_neurons: int = 100_000, in_degree: int = 100,
                      e_fraction: float = 0.8, k_local_e: float = 4 / 7, k_local_i: float = 1 / 7,
                      conduction_velocity_m_s: float = 5.0, local_delay_ms: float = 1.0, w_e_trace=0.4,
                      w_i_trace=2.0, bg_mu_mv_ms=0.7, bg_sigma_mv_ms=0.25, bg_tau_ms=5.0,
                      sc_normalisation: str = "row", coupling: float = 1.0) -> Recipe:
    """The whole-brain recipe on a connectome.

    Parameters
    ----------
    con : Connectome
    dt_ms : float
        Time step the delays are rounded to (ms).
    n_neurons, in_degree : int
        Total neurons; incoming synapses per neuron (K).
    e_fraction, k_local_e, k_local_i : float
        Excitatory share of every region; shares of K from the own region's E and I populations.
    conduction_velocity_m_s, local_delay_ms : float
        Long-range delay = fibre length / velocity; delay inside a region.
    w_e_trace, w_i_trace : float or array of shape (n_regions,)
        Weights of excitatory (AMPA and NMDA trace jump) and inhibitory (GABA-A and GABA-B) synapses
        onto each region's neurons.
    bg_mu_mv_ms, bg_sigma_mv_ms, bg_tau_ms : float or array of shape (n_regions,)
        OU background current of each region's neurons: mean, stationary s.d. (mV/ms, C = 1), time constant.
    sc_normalisation : {'row', 'waytotal'}
        `Connectome.long_range_probabilities`.
    coupling : float
        Global coupling G: the weight of a long-range synapse is ``coupling * w_e_trace`` of its target region
        (the local ones keep ``w_e_trace``); the long-range share of K is ``1 - k_local_e - k_local_i``.

    Returns
    -------
    Recipe
        Populations ``<region>.E`` and ``<region>.I`` in region order.

    Raises
    ------
    ConfigError
        When ``n_neurons`` leaves a region without an E or I neuron, ``in_degree`` exceeds ``n_neurons``, a
        per-region array has the wrong length, or the connectome connects no two regions.
    """
    n_reg = con.n_regions
    per_region = {}
    for name, val in dict(w_e_trace=w_e_trace, w_i_trace=w_i_trace, bg_mu_mv_ms=bg_mu_mv_ms,
                          bg_sigma_mv_ms=bg_sigma_mv_ms, bg_tau_ms=bg_tau_ms).items():
        arr = np.broadcast_to(np.asarray(val, dtype=np.float64), (n_reg,)) if np.ndim(val) == 0 else \
            np.asarray(val, dtype=np.float64)
        if arr.shape != (n_reg,):
            raise ConfigError(f"wholebrain.{name}: {len(arr)} values for {n_reg} regions (give one, or one per region)")
        per_region[name] = arr
    if in_degree > n_neurons:  # every neuron's K inputs drawn from fewer neurons than K: nothing like a brain
        raise ConfigError(f"wholebrain.in_degree = {in_degree:,} exceeds wholebrain.n_neurons = {n_neurons:,}: give "
                          "each neuron fewer inputs than there are neurons")
    sizes = region_sizes(con.nvoxel.astype(np.float64), n_neurons)
    n_e = np.rint(sizes * e_fraction).astype(np.int64)
    n_i = sizes - n_e
    if n_e.min() < 1 or n_i.min() < 1:
        # a share of 1/m + 1 neurons (m the smaller fraction) floors to 1/m, which rounds to both kinds: every
        # size from `need` on works (some smaller ones do by the luck of rounding, so it is no minimum)
        m = min(e_fraction, 1 - e_fraction)
        with np.errstate(over="ignore"):
            need = float(con.nvoxel.sum()) / float(con.nvoxel.min()) * (1 / m + 1)
        kind = "E" if n_e.min() < 1 else "I"
        if not need <= 1e12:  # sizes that span more than the neurons dtb builds (or overflow a float)
            raise ConfigError(f"wholebrain.n_neurons = {n_neurons}: the smallest region gets no {kind} neuron, and "
                              "would at no size up to 1e12: its region sizes span a ratio of "
                              f"{float(con.nvoxel.max()) / float(con.nvoxel.min()):.3g}")
        raise ConfigError(f"wholebrain.n_neurons = {n_neurons}: too small for {n_reg} regions "
                          f"(smallest region gets no {kind} neuron); {int(np.ceil(need)):,} or more always works")
    pops = []
    for r, label in enumerate(con.labels):
        neuron = LifCond(ou_mu=float(per_region["bg_mu_mv_ms"][r]), ou_sigma=float(per_region["bg_sigma_mv_ms"][r]),
                         ou_tau_ms=float(per_region["bg_tau_ms"][r]))
        pops.append(Population(f"{label}.E", int(n_e[r]), True, r, neuron, -60.0, 4.0))
        pops.append(Population(f"{label}.I", int(n_i[r]), False, r, neuron, -60.0, 4.0))
    k = in_degree
    k_le = int(round(k * k_local_e))
    k_li = int(round(k * k_local_i))
    k_lr = k - k_le - k_li
    prob = con.long_range_probabilities(sc_normalisation)
    if k_lr and not prob.any():
        raise ConfigError(f"{con.source}: its sc has no connection between two regions (all zero off the "
                          "diagonal), so the long-range share of K has no source: a whole brain needs a connectome")
    lr_delay_ms = con.len_mm / conduction_velocity_m_s  # mm / (mm/ms)
    w_e, w_i = per_region["w_e_trace"], per_region["w_i_trace"]
    projections = []
    one = np.ones(1)
    for r in range(n_reg):
        far = np.flatnonzero(prob[r] > 0)
        for tgt in (2 * r, 2 * r + 1):
            if k_le:
                projections.append(Projection(tgt, np.array([2 * r]), one, indegree=k_le, weight_mean=float(w_e[r]),
                                              delay_ms=np.array([local_delay_ms])))
            if k_li:
                projections.append(Projection(tgt, np.array([2 * r + 1]), one, indegree=k_li,
                                              weight_mean=float(w_i[r]), delay_ms=np.array([local_delay_ms])))
            if k_lr and far.size:  # a region without long-range input gets local input only
                projections.append(Projection(tgt, 2 * far, prob[r, far] / prob[r, far].sum(), indegree=k_lr,
                                              weight_mean=float(coupling * w_e[r]), delay_ms=lr_delay_ms[r, far]))
    return Recipe(model="wholebrain", populations=tuple(pops), projections=tuple(projections),
                  regions=tuple(con.labels), dt_ms=dt_ms)
