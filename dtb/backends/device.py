"""The device backend: the CUDA kernels (``dtb/kernels/cuda``) on a GPU, or their host build.

An epoch is two kernels (see ``dtb/kernels/cuda/kernels.cuh``): delivery of the
pending spikes' rows due in it (one warp per spike, fixed point) and the neuron
update, which reads and clears the input, records the spikes and, on a single
rank, queues them for delivery itself. The step of an epoch and the queue lengths
live on the device, so a single rank runs many epochs without the host
(`DeviceEngine.run_batch`): it replays them as a captured CUDA graph and takes the
recorded spikes only every few epochs, as many as the buffers can hold whatever
the neurons do (a neuron fires at most once per refractory period). With several
ranks the host takes each epoch's spikes, through page-locked buffers, for the
exchange, and hands the spikes received back.

Delivery sums in fixed point, so the spikes are the same for any order of adds and
any number of ranks; they agree with the CPU backend's statistically, not bitwise.
"""

from __future__ import annotations

import numpy as np

from dtb.backends.base import Engine
from dtb.errors import ResourceError
from dtb.kernels import rng
from dtb.memory import device_bytes

#: epochs per captured CUDA graph (even: a graph starts and ends on the same queue buffer)
GRAPH_EPOCHS = 32
#: most epochs a single rank runs before the host takes the recorded spikes
MAX_BATCH_EPOCHS = 256
#: device memory the spike queues may grow to so that a batch can be long (they are never smaller than
#: one epoch needs)
QUEUE_BUDGET_BYTES = 1 << 30
#: indices into the device's ``counts`` (kernels.cuh)
PEND, REC, OVERFLOW = (0, 1), 2, 3


class DeviceBackend:
    """The CUDA kernels on one device (`dtb.kernels.gpu.CudaDevice` or `HostDevice`).

    Parameters
    ----------
    device : CudaDevice or HostDevice
    """

    def __init__(self, device):
        self.device = device
        self.name = device.name

    def engine(self, net, seed: int, *, threads: int = 1, gain: np.ndarray | None = None, local: bool = False,
               graphs: bool = True) -> "DeviceEngine":
        eng = DeviceEngine(net, seed, self.device, local=local, graphs=graphs)
        if gain is not None:
            eng.set_gains(gain)
        return eng

    def free_bytes(self) -> int:
        return self.device.free_bytes()

    def __repr__(self) -> str:
        return f"DeviceBackend({self.device.description})"


