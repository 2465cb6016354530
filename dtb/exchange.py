"""Spike exchange: hands each epoch's spikes to the ranks that have targets of them.

Only this module and `dtb.context` may talk to MPI. `SerialExchange` is the
one-process strategy; the MPI all-to-all, two-level and dry-run strategies follow
with the distributed engine and share its interface.
"""

from __future__ import annotations

import numpy as np


class SerialExchange:
    """Exchange on one process: the local spikes are all the spikes.

    Spikes are (emission step, source gid) pairs, int64, in (step, gid) order.
    """

    name = "serial"

    def exchange(self, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Collective: the spikes of this epoch from every rank that this rank needs.

        Parameters
        ----------
        steps, gids : ndarray, shape (n,), int64
            This rank's spikes of the epoch, in (step, gid) order.

        Returns
        -------
        steps, gids : ndarray, int64
            All spikes this rank needs, in (step, gid) order.
        """
        return steps, gids
