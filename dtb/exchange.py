"""Spike exchange: hands each epoch's spikes to the ranks that have targets of them.

Only this module and `dtb.context` talk to MPI. Every strategy takes one epoch's
local spikes as (emission step, gid) pairs in (step, gid) order and returns the
spikes this rank needs, from every rank, in (step, gid) order: the order the
delivery kernels rely on for partition-independent sums.
"""

from __future__ import annotations

import numpy as np

from dtb.context import Context
from dtb.partition import Partition

#: bits of a packed record that hold the step inside the epoch (epochs are at most 64 steps)
STEP_BITS = 6


def pack(steps: np.ndarray, gids: np.ndarray, epoch_start: int) -> np.ndarray:
    """(step, gid) pairs as uint64 records ``gid << 6 | step - epoch_start``."""
    return (gids.astype(np.uint64) << np.uint64(STEP_BITS)) | (steps - epoch_start).astype(np.uint64)


def unpack_sorted(records: np.ndarray, epoch_start: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed records back to (steps, gids), sorted by (step, gid)."""
    step = (records & np.uint64((1 << STEP_BITS) - 1)).astype(np.int64)
    gid = (records >> np.uint64(STEP_BITS)).astype(np.int64)
    order = np.lexsort((gid, step))
    return step[order] + epoch_start, gid[order]


class SerialExchange:
    """Exchange on one process: the local spikes are all the spikes."""

    name = "serial"

    def exchange(self, epoch_start: int, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The spikes of this epoch that this rank needs (here: its own).

        Parameters
        ----------
        epoch_start : int
            First step of the epoch.
        steps, gids : ndarray, shape (n,), int64
            This rank's spikes of the epoch, in (step, gid) order.

        Returns
        -------
        steps, gids : ndarray, int64
            All spikes this rank needs, in (step, gid) order.
        """
        return steps, gids


class MpiExchange:
    """Flat all-to-all exchange over MPI.

    At construction (collective) every rank tells each owner which of its neurons
    it needs (the sources of its slots), so each rank learns, per local neuron, the
    ranks to send its spikes to. Per epoch: one ``Alltoall`` of counts and one
    ``Alltoallv`` of packed ``gid << 6 | step-in-epoch`` records, each destination
    receiving only the spikes it needs.

    Parameters
    ----------
    ctx : Context
    partition : Partition
    gids : ndarray, shape (n_local,), int64
        This rank's neurons, increasing.
    slot_gids : ndarray, shape (S,), int64
        Sources this rank needs, increasing.
    """

    name = "alltoall"

    def __init__(self, ctx: Context, partition: Partition, gids: np.ndarray, slot_gids: np.ndarray):
        """Collective: build the routing table."""
        from mpi4py import MPI

        self.ctx = ctx
        self.comm = ctx.comm
        self._u64 = MPI.UINT64_T
        self._i64 = MPI.INT64_T
        size = ctx.size
        owner = partition.rank_of(slot_gids) if len(slot_gids) else np.zeros(0, np.int32)
        want_counts = np.bincount(owner, minlength=size).astype(np.int64)
        order = np.argsort(owner, kind="stable")
        wanted = np.ascontiguousarray(slot_gids[order], dtype=np.int64)
        got_counts = np.empty(size, dtype=np.int64)
        self.comm.Alltoall(want_counts, got_counts)
        asked = np.empty(int(got_counts.sum()), dtype=np.int64)
        self.comm.Alltoallv([wanted, (want_counts, _displs(want_counts)), self._i64],
                            [asked, (got_counts, _displs(got_counts)), self._i64])
        # routing table: for each local neuron, the ranks that asked for it (CSR over lids)
        asker = np.repeat(np.arange(size, dtype=np.int64), got_counts)
        lid = np.searchsorted(gids, asked)
        order = np.lexsort((asker, lid))
        self.route_ptr = np.zeros(len(gids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(lid, minlength=len(gids)), out=self.route_ptr[1:])
        self.route_rank = asker[order].astype(np.int32)
        self.gids = gids
        self.sent_records = 0

    def exchange(self, epoch_start: int, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Collective: the spikes of this epoch that this rank needs, from every rank.

        Parameters and returns as `SerialExchange.exchange`.
        """
        size = self.ctx.size
        lid = np.searchsorted(self.gids, gids)
        # one (spike, destination) pair per route entry of each spiking neuron
        start = self.route_ptr[lid]
        n_dest = self.route_ptr[lid + 1] - start
        before = np.cumsum(n_dest) - n_dest
        dest = self.route_rank[np.arange(n_dest.sum()) + np.repeat(start - before, n_dest)]
        spike_of = np.repeat(np.arange(len(gids)), n_dest)
        records = pack(steps[spike_of], gids[spike_of], epoch_start)
        order = np.argsort(dest, kind="stable")
        send = np.ascontiguousarray(records[order])
        send_counts = np.bincount(dest, minlength=size).astype(np.int64)
        recv_counts = np.empty(size, dtype=np.int64)
        self.comm.Alltoall(send_counts, recv_counts)
        recv = np.empty(int(recv_counts.sum()), dtype=np.uint64)
        self.comm.Alltoallv([send, (send_counts, _displs(send_counts)), self._u64],
                            [recv, (recv_counts, _displs(recv_counts)), self._u64])
        self.sent_records += len(send)
        return unpack_sorted(recv, epoch_start)


def _displs(counts: np.ndarray) -> np.ndarray:
    out = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def make_exchange(ctx: Context, partition: Partition, gids: np.ndarray, slot_gids: np.ndarray):
    """Collective: the exchange strategy for a context (serial on one process)."""
    if ctx.comm is None:
        return SerialExchange()
    return MpiExchange(ctx, partition, gids, slot_gids)
