"""Simulation: the epoch loop of one rank (update, exchange, deliver, record).

One epoch is ``min(min_delay, 64)`` steps. At its start, every pending spike's
deliveries that fall inside it are written into a small input buffer
``[epoch, receptor, neuron]``; the neurons then advance through the epoch; the
epoch's spikes go through the exchange once and are queued for delivery. Because
every delay is at least one epoch, nothing emitted in an epoch is needed in it.

Pending spikes replace a ring buffer of ``max_delay`` input slots per neuron: with
fibre-length delays of tens of ms such a ring would outweigh the synapses.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol, Sequence

import numpy as np

from dtb.context import Context
from dtb.kernels import cpu, rng
from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS, LIF_GAINS
from dtb.network import LocalNetwork


def initial_state(net: LocalNetwork, seed: int) -> dict:
    """Initial state of the local neurons, drawn from (seed, INIT, gid): the same on any partition.

    Returns
    -------
    dict of ndarray
        iaf_psc_exp: ``v`` (relative to E_L, mV), ``i_ex``, ``i_in`` (pA), ``ref`` (int32 steps);
        lif_cond: ``v`` (mV), ``j`` (4, n) traces, ``i_bg`` (mV/ms), ``ref``.
    """
    recipe = net.recipe
    z = rng.normals(seed, rng.INIT, net.gids, 0)
    v = recipe.v0_mean_mv[net.pop] + recipe.v0_sd_mv[net.pop] * z
    n = net.n_local
    ref = np.zeros(n, dtype=np.int32)
    if recipe.neuron_model == "iaf_psc_exp":
        e_l = recipe.params[net.pop, IAF_COLUMNS.index("e_l_mv")]
        return dict(v=v - e_l, i_ex=np.zeros(n), i_in=np.zeros(n), ref=ref)
    cols = {c: recipe.params[net.pop, i] for i, c in enumerate(LIF_COLUMNS)}
    v = np.minimum(v, cols["v_th_mv"] - 0.1)
    # OU current starts in its stationary distribution
    sigma = cols["ou_noise"] / np.sqrt(np.maximum(1.0 - cols["ou_decay"] ** 2, 1e-300))
    i_bg = cols["ou_mu"] + sigma * rng.normals(seed, rng.INIT, net.gids, 1)
    return dict(v=v, j=np.zeros((4, n)), i_bg=i_bg, ref=ref)


def poisson_table(recipe) -> np.ndarray:
    """Cumulative Poisson tables of the populations' external drive (iaf_psc_exp), shape (n_pop, K), float64."""
    lam = recipe.params[:, IAF_COLUMNS.index("poisson_lam")]
    return cpu.poisson_tables(lam, int(16 + lam.max() + 10 * np.sqrt(lam.max())))


#: the parts of an epoch whose wall time a simulation adds up in ``phase_s`` (seconds)
PHASES = ("delivery", "update", "exchange", "recording")


class PhaseClock:
    """Adds the wall time since the last mark to a phase; ``sync`` (a device's) runs first so that
    asynchronous work is charged to the phase that launched it."""

    def __init__(self, sync: Callable[[], None] | None = None):
        self.phase_s = dict.fromkeys(PHASES, 0.0)
        self.sync = sync
        self.t = time.perf_counter()

    def start(self) -> None:
        self.t = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.sync is not None:
            self.sync()
        now = time.perf_counter()
        self.phase_s[phase] += now - self.t
        self.t = now


class SpikeSink(Protocol):
    def spikes(self, steps: np.ndarray, gids: np.ndarray) -> None:
        """Receive one epoch's local spikes (emission step, gid), in (step, gid) order."""


class EpochLoop:
    """The epoch loop shared by `Simulation` and `dtb.device_simulation.DeviceSimulation`.

    Subclasses provide ``_deliver(m)`` (the pending spikes' input for the epoch),
    ``_update(m)`` (advance the neurons; return the epoch's spikes) and
    ``_enqueue(steps, gids)`` (queue the spikes received), and the attributes
    ``step``, ``epoch_steps``, ``exchange`` and ``clock``.
    """

    def run(self, n_steps: int, sinks: Sequence[SpikeSink] = (),
            on_progress: Callable[[int], None] | None = None) -> None:
        """Collective: advance ``n_steps`` steps, epoch by epoch.

        Parameters
        ----------
        n_steps : int
        sinks : sequence of SpikeSink
            Each receives each epoch's local spikes.
        on_progress : callable, optional
            Called with the number of steps done after each epoch.
        """
        stop, clock = self.step + n_steps, self.clock
        clock.start()
        while self.step < stop:
            m = min(self.epoch_steps, stop - self.step)
            self._deliver(m)
            clock.mark("delivery")
            steps, gids = self._update(m)
            clock.mark("update")
            r_steps, r_gids = self.exchange.exchange(self.step, steps, gids)
            self._enqueue(r_steps, r_gids)
            clock.mark("exchange")
            self._hand_over(steps, gids, m, sinks, on_progress)

    def _hand_over(self, steps: np.ndarray, gids: np.ndarray, done: int, sinks: Sequence[SpikeSink],
                   on_progress: Callable[[int], None] | None) -> None:
        """Give the sinks the spikes of the ``done`` steps just run, then count the steps."""
        for sink in sinks:
            sink.spikes(steps, gids)
        self.clock.mark("recording")
        self.step += done
        if on_progress is not None:
            on_progress(done)


