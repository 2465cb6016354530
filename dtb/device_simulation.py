"""DeviceSimulation: the epoch loop of one rank with the CUDA kernels (`dtb.kernels.gpu`).

Same epochs, pending-spike delivery and interface as `dtb.simulation.Simulation`
(so the drivers, checkpoints and the assimilation use either), with the neuron
state, the synapse tables, the pending spikes and the epoch's input on the
device. Per epoch: deliver the pending spikes' rows due in the epoch (fixed point,
one warp per spike), convert the input to float32, advance every neuron, flag the
fired (step, neuron) pairs and list them in (step, lid) order. Only the epoch's
spikes cross to the host, for the exchange and the recording sinks; the spikes
received come back as new pending entries.

Delivery sums in fixed point (`deliver.cuh`), so the spikes are the same for any
order of adds and any number of ranks; they agree with the CPU backend's
statistically, not bitwise.
"""

from __future__ import annotations

import numpy as np

from dtb.context import Context
from dtb.errors import ResourceError
from dtb.kernels import cpu, rng
from dtb.model.neurons import IAF_COLUMNS, LIF_GAINS
from dtb.network import LocalNetwork
from dtb.simulation import EpochLoop, PhaseClock, initial_state, poisson_table


class DeviceSimulation(EpochLoop):
    """Advance one rank's part of a network on a device.

    Parameters
    ----------
    ctx : Context
    net : LocalNetwork
        Built on the host; its arrays are copied to the device.
    exchange : object with ``exchange(step, steps, gids)``
    seed : int
    gain : ndarray, shape (len(LIF_GAINS), n_local), float64, optional
    device : CudaDevice or HostDevice
        Where the kernels run (`dtb.kernels.gpu`).

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
                 device=None):
        recipe = net.recipe
        self.ctx, self.net, self.exchange, self.seed, self.dev = ctx, net, exchange, seed, device
        xp = device.xp
        self.dt_ms = recipe.dt_ms
        self.step = 0
        self.epoch_steps = min(recipe.min_delay_steps, cpu.MAX_EPOCH_STEPS)
        self.clock = PhaseClock(device.synchronize)
        n = net.n_local
        self._check_memory()
        state = initial_state(net, seed)
        if recipe.neuron_model == "lif_cond":
            state["gain"] = np.ones((len(LIF_GAINS), n)) if gain is None else np.array(gain)
        self.state = {k: xp.asarray(np.ascontiguousarray(v)) for k, v in state.items()}
        self.lif = recipe.neuron_model == "lif_cond"
        self.gids = xp.asarray(net.gids.astype(np.int64))
        self.pop = xp.asarray(net.pop.astype(np.int32))
        self.params = xp.asarray(np.ascontiguousarray(recipe.params, dtype=np.float64))
        if self.lif:
            self.zig = [xp.asarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
        else:
            self.poisson_cdf = xp.asarray(np.ascontiguousarray(poisson_table(recipe)))
        self.slot_row_ptr = xp.asarray(net.slot_row_ptr)
        table = net.weight_table if net.weight_table.size else np.zeros(1, np.float32)
        self.synapses = [xp.asarray(a) for a in (net.row_ptr, net.row_delay, net.post, net.weight, table,
                                                  net.slot_receptor)]
        self.deliver_kernel = "deliver_u16" if net.weight.dtype == np.uint16 else "deliver_f32"
        self.acc = xp.zeros((self.epoch_steps, 2, n), dtype=xp.uint64)
        self.inbuf = xp.zeros((self.epoch_steps, 2, n), dtype=xp.float32)
        self.mask = xp.zeros(n, dtype=xp.uint64)
        self.flags = xp.zeros((self.epoch_steps, n), dtype=xp.uint8)
        self.pend = xp.zeros((3, 0), dtype=xp.int64)  # slot, emission step, next row

    def device_bytes(self) -> int:
        """Device memory this rank's part takes: synapse tables, neuron state and the epoch's buffers."""
        per_neuron = (92 if self.net.recipe.neuron_model == "lif_cond" else 28) + 8 + 4 + 8 + 25 * self.epoch_steps
        return int(self.net.synapse_bytes + per_neuron * self.net.n_local + self.net.recipe.params.nbytes)

    def _check_memory(self) -> None:
        need, free = self.device_bytes(), self.dev.free_bytes()
        if need > 0.9 * free:  # room for the pending queue and CuPy's pool
            gib = 2**30
            raise ResourceError(f"rank {self.ctx.rank}: its part needs about {need / gib:.2f} GiB on "
                                f"{self.dev.description}, which has {free / gib:.2f} GiB free; about "
                                f"{-(-need * self.ctx.size // int(0.9 * free))} ranks (one GPU each) would do")

    def set_gains(self, gain: np.ndarray) -> None:
        """Replace the per-neuron lif_cond gains, shape (len(LIF_GAINS), n_local), between run windows."""
        if gain.shape != self.state["gain"].shape:
            raise ValueError(f"gain has shape {gain.shape}, expected {self.state['gain'].shape}")
        self.state["gain"][...] = self.dev.xp.asarray(gain)

    def snapshot(self) -> dict:
        """A host copy of everything the next steps depend on (state, pending spikes, step)."""
        snap = {k: np.array(self.dev.to_host(v)) for k, v in self.state.items()}
        snap["pend"] = np.array(self.dev.to_host(self.pend))
        snap["step"] = self.step
        return snap

    def restore(self, snap: dict) -> None:
        """Go back to a `snapshot` (also one of the CPU backend's)."""
        xp = self.dev.xp
        for k in self.state:
            self.state[k][...] = xp.asarray(snap[k])
        self.pend = xp.asarray(np.ascontiguousarray(snap["pend"], dtype=np.int64))
        self.step = snap["step"]

    def membrane_potential_mv(self) -> np.ndarray:
        """Membrane potentials of the local neurons (mV), shape (n_local,), float64, on the host."""
        v = np.array(self.dev.to_host(self.state["v"]))
        if not self.lif:
            v += self.net.recipe.params[self.net.pop, IAF_COLUMNS.index("e_l_mv")]
        return v

    def _deliver(self, m: int) -> None:
        xp, n_pend = self.dev.xp, self.pend.shape[1]
        self.acc[:m] = 0
        if n_pend:
            next_row = xp.empty(n_pend, dtype=xp.int64)
            pend = [xp.ascontiguousarray(self.pend[i]) for i in range(3)]
            self.dev.launch(self.deliver_kernel, 32 * n_pend, np.int64(self.step), np.int32(m), np.int64(n_pend),
                            *pend, self.slot_row_ptr, *self.synapses, np.int64(self.net.n_local), self.acc, next_row)
            left = next_row < self.slot_row_ptr[pend[0] + 1]
            self.pend = xp.stack([pend[0][left], pend[1][left], next_row[left]])
        self.dev.launch("fixed_to_float", m * 2 * self.net.n_local, np.int64(m * 2 * self.net.n_local), self.acc,
                        self.inbuf)

    def _advance(self, m: int) -> None:
        st, n = self.state, self.net.n_local
        common = (np.int64(self.step), np.int32(m), np.uint64(self.seed), np.int64(n), self.gids, self.pop,
                  self.params)
        if self.lif:
            self.dev.launch("advance_lif_cond", n, *common, st["v"], st["j"], st["i_bg"], st["ref"], st["gain"],
                            self.inbuf, *self.zig, self.mask)
        else:
            self.dev.launch("advance_iaf_psc_exp", n, *common, self.poisson_cdf,
                            np.int64(self.poisson_cdf.shape[1]), st["v"], st["i_ex"], st["i_in"], st["ref"],
                            self.inbuf, self.mask)

    def _update(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Advance the neurons ``m`` steps; the epoch's spikes on the host: (emission step, gid), int64, in
        (step, gid) order."""
        self._advance(m)
        n = self.net.n_local
        self.dev.launch("spike_flags", n, np.int64(n), np.int32(m), self.mask, self.flags)
        s, lid = self.dev.xp.nonzero(self.flags[:m])
        steps = np.asarray(self.dev.to_host(s), dtype=np.int64) + self.step
        return steps, self.net.gids[np.asarray(self.dev.to_host(lid), dtype=np.int64)]

    def _enqueue(self, steps: np.ndarray, gids: np.ndarray) -> None:
        net = self.net
        if len(gids) == 0 or len(net.slot_gids) == 0:
            return
        s = np.searchsorted(net.slot_gids, gids)
        here = s < len(net.slot_gids)
        here[here] = net.slot_gids[s[here]] == gids[here]
        new = np.stack([s[here], steps[here], net.slot_row_ptr[s[here]]]).astype(np.int64)
        self.pend = self.dev.xp.concatenate([self.pend, self.dev.xp.asarray(new)], axis=1)
