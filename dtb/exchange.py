"""Spike exchange: hands each epoch's spikes to the ranks that have targets of them.

Only this module and `dtb.context` talk to MPI. Every strategy takes one epoch's
local spikes as (emission step, gid) pairs in (step, gid) order and returns the
spikes this rank needs, from every rank, in (step, gid) order: the order the
delivery kernels rely on for partition-independent sums.
"""

from __future__ import annotations

import numpy as np

from dtb.context import Context
from dtb.errors import ConfigError
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
    #: the engine may deliver the rank's spikes itself (`dtb.simulation.SpikeExchange`)
    local = True

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


def routing(ctx: Context, partition: Partition, gids: np.ndarray,
            slot_gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collective: for each local neuron, the ranks that need its spikes.

    Every rank tells each owner which of its neurons it needs (the sources of its
    slots) with one all-to-all.

    Parameters
    ----------
    ctx : Context
    partition : Partition
    gids : ndarray, shape (n_local,), int64
        This rank's neurons, increasing.
    slot_gids : ndarray, shape (S,), int64
        Sources this rank needs, increasing.

    Returns
    -------
    route_ptr : ndarray, shape (n_local + 1,), int64
    route_rank : ndarray, int64
        Neuron ``lid`` is needed by ranks ``route_rank[route_ptr[lid]:route_ptr[lid + 1]]``.
    """
    size = ctx.size
    owner = partition.rank_of(slot_gids) if len(slot_gids) else np.zeros(0, np.int32)
    want_counts = np.bincount(owner, minlength=size).astype(np.int64)
    wanted = np.ascontiguousarray(slot_gids[np.argsort(owner, kind="stable")], dtype=np.int64)
    asked, got_counts = _alltoallv(ctx.comm, wanted, want_counts)
    asker = np.repeat(np.arange(size, dtype=np.int64), got_counts)
    lid = np.searchsorted(gids, asked)
    route_ptr = np.zeros(len(gids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(lid, minlength=len(gids)), out=route_ptr[1:])
    return route_ptr, asker[np.lexsort((asker, lid))]


class MpiExchange:
    """Flat all-to-all exchange over MPI.

    Per epoch: one ``Alltoall`` of counts and one ``Alltoallv`` of packed
    ``gid << 6 | step-in-epoch`` records, each destination receiving only the
    spikes it needs. Made by `make_exchange`, which builds the routing table.

    Parameters
    ----------
    ctx : Context
    gids : ndarray, shape (n_local,), int64
        This rank's neurons, increasing.
    route_ptr, route_rank : ndarray, int64
        The routing table (see `routing`).
    """

    name = "alltoall"
    local = False

    def __init__(self, ctx: Context, gids: np.ndarray, route_ptr: np.ndarray, route_rank: np.ndarray):
        self.ctx = ctx
        self.comm = ctx.comm
        self.gids = gids
        self.route_ptr = route_ptr
        self.route_rank = route_rank
        self.messages_sent = 0  # non-empty sends to other ranks, summed over epochs

    def _records(self, epoch_start: int, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One packed record per (spike, destination rank): (records uint64, destinations int64)."""
        lid = np.searchsorted(self.gids, gids)
        start = self.route_ptr[lid]
        n_dest = self.route_ptr[lid + 1] - start
        before = np.cumsum(n_dest) - n_dest
        dest = self.route_rank[np.arange(n_dest.sum()) + np.repeat(start - before, n_dest)]
        spike_of = np.repeat(np.arange(len(gids)), n_dest)
        return pack(steps[spike_of], gids[spike_of], epoch_start), dest

    def exchange(self, epoch_start: int, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Collective: the spikes of this epoch that this rank needs, from every rank.

        Parameters and returns as `SerialExchange.exchange`.
        """
        records, dest = self._records(epoch_start, steps, gids)
        order = np.argsort(dest, kind="stable")
        counts = np.bincount(dest, minlength=self.ctx.size)
        self.messages_sent += _messages(counts, self.ctx.rank)
        recv, _ = _alltoallv(self.comm, records[order], counts)
        return unpack_sorted(recv, epoch_start)


class TwoLevelExchange(MpiExchange):
    """Two-level exchange (the DTB's routing): across nodes first, then inside the node.

    Stage 1 sends everything bound for another node to the rank with the same
    local index on that node (one message per node); stage 2 redistributes inside
    each node (one message per rank of the node). Messages per rank per epoch fall
    from P - 1 to about P / ppn + ppn. Nodes are the ranks sharing memory
    (``MPI_COMM_TYPE_SHARED``), or blocks of ``ranks_per_node`` consecutive ranks
    when that is given (to try it on one machine).

    Parameters
    ----------
    nodes : dict
        From `node_layout`. Others as `MpiExchange`.
    """

    name = "two_level"

    def __init__(self, ctx: Context, gids: np.ndarray, route_ptr: np.ndarray, route_rank: np.ndarray, nodes: dict):
        super().__init__(ctx, gids, route_ptr, route_rank)
        self.node = nodes["node"]
        self.cross = nodes["cross"]
        self.node_of = nodes["node_of"]
        self.local_of = nodes["local_of"]
        self.my_node = int(self.node_of[ctx.rank])

    def exchange(self, epoch_start: int, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Collective: as `MpiExchange.exchange`, in two stages."""
        records, dest = self._records(epoch_start, steps, gids)
        dest_node = self.node_of[dest]
        far = dest_node != self.my_node
        # stage 1: (record, local index of its destination) pairs to the same local rank of each other node
        pairs = np.stack([records[far], self.local_of[dest[far]].astype(np.uint64)], axis=1)
        order = np.argsort(dest_node[far], kind="stable")
        counts = np.bincount(dest_node[far], minlength=self.cross.Get_size()) * 2
        self.messages_sent += _messages(counts, self.my_node)
        got, _ = _alltoallv(self.cross, pairs[order].ravel(), counts)
        got = got.reshape(-1, 2)
        # stage 2: what arrived for this node plus this rank's own-node records, to their ranks
        near = ~far
        out_rec = np.concatenate([records[near], got[:, 0]])
        out_local = np.concatenate([self.local_of[dest[near]], got[:, 1].astype(np.int64)])
        order = np.argsort(out_local, kind="stable")
        counts = np.bincount(out_local, minlength=self.node.Get_size())
        self.messages_sent += _messages(counts, self.node.Get_rank())
        recv, _ = _alltoallv(self.node, out_rec[order], counts)
        return unpack_sorted(recv, epoch_start)


class DryRunExchange(SerialExchange):
    """One process plays P ranks: spikes pass unchanged, traffic is measured as P ranks would send it.

    Built on a serial run of the whole network (so it must fit one process), with
    the partition of P fake ranks. For every epoch and fake rank it counts the
    records a flat all-to-all would send (one per spike and other rank holding a
    target, 8 bytes each), the non-empty messages of the flat exchange, and those of
    the two-level exchange (one per other node reached, then one per rank of the own
    node that a forwarding rank serves).

    Parameters
    ----------
    partition : Partition
        The fake P-rank partition.
    net : LocalNetwork
        The whole network, built on one process.
    ranks_per_node : int
        For the two-level figures.
    """

    name = "dry_run"
    #: every epoch's spikes must pass through `exchange` to be counted
    local = False

    def __init__(self, partition: Partition, net, ranks_per_node: int = 8):
        self.p = partition.n_ranks
        self.partition = partition
        self.ppn = max(1, ranks_per_node)
        src, tgt, _, _ = net.edges()
        pair = np.unique(src * self.p + partition.rank_of(tgt).astype(np.int64))
        src_of, self.dest = pair // self.p, pair % self.p
        n = net.recipe.n_neurons
        self.ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src_of, minlength=n), out=self.ptr[1:])
        self.epochs = 0
        self.records = np.zeros(self.p)
        self.flat = np.zeros(self.p)
        self.two_level = np.zeros(self.p)
        self.cross_node = np.zeros(self.p)  # records to ranks of other nodes (stage 1 of the two-level exchange)
        self.max_records = self.max_flat = self.max_two_level = 0.0

    def exchange(self, epoch_start: int, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Count this epoch's traffic over the fake ranks; return the spikes unchanged."""
        start = self.ptr[gids]
        n_dest = self.ptr[gids + 1] - start
        before = np.cumsum(n_dest) - n_dest
        dest = self.dest[np.arange(n_dest.sum()) + np.repeat(start - before, n_dest)]
        sender = np.repeat(self.partition.rank_of(gids).astype(np.int64), n_dest)
        away = dest != sender
        sender, dest = sender[away], dest[away]
        records = np.bincount(sender, minlength=self.p)
        flat = np.bincount(np.unique(sender * self.p + dest) // self.p, minlength=self.p)
        node_s, node_d = sender // self.ppn, dest // self.ppn
        far = node_s != node_d
        self.cross_node += np.bincount(sender[far], minlength=self.p)
        n_nodes = -(-self.p // self.ppn)
        stage1 = np.bincount(np.unique(sender[far] * n_nodes + node_d[far]) // n_nodes, minlength=self.p)
        # stage 2: the forwarder of a record is the sender for its own node, else the rank of the
        # destination node with the sender's local index
        forwarder = np.where(far, node_d * self.ppn + sender % self.ppn, sender)
        fwd = forwarder != dest
        stage2 = np.bincount(np.unique(forwarder[fwd] * self.p + dest[fwd]) // self.p, minlength=self.p)
        two = stage1 + stage2
        self.epochs += 1
        self.records += records
        self.flat += flat
        self.two_level += two
        self.max_records = max(self.max_records, float(records.max()))
        self.max_flat = max(self.max_flat, float(flat.max()))
        self.max_two_level = max(self.max_two_level, float(two.max()))
        return steps, gids

    def stats(self) -> dict:
        """Per rank per epoch: mean over ranks and epochs, and the largest single value."""
        e = max(self.epochs, 1)
        return {"ranks": self.p, "ranks_per_node": self.ppn, "epochs": self.epochs,
                "records_per_rank_epoch": float(self.records.mean() / e), "records_max": self.max_records,
                "bytes_per_rank_epoch": float(self.records.mean() / e * 8),
                "messages_flat": float(self.flat.mean() / e), "messages_flat_max": self.max_flat,
                "messages_two_level": float(self.two_level.mean() / e),
                "messages_two_level_max": self.max_two_level,
                "cross_node_records_per_rank_epoch": float(self.cross_node.mean() / e)}


def _alltoallv(comm, send: np.ndarray, send_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collective: one Alltoall of counts and one Alltoallv of ``send`` (grouped by destination).

    Returns the received array (same dtype) and the counts received from each rank.
    """
    send = np.ascontiguousarray(send)
    send_counts = np.ascontiguousarray(send_counts, dtype=np.int64)
    recv_counts = np.empty_like(send_counts)
    comm.Alltoall(send_counts, recv_counts)
    recv = np.empty(int(recv_counts.sum()), dtype=send.dtype)
    # mpi4py takes the MPI datatype from the numpy buffers
    comm.Alltoallv([send, (send_counts, _displs(send_counts))], [recv, (recv_counts, _displs(recv_counts))])
    return recv, recv_counts


def _messages(counts: np.ndarray, me: int) -> int:
    """Non-empty sends to others in one all-to-all."""
    return int(np.count_nonzero(counts)) - int(counts[me] > 0)


def _displs(counts: np.ndarray) -> np.ndarray:
    out = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def node_layout(ctx: Context, ranks_per_node: int = 0) -> dict:
    """Collective: the node communicators of the two-level exchange.

    Parameters
    ----------
    ranks_per_node : int
        0: ranks sharing memory form a node; else blocks of this many consecutive ranks.
        Every node must hold the same number of ranks.

    Returns
    -------
    dict
        ``node`` (communicator of this rank's node), ``cross`` (the ranks with this
        rank's local index, one per node, in node order), ``node_of`` and
        ``local_of`` (node ordinal and local index of every rank, int64 arrays).
    """
    from mpi4py import MPI

    comm = ctx.comm
    if ranks_per_node:
        if ctx.size % ranks_per_node:
            raise ConfigError(f"simulation.ranks_per_node = {ranks_per_node}: must divide the number of "
                              f"ranks ({ctx.size})")
        node = comm.Split(color=ctx.rank // ranks_per_node, key=ctx.rank)
    else:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=ctx.rank)
    leader = node.allreduce(ctx.rank, op=MPI.MIN)
    layout = np.array(comm.allgather((leader, node.Get_rank(), node.Get_size())), dtype=np.int64)
    if len(set(layout[:, 2])) != 1:
        raise ConfigError("the two-level exchange needs the same number of ranks on every node")
    node_of = np.searchsorted(np.unique(layout[:, 0]), layout[:, 0])
    local_of = layout[:, 1]
    cross = comm.Split(color=int(local_of[ctx.rank]), key=int(node_of[ctx.rank]))
    return {"node": node, "cross": cross, "node_of": node_of, "local_of": local_of}


def make_exchange(ctx: Context, partition: Partition, gids: np.ndarray, slot_gids: np.ndarray,
                  strategy: str = "alltoall", ranks_per_node: int = 0):
    """Collective: the exchange strategy for a context (serial on one process), routing table built.

    Parameters
    ----------
    strategy : {'alltoall', 'two_level'}
    ranks_per_node : int
        For 'two_level': 0 = real nodes, else blocks of this many consecutive ranks.
    """
    if ctx.comm is None:
        return SerialExchange()
    route_ptr, route_rank = routing(ctx, partition, gids, slot_gids)
    if strategy == "two_level":
        return TwoLevelExchange(ctx, gids, route_ptr, route_rank, node_layout(ctx, ranks_per_node))
    return MpiExchange(ctx, gids, route_ptr, route_rank)