class DeviceEngine(Engine):
    """One rank's part on a device: neuron state, synapse tables, pending spikes and a record of the fired
    spikes, all in device memory.

    Parameters
    ----------
    net : LocalNetwork
        Built on the host; its arrays are copied to the device.
    seed : int
    device : CudaDevice or HostDevice
    local : bool
        The rank's own spikes are all the spikes: the device delivers them itself and runs batches.
    graphs : bool
        With ``local``, replay captured graphs of `GRAPH_EPOCHS` epochs; False launches each kernel and
        splits ``phase_s`` into delivery and update (with graphs both count as update).
    """

    def __init__(self, net, seed: int, device, local: bool = False, graphs: bool = True):
        self.dev = device
        self._check_memory(net)
        super().__init__(net, seed, device.xp)
        xp = device.xp
        self.batched = self.local = local
        self.graphs = graphs and local
        n = net.n_local
        self.gids = xp.asarray(net.gids.astype(np.int64))
        self.pop = xp.asarray(net.pop.astype(np.int32))
        self.params = xp.asarray(np.ascontiguousarray(self.table))
        self.cdf = xp.asarray(np.ascontiguousarray(self.poisson_cdf))
        if self.lif:
            self.zig = [xp.asarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
        self.slot_row_ptr = xp.asarray(net.slot_row_ptr)
        # the synapse tables as the delivery kernel takes them (empty arrays get one dummy element)
        table = net.weight_table if net.weight_table.size else np.zeros(1, np.float32)
        weight = net.weight if net.weight.size else np.zeros(1, np.float32)
        self.synapses = [self.slot_row_ptr, xp.asarray(net.row_ptr), xp.asarray(net.row_delay),
                         xp.asarray(net.post), np.int32(net.post_bits), xp.asarray(weight), xp.asarray(table),
                         xp.asarray(net.slot_receptor)]
        slot_of_lid = net.slot_of(net.gids)
        self.slot_of_lid = xp.asarray(slot_of_lid)
        self.n_sources = int((slot_of_lid >= 0).sum()) if local else 0
        self.acc = xp.zeros((self.epoch_steps, 2, n), dtype=xp.uint64)
        self.counts = xp.zeros(4, dtype=xp.int64)
        self.step_of = xp.zeros(2, dtype=xp.int64)  # first step of the epoch of each parity
        self.parity = 0
        self.n_pend = 0  # entries in the pending buffer of the current parity (as of the last look)
        self.cap = self.rec_cap = 0
        self.pend = None
        self._graphs: dict[int, object] = {}
        self.host_in = np.zeros(0, np.int64)  # page-locked staging of the spikes received
        self._reserve(1)

    def to_host(self, a) -> np.ndarray:
        return self.dev.to_host(a)

    def synchronize(self) -> None:
        self.dev.synchronize()

    # -- memory ----------------------------------------------------------------------------------------

    def _check_memory(self, net) -> None:
        recipe = net.recipe
        from dtb.kernels.cpu import MAX_EPOCH_STEPS

        need = device_bytes(net.n_local, net.n_synapses, neuron_model=recipe.neuron_model,
                            coded_weights=net.weight.size == 0, epoch_steps=min(recipe.min_delay_steps,
                                                                                MAX_EPOCH_STEPS))
        free = self.dev.free_bytes()
        if need > 0.9 * free:  # room for CuPy's pool and the queues' growth
            gib = 2**30
            raise ResourceError(f"this rank's part needs about {need / gib:.2f} GiB on {self.dev.description}, "
                                f"which has {free / gib:.2f} GiB free")

    def _need(self, epochs: int, received: int = 0) -> tuple[int, int]:
        """Queue entries that ``epochs`` full epochs (and ``received`` spikes) can need at most:
        (pending, recorded)."""
        per_neuron = -(-epochs * self.epoch_steps // (self.refractory_steps + 1))
        return self.n_pend + received + self.n_sources * per_neuron, self.net.n_local * per_neuron

    def _reserve(self, epochs: int, received: int = 0) -> int:
        """Make room in the queues for up to ``epochs`` epochs (fewer if that needs more than
        `QUEUE_BUDGET_BYTES`, but at least one) and ``received`` spikes; how many epochs fit."""
        def queue_bytes(e):
            pend, rec = self._need(e)
            return 48 * pend + 16 * rec

        while epochs > 1 and queue_bytes(epochs) > QUEUE_BUDGET_BYTES:
            epochs //= 2
        pend, rec = self._need(epochs, received)
        if pend > self.cap or rec > self.rec_cap:
            self._grow(max(pend + pend // 4, self.cap), max(rec + rec // 4, self.rec_cap))
        return epochs

    def _grow(self, cap: int, rec_cap: int) -> None:
        xp = self.dev.xp
        pend = xp.zeros((2, 3, cap), dtype=xp.int64)
        if self.cap:
            pend[self.parity, :, : self.n_pend] = self.pend[self.parity, :, : self.n_pend]
        self.pend, self.cap = pend, cap
        self.rec = xp.zeros((2, rec_cap), dtype=xp.int64)
        self.rec_cap = rec_cap
        self.host_rec = self.dev.pinned((2, rec_cap), np.int64)
        self._graphs.clear()  # they hold the old buffers' addresses

    # -- pending spikes in snapshots ---------------------------------------------------------------------

    def _pending(self) -> np.ndarray:
        pend = self.dev.to_host(self.pend[self.parity, :, : self.n_pend])
        return np.ascontiguousarray(pend[:, np.lexsort((pend[2], pend[0], pend[1]))])  # the CPU engine's order

    def _set_pending(self, pend: np.ndarray, step: int) -> None:
        xp = self.dev.xp
        self.parity, self.n_pend = 0, 0
        if pend.shape[1] > self.cap:
            self._grow(pend.shape[1], self.rec_cap)
        self.pend[0, :, : pend.shape[1]] = xp.asarray(pend)
        self.n_pend = pend.shape[1]
        self.counts[...] = xp.asarray(np.array([self.n_pend, 0, 0, 0], np.int64))
        self.step_of[0] = step

    # -- the epochs --------------------------------------------------------------------------------------

    def run_batch(self, step: int, n_steps: int, clock) -> int:
        """(Local) run as many whole epochs of the ``n_steps`` from ``step`` as the queues allow (or the last
        partial epoch); the steps done. The spikes wait on the device for `take_spikes`."""
        m = self.epoch_steps
        full = n_steps // m
        if not full:  # the run ends inside an epoch
            self._reserve(1)
            self._epoch(n_steps, clock)
            return n_steps
        epochs = self._reserve(min(full, MAX_BATCH_EPOCHS))
        left = epochs
        if self.graphs:
            while left >= GRAPH_EPOCHS:
                if self.parity not in self._graphs:
                    self._graphs[self.parity] = self.dev.capture(
                        lambda: [self._epoch(m, None) for _ in range(GRAPH_EPOCHS)])
                self._graphs[self.parity].replay()
                left -= GRAPH_EPOCHS
        for _ in range(left):
            self._epoch(m, clock)
        return epochs * m

    def _epoch(self, m: int, clock) -> None:
        self.deliver(0, m)
        if clock is not None and not self.graphs:
            clock.mark("delivery")
        self.advance(0, m)
        if clock is not None and not self.graphs:
            clock.mark("update")

    def _queue_args(self) -> tuple:
        return (np.int32(self.local), self.counts, np.int64(self.cap), self.pend, self.slot_of_lid,
                self.slot_row_ptr, np.int64(self.rec_cap), self.rec)

    def deliver(self, step: int, m: int) -> None:
        """The epoch's input; its first step is the device's own clock (``step`` is not read)."""
        grid = self.dev.grid_threads
        self.dev.launch("deliver", grid, np.int64(grid), np.int32(self.parity), self.step_of, np.int32(m),
                        self.counts, np.int64(self.cap), self.pend, *self.synapses, np.int64(self.net.n_local),
                        self.acc)

    def advance(self, step: int, m: int) -> None:
        """The neurons through the epoch (from the device's clock; ``step`` is not read)."""
        st, n = self.state, self.net.n_local
        common = (np.int32(self.parity), self.step_of, np.int32(m), np.uint64(self.seed), np.int64(n), self.gids,
                  self.pop, self.params)
        if self.lif:
            self.dev.launch("advance_lif_cond", max(n, 1), *common, self.cdf, np.int64(self.cdf.shape[1]), st["v"],
                            st["j"], st["i_bg"], st["ref"], st["gain"], st["i_stim"], self.acc, *self.zig,
                            *self._queue_args())
        else:
            self.dev.launch("advance_iaf_psc_exp", max(n, 1), *common, self.cdf, np.int64(self.cdf.shape[1]),
                            st["v"], st["i_ex"], st["i_in"], st["ref"], st["i_stim"], self.acc, *self._queue_args())
        self.parity ^= 1

    def take_spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """Wait for the device; the spikes recorded since the last call, (emission step, gid) int64 in
        (step, gid) order, and an empty record."""
        counts = self.dev.to_host(self.counts)
        if counts[OVERFLOW]:
            raise RuntimeError("a device spike queue overflowed (a bug: its size bounds what refractory neurons "
                               "can fire)")
        k = int(counts[REC])
        self.n_pend = int(counts[PEND[self.parity]])
        rec = self.host_rec[:, :k]
        for i in range(2):
            self.dev.to_host(self.rec[i, :k], out=rec[i])
        self.counts[REC] = 0
        order = np.lexsort((rec[1], rec[0]))
        return rec[0, order], self.net.gids[rec[1, order]]

    def enqueue(self, steps: np.ndarray, gids: np.ndarray) -> None:
        """Queue the spikes received that have targets here."""
        s = self.net.slot_of(gids)
        here = s >= 0
        n_new = int(here.sum())
        self._reserve(1, n_new)
        if n_new:
            if self.host_in.size < 2 * n_new:
                self.host_in = self.dev.pinned(4 * n_new, np.int64)
            stage = self.host_in[: 2 * n_new].reshape(2, n_new)
            stage[0], stage[1] = s[here], steps[here]
            slot_step = self.dev.xp.asarray(stage)  # one copy, from page-locked memory
            self.dev.launch("enqueue", n_new, np.int64(n_new), slot_step[0], slot_step[1], np.int32(self.parity),
                            self.counts, np.int64(self.cap), self.pend, self.slot_row_ptr)
            self.n_pend += n_new
