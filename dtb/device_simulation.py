"""DeviceSimulation: the epoch loop of one rank with the CUDA kernels (`dtb.kernels.gpu`).

Same epochs, delivery and interface as `dtb.simulation.Simulation` (so the drivers,
checkpoints and the assimilation use either), with the neuron state, the synapse
tables, the pending spikes and a record of the fired spikes on the device. An epoch
is two kernels (see ``dtb/kernels/cuda/kernels.cuh``): delivery of the pending
spikes' rows due in it (one warp per spike, fixed point) and the neuron update,
which reads and clears the input, records the spikes and, on a single rank, queues
them for delivery itself. The step of an epoch and the queue lengths live on the
device, so a single rank runs many epochs without the host: it replays them as a
captured CUDA graph and takes the recorded spikes only every few epochs, as many as
the buffers can hold whatever the neurons do (a neuron fires at most once per
refractory period). With several ranks the host takes each epoch's spikes, through
page-locked buffers, for the exchange, and hands the spikes received back.

Delivery sums in fixed point, so the spikes are the same for any order of adds and
any number of ranks; they agree with the CPU backend's statistically, not bitwise.
"""

from __future__ import annotations

import numpy as np

from dtb.context import Context
from dtb.errors import ResourceError
from dtb.exchange import SerialExchange
from dtb.kernels import cpu, rng
from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS, LIF_GAINS
from dtb.network import LocalNetwork
from dtb.simulation import EpochLoop, PhaseClock, initial_state, poisson_table

#: epochs per captured CUDA graph (even: a graph starts and ends on the same queue buffer)
GRAPH_EPOCHS = 32
#: most epochs a single rank runs before the host takes the recorded spikes
MAX_BATCH_EPOCHS = 256
#: device memory the spike queues may grow to so that a batch can be long (they are never smaller than
#: one epoch needs)
QUEUE_BUDGET_BYTES = 1 << 30
#: indices into the device's ``counts`` (kernels.cuh)
PEND, REC, OVERFLOW = (0, 1), 2, 3


