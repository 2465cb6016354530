"""The Partition map: sorted gid ranges, each owned by one rank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtb.model.recipe import Recipe


@dataclass(frozen=True)
class Partition:
    """Gid ranges -> ranks.

    Attributes
    ----------
    starts : ndarray, shape (M,), int64
        First gid of each range, strictly increasing, ``starts[0] == 0``.
    stops : ndarray, shape (M,), int64
        One past the last gid of each range; ``stops[i] == starts[i + 1]``.
    ranks : ndarray, shape (M,), int32
        Owner of each range.
    n_ranks : int
    strategy : str
        Name of the balancer that made it (recorded in run files).
    """

    starts: np.ndarray
    stops: np.ndarray
    ranks: np.ndarray
    n_ranks: int
    strategy: str

    def rank_of(self, gids: np.ndarray) -> np.ndarray:
        """Owning rank of each gid (vectorised binary search over range starts).

        Parameters
        ----------
        gids : array_like of int

        Returns
        -------
        ndarray, int32, same shape as ``gids``
        """
        idx = np.searchsorted(self.starts, np.asarray(gids, dtype=np.int64), side="right") - 1
        return self.ranks[idx]

    def local_ranges(self, rank: int) -> np.ndarray:
        """Gid ranges of one rank in increasing order, shape (k, 2), int64 [start, stop)."""
        sel = self.ranks == rank
        return np.stack([self.starts[sel], self.stops[sel]], axis=1)

    def local_gids(self, rank: int) -> np.ndarray:
        """All gids of one rank, increasing, shape (n_local,), int64."""
        rng = self.local_ranges(rank)
        if len(rng) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in rng])


def contiguous(recipe: Recipe, n_ranks: int) -> Partition:
    """Split the gid space into ``n_ranks`` contiguous ranges of (almost) equal neuron counts."""
    n = recipe.n_neurons
    bounds = (np.arange(n_ranks + 1, dtype=np.int64) * n) // n_ranks
    return Partition(starts=bounds[:-1].copy(), stops=bounds[1:].copy(), ranks=np.arange(n_ranks, dtype=np.int32),
                     n_ranks=n_ranks, strategy="contiguous")
