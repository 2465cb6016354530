"""Kernel tables: what the neuron models of a recipe become when a backend prepares them.

The kernels read one row of float64 numbers per population, by position
(`IAF_COLUMNS`, `LIF_COLUMNS`), computed for the time step: propagators, decay
factors, and the expected external Poisson spikes per step.
"""

from __future__ import annotations

import numpy as np

from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS
from dtb.model.recipe import Recipe


def columns(neuron_model: str) -> tuple[str, ...]:
    """The column names of a model's table."""
    return IAF_COLUMNS if neuron_model == "iaf_psc_exp" else LIF_COLUMNS


def kernel_table(recipe: Recipe) -> np.ndarray:
    """Per-population kernel parameters for ``recipe.dt_ms``.

    Returns
    -------
    ndarray, shape (n_populations, len(columns(recipe.neuron_model))), float64
    """
    dt = recipe.dt_ms
    return np.stack([p.neuron.table_row(dt, p.drive_rate_hz * dt * 1e-3, p.drive_weight)
                     for p in recipe.populations]).astype(np.float64)


def column(table: np.ndarray, neuron_model: str, name: str) -> np.ndarray:
    """One column of a `kernel_table`, shape (n_populations,), float64."""
    return table[:, columns(neuron_model).index(name)]


def refractory_steps(table: np.ndarray, neuron_model: str) -> int:
    """Steps after a spike in which no neuron can fire again (0 if a reset can reach threshold).

    Bounds how many spikes an epoch can hold: a neuron fires at most once per
    ``refractory_steps + 1`` steps.
    """
    th = "v_th_mv" if neuron_model == "lif_cond" else "theta_mv"
    if np.any(column(table, neuron_model, "v_reset_mv") >= column(table, neuron_model, th)):
        return 0
    return int(column(table, neuron_model, "ref_steps").min())