class DeviceSimulation(EpochLoop):
    """Advance one rank's part of a network on a device.

    Parameters
    ----------
    ctx : Context
    net : LocalNetwork
        Built on the host; its arrays are copied to the device.
    exchange : object with ``exchange(step, steps, gids)``
        A `SerialExchange` on a single rank lets the device deliver its own spikes.
    seed : int
    gain : ndarray, shape (len(LIF_GAINS), n_local), float64, optional
    device : CudaDevice or HostDevice
        Where the kernels run (`dtb.kernels.gpu`).
    graphs : bool, optional
        On a single rank, replay captured graphs of `GRAPH_EPOCHS` epochs; False launches each
        kernel and splits ``phase_s`` into delivery and update (with graphs both count as update).

    Attributes
    ----------
    step : int
    epoch_steps : int
    state : dict of device arrays
        As `Simulation.state`.
    clock : PhaseClock
        Wall time per phase; the device is synchronised at each mark.
    """

    def __init__(self, ctx: Context, net: LocalNetwork, exchange, seed: int, gain: np.ndarray | None = None,
                 device=None, graphs: bool = True):
        recipe = net.recipe
        self.ctx, self.net, self.exchange, self.seed, self.dev = ctx, net, exchange, seed, device
        xp = device.xp
        self.dt_ms = recipe.dt_ms
        self.step = 0
        self.epoch_steps = min(recipe.min_delay_steps, cpu.MAX_EPOCH_STEPS)
        self.clock = PhaseClock(device.synchronize)
        self.local = ctx.size == 1 and type(exchange) is SerialExchange
        self.graphs = graphs and self.local
        n = net.n_local
        self.lif = recipe.neuron_model == "lif_cond"
        self._check_memory()
        state = initial_state(net, seed)
        if self.lif:
            state["gain"] = np.ones((len(LIF_GAINS), n)) if gain is None else np.array(gain)
        self.state = {k: xp.asarray(np.ascontiguousarray(v)) for k, v in state.items()}
        self.gids = xp.asarray(net.gids.astype(np.int64))
        self.pop = xp.asarray(net.pop.astype(np.int32))
        self.params = xp.asarray(np.ascontiguousarray(recipe.params, dtype=np.float64))
        if self.lif:
            self.zig = [xp.asarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
        else:
            self.poisson_cdf = xp.asarray(np.ascontiguousarray(poisson_table(recipe)))
        self.slot_row_ptr = xp.asarray(net.slot_row_ptr)
        # the synapse tables as the delivery kernel takes them (empty arrays get one dummy element)
        table = net.weight_table if net.weight_table.size else np.zeros(1, np.float32)
        weight = net.weight if net.weight.size else np.zeros(1, np.float32)
        self.synapses = [self.slot_row_ptr, xp.asarray(net.row_ptr), xp.asarray(net.row_delay),
                         xp.asarray(net.post), np.int32(net.post_bits), xp.asarray(weight), xp.asarray(table),
                         xp.asarray(net.slot_receptor)]
        slot_of_lid = net.slot_of(net.gids)
        self.slot_of_lid = xp.asarray(slot_of_lid)
        self.n_sources = int((slot_of_lid >= 0).sum()) if self.local else 0
        self.acc = xp.zeros((self.epoch_steps, 2, n), dtype=xp.uint64)
        self.counts = xp.zeros(4, dtype=xp.int64)
        self.step_of = xp.zeros(2, dtype=xp.int64)  # first step of the epoch of each parity
        self.parity = 0
        self.n_pend = 0  # entries in the pending buffer of the current parity (as of the last look)
        self.refractory_steps = self._refractory_steps()
        self.cap = self.rec_cap = 0
        self.pend = None
        self._graphs: dict[int, object] = {}
        self.host_in = np.zeros(0, np.int64)  # page-locked staging of the spikes received
        self._reserve(1)

    # -- memory ----------------------------------------------------------------------------------------

    def device_bytes(self) -> int:
        """Device memory this rank's part takes: synapse tables, neuron state and the epoch's buffers."""
        return int(self.net.synapse_bytes + self._neuron_bytes() * self.net.n_local + self.net.recipe.params.nbytes)

    def _neuron_bytes(self) -> int:
        """Per local neuron: state, ids, input of an epoch and room in the spike queues for one spike."""
        state = 92 if self.net.recipe.neuron_model == "lif_cond" else 28
        return state + 8 + 4 + 8 + 16 * self.epoch_steps + 2 * 24 + 16

    def _check_memory(self) -> None:
        need, free = self.device_bytes(), self.dev.free_bytes()
        if need > 0.9 * free:  # room for CuPy's pool and the queues' growth
            gib = 2**30
            raise ResourceError(f"rank {self.ctx.rank}: its part needs about {need / gib:.2f} GiB on "
                                f"{self.dev.description}, which has {free / gib:.2f} GiB free; about "
                                f"{-(-need * self.ctx.size // int(0.9 * free))} ranks (one GPU each) would do")

    def _refractory_steps(self) -> int:
        """Steps after a spike in which a neuron cannot fire again (0 if a reset can reach threshold)."""
        p = self.net.recipe.params
        cols = LIF_COLUMNS if self.lif else IAF_COLUMNS
        th, reset = ("v_th_mv", "v_reset_mv") if self.lif else ("theta_mv", "v_reset_mv")
        if np.any(p[:, cols.index(reset)] >= p[:, cols.index(th)]):
            return 0
        return int(p[:, cols.index("ref_steps")].min())

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

    # -- state -----------------------------------------------------------------------------------------

    def set_gains(self, gain: np.ndarray) -> None:
        """Replace the per-neuron lif_cond gains, shape (len(LIF_GAINS), n_local), between run windows."""
        if gain.shape != self.state["gain"].shape:
            raise ValueError(f"gain has shape {gain.shape}, expected {self.state['gain'].shape}")
        self.state["gain"][...] = self.dev.xp.asarray(gain)

    def snapshot(self) -> dict:
        """A host copy of everything the next steps depend on (state, pending spikes, step); pending
        spikes in (step, slot) order, the CPU backend's."""
        snap = {k: self.dev.to_host(v) for k, v in self.state.items()}
        pend = self.dev.to_host(self.pend[self.parity, :, : self.n_pend])
        snap["pend"] = np.ascontiguousarray(pend[:, np.lexsort((pend[2], pend[0], pend[1]))])
        snap["step"] = self.step
        return snap

    def restore(self, snap: dict) -> None:
        """Go back to a `snapshot` (also one of the CPU backend's)."""
        xp = self.dev.xp
        for k in self.state:
            self.state[k][...] = xp.asarray(snap[k])
        self.step, self.parity, self.n_pend = snap["step"], 0, 0
        pend = np.asarray(snap["pend"], dtype=np.int64)
        if pend.shape[1] > self.cap:
            self._grow(pend.shape[1], self.rec_cap)
        self.pend[0, :, : pend.shape[1]] = xp.asarray(pend)
        self.n_pend = pend.shape[1]
        self.counts[...] = xp.asarray(np.array([self.n_pend, 0, 0, 0], np.int64))
        self.step_of[0] = self.step

    def membrane_potential_mv(self) -> np.ndarray:
        """Membrane potentials of the local neurons (mV), shape (n_local,), float64, on the host."""
        v = self.dev.to_host(self.state["v"])
        if not self.lif:
            v += self.net.recipe.params[self.net.pop, IAF_COLUMNS.index("e_l_mv")]
        return v

    # -- the epochs ------------------------------------------------------------------------------------

    def run(self, n_steps: int, sinks=(), on_progress=None) -> None:
        """Collective: advance ``n_steps`` steps (see `EpochLoop.run`). A single rank runs batches of
        epochs on the device and hands the sinks each batch's spikes, in (step, gid) order."""
        if not self.local:
            return super().run(n_steps, sinks, on_progress)
        stop, clock, m = self.step + n_steps, self.clock, self.epoch_steps
        clock.start()
        while self.step < stop:
            full = (stop - self.step) // m
            if full:
                epochs = self._reserve(min(full, MAX_BATCH_EPOCHS))
                self._epochs(epochs)
                done = epochs * m
            else:  # the run ends inside an epoch
                self._reserve(1)
                self._epoch(stop - self.step)
                done = stop - self.step
            steps, gids = self._take_spikes()
            clock.mark("update")
            self._hand_over(steps, gids, done, sinks, on_progress)

    def _epochs(self, epochs: int) -> None:
        """Launch ``epochs`` full epochs: as graphs where whole ones fit, one by one for the rest."""
        if self.graphs:
            while epochs >= GRAPH_EPOCHS:
                if self.parity not in self._graphs:
                    self._graphs[self.parity] = self.dev.capture(
                        lambda: [self._epoch(self.epoch_steps) for _ in range(GRAPH_EPOCHS)])
                self._graphs[self.parity].replay()
                epochs -= GRAPH_EPOCHS
        for _ in range(epochs):
            self._epoch(self.epoch_steps)

    def _epoch(self, m: int) -> None:
        self._deliver(m)
        if not self.graphs:
            self.clock.mark("delivery")
        self._advance(m)
        if not self.graphs:
            self.clock.mark("update")

    def _queue_args(self, local: bool) -> tuple:
        return (np.int32(local), self.counts, np.int64(self.cap), self.pend, self.slot_of_lid, self.slot_row_ptr,
                np.int64(self.rec_cap), self.rec)

    def _deliver(self, m: int) -> None:
        grid = self.dev.grid_threads
        self.dev.launch("deliver", grid, np.int64(grid), np.int32(self.parity), self.step_of, np.int32(m),
                        self.counts, np.int64(self.cap), self.pend, *self.synapses, np.int64(self.net.n_local),
                        self.acc)

    def _advance(self, m: int) -> None:
        st, n = self.state, self.net.n_local
        common = (np.int32(self.parity), self.step_of, np.int32(m), np.uint64(self.seed), np.int64(n), self.gids,
                  self.pop, self.params)
        if self.lif:
            self.dev.launch("advance_lif_cond", max(n, 1), *common, st["v"], st["j"], st["i_bg"], st["ref"],
                            st["gain"], self.acc, *self.zig, *self._queue_args(self.local))
        else:
            self.dev.launch("advance_iaf_psc_exp", max(n, 1), *common, self.poisson_cdf,
                            np.int64(self.poisson_cdf.shape[1]), st["v"], st["i_ex"], st["i_in"], st["ref"],
                            self.acc, *self._queue_args(self.local))
        self.parity ^= 1

    def _take_spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """Wait for the device; the spikes recorded since the last call, (emission step, gid) int64 in
        (step, gid) order, and an empty record."""
        counts = self.dev.to_host(self.counts)
        if counts[OVERFLOW]:
            raise RuntimeError(f"rank {self.ctx.rank}: a device spike queue overflowed (a bug: its size bounds "
                               "what refractory neurons can fire)")
        k = int(counts[REC])
        self.n_pend = int(counts[PEND[self.parity]])
        rec = self.host_rec[:, :k]
        for i in range(2):
            self.dev.to_host(self.rec[i, :k], out=rec[i])
        self.counts[REC] = 0
        order = np.lexsort((rec[1], rec[0]))
        return rec[0, order], self.net.gids[rec[1, order]]

    def _update(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(Exchange mode) advance the neurons ``m`` steps; the epoch's spikes on the host."""
        self._advance(m)
        return self._take_spikes()

    def _enqueue(self, steps: np.ndarray, gids: np.ndarray) -> None:
        """(Exchange mode) queue the spikes received that have targets here."""
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