class Simulation(EpochLoop):
    """Advance one rank's part of a network.

    Parameters
    ----------
    ctx : Context
    net : LocalNetwork
    exchange : object with ``exchange(steps, gids)``
        A spike exchange strategy (`dtb.exchange`).
    seed : int
        Seed of the initial state and per-step noise.
    gain : ndarray, shape (len(LIF_GAINS), n_local), float64, optional
        Per-neuron gains of lif_cond parameters (`dtb.model.hyper`); default all 1.

    Attributes
    ----------
    step : int
        Steps done so far.
    epoch_steps : int
    clock : PhaseClock
        Wall time spent in each phase of the epoch loop (``clock.phase_s``).
    """

    def __init__(self, ctx: Context, net: LocalNetwork, exchange, seed: int, gain: np.ndarray | None = None):
        recipe = net.recipe
        self.ctx = ctx
        self.net = net
        self.exchange = exchange
        self.seed = seed
        self.dt_ms = recipe.dt_ms
        self.step = 0
        self.epoch_steps = min(recipe.min_delay_steps, cpu.MAX_EPOCH_STEPS)
        self.clock = PhaseClock()
        n = net.n_local
        self.state = initial_state(net, seed)
        if recipe.neuron_model == "lif_cond":
            self.state["gain"] = np.ones((len(LIF_GAINS), n))
            if gain is not None:
                self.set_gains(gain)
        self.inbuf = np.zeros((self.epoch_steps, 2, n), dtype=np.float32)
        self.lo_hi = cpu.blocks(n, max(1, min(n, max(2 * ctx.threads, -(-n // cpu.BLOCK_NEURONS)))))
        self.mask = np.zeros(n, dtype=np.uint64)
        if recipe.neuron_model == "iaf_psc_exp":
            self.poisson_cdf = poisson_table(recipe)
            self.scratch = np.empty(n)
        else:
            self.scratch = np.empty((2, n), dtype=np.uint32)
        ref_steps = int(recipe.params[:, self._ref_column()].min())
        cap = max(1, n * -(-self.epoch_steps // (ref_steps + 1)))
        self.out_lid = np.empty(cap, dtype=np.int64)
        self.out_step = np.empty(cap, dtype=np.int64)
        self.n_pend = 0
        self.pend = np.empty((3, 1024), dtype=np.int64)  # slot, step, next row

    def _ref_column(self) -> int:
        cols = IAF_COLUMNS if self.net.recipe.neuron_model == "iaf_psc_exp" else LIF_COLUMNS
        return cols.index("ref_steps")

    def set_gains(self, gain: np.ndarray) -> None:
        """Replace the per-neuron lif_cond gains, shape (len(LIF_GAINS), n_local), between run windows."""
        if gain.shape != self.state["gain"].shape:
            raise ValueError(f"gain has shape {gain.shape}, expected {self.state['gain'].shape}")
        self.state["gain"][:] = gain

    def snapshot(self) -> dict:
        """A copy of everything the next steps depend on (state, pending spikes, step)."""
        snap = {k: v.copy() for k, v in self.state.items()}
        snap["pend"] = self.pend[:, : self.n_pend].copy()
        snap["step"] = self.step
        return snap

    def restore(self, snap: dict) -> None:
        """Go back to a `snapshot`: the steps that follow repeat exactly (noise is keyed by step)."""
        for k in self.state:
            self.state[k][...] = snap[k]
        self.n_pend = snap["pend"].shape[1]
        if self.n_pend > self.pend.shape[1]:
            self.pend = np.empty((3, self.n_pend), dtype=np.int64)
        self.pend[:, : self.n_pend] = snap["pend"]
        self.step = snap["step"]

    def membrane_potential_mv(self) -> np.ndarray:
        """Membrane potentials of the local neurons (mV), shape (n_local,), float64."""
        v = self.state["v"]
        if self.net.recipe.neuron_model == "iaf_psc_exp":
            v = v + self.net.recipe.params[self.net.pop, IAF_COLUMNS.index("e_l_mv")]
        return v.copy()

    def _advance(self, m: int) -> int:
        net, st = self.net, self.state
        common = (self.step, m, self.seed, net.gids, net.pop, net.recipe.params)
        if net.recipe.neuron_model == "iaf_psc_exp":
            return cpu.advance_iaf_psc_exp(*common, self.poisson_cdf, st["v"], st["i_ex"], st["i_in"], st["ref"],
                                           self.inbuf, self.lo_hi, self.mask, self.scratch, self.out_lid,
                                           self.out_step)
        return cpu.advance_lif_cond(*common, st["v"], st["j"], st["i_bg"], st["ref"], st["gain"], self.inbuf,
                                    self.lo_hi, self.mask, self.scratch, self.out_lid, self.out_step)

    def _enqueue(self, steps: np.ndarray, gids: np.ndarray) -> None:
        need = self.n_pend + len(gids)
        if need > self.pend.shape[1]:
            grown = np.empty((3, max(need, 2 * self.pend.shape[1])), dtype=np.int64)
            grown[:, : self.n_pend] = self.pend[:, : self.n_pend]
            self.pend = grown
        net = self.net
        self.n_pend = cpu.enqueue(steps, gids, net.slot_gids, net.slot_row_ptr, self.n_pend, self.pend[0],
                                  self.pend[1], self.pend[2])

    def _deliver(self, m: int) -> None:
        """The pending spikes' input for the epoch's ``m`` steps, into ``inbuf``."""
        net = self.net
        self.inbuf[:m] = 0.0
        self.n_pend = cpu.deliver(self.step, m, self.n_pend, self.pend[0], self.pend[1], self.pend[2],
                                  net.slot_row_ptr, net.row_ptr, net.row_delay, net.post, net.post_bits,
                                  net.weight, net.weight_table, net.slot_receptor, self.inbuf)

    def _update(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Advance the neurons ``m`` steps; the epoch's spikes (step, gid) in (step, gid) order."""
        n_spk = self._advance(m)
        return self.out_step[:n_spk].copy(), self.net.gids[self.out_lid[:n_spk]]
