"""Region activity per millisecond: the input of the BOLD model.

A spike sink that counts, for every region, the spikes its local neurons emit in
each 1 ms bin; `RegionActivity.take` sums the counts over ranks and turns them into
the fraction of the region's neurons that fired in each bin.
"""

from __future__ import annotations

import numpy as np

from dtb.context import Context
from dtb.errors import ConfigError
from dtb.model.recipe import Recipe


def steps_per_ms(dt_ms: float) -> int:
    """Steps in one millisecond; a `ConfigError` unless ``dt_ms`` divides 1 ms."""
    spm = round(1.0 / dt_ms)
    if spm < 1 or abs(spm * dt_ms - 1.0) > 1e-9:
        raise ConfigError(f"simulation.dt_ms = {dt_ms:g}: BOLD needs a time step that divides 1 ms")
    return spm


class RegionActivity:
    """Counts local spikes per (1 ms bin, region).

    A spike of step ``t`` (recorded at ``(t + 1) dt``) falls in bin ``t // steps_per_ms``.

    Parameters
    ----------
    ctx : Context
    recipe : Recipe
        Gives the population offsets, each population's region and the region sizes.
    dt_ms : float
        Must divide 1 ms.

    Attributes
    ----------
    ms0 : int
        First bin not yet taken.
    """

    def __init__(self, ctx: Context, recipe: Recipe, dt_ms: float):
        self.ctx = ctx
        self.steps_per_ms = steps_per_ms(dt_ms)
        self.offsets = recipe.offsets
        self.pop_region = np.array([p.region for p in recipe.populations], dtype=np.int64)
        self.n_regions = len(recipe.regions)
        self.region_size = np.bincount(self.pop_region, weights=np.diff(self.offsets), minlength=self.n_regions)
        self.ms0 = 0
        self.counts = np.zeros((64, self.n_regions), dtype=np.int32)

    def spikes(self, steps: np.ndarray, gids: np.ndarray) -> None:
        """Take one epoch's local spikes (emission step, gid)."""
        if len(gids) == 0:
            return
        region = self.pop_region[np.searchsorted(self.offsets, gids, side="right") - 1]
        bins = steps // self.steps_per_ms - self.ms0
        if bins[-1] >= len(self.counts):
            grown = np.zeros((max(int(bins[-1]) + 1, 2 * len(self.counts)), self.n_regions), dtype=np.int32)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        np.add.at(self.counts, (bins, region), 1)

    def take(self, ms_end: int) -> np.ndarray:
        """Collective: the firing fractions of the bins ``ms0 .. ms_end - 1``, then forget them.

        Returns
        -------
        ndarray, shape (ms_end - ms0, n_regions), float64
            Fraction of each region's neurons that fired in each 1 ms bin (same on every rank).
        """
        k = ms_end - self.ms0
        if k > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros((k - len(self.counts), self.n_regions), np.int32)])
        counts = self.ctx.sum(np.ascontiguousarray(self.counts[:k]))
        self.counts = np.concatenate([self.counts[k:], np.zeros_like(self.counts[:k])])
        self.ms0 = ms_end
        return counts / self.region_size

    def skip(self, ms: int) -> None:
        """Move the first bin to ``ms`` (after a `Simulation.restore`), dropping what was counted."""
        self.counts[:] = 0
        self.ms0 = ms
