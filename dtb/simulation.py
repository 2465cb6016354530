"""Simulation: the one epoch loop of a rank (deliver, advance, exchange, record), over any backend.

One epoch is ``min(min_delay, 64)`` steps. At its start, every pending spike's
deliveries that fall inside it are written into a small input buffer; the neurons
then advance through the epoch; the epoch's spikes go through the exchange once and
are queued for delivery. Because every delay is at least one epoch, nothing emitted
in an epoch is needed in it. Where the rank's spikes are all the spikes and the
engine can (a GPU), it runs whole batches of epochs without the host instead.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol, Sequence

import numpy as np

from dtb.context import Context
from dtb.network import LocalNetwork

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
        """Receive one epoch's (or batch's) local spikes (emission step, gid), in (step, gid) order."""


class SpikeExchange(Protocol):
    """A spike exchange strategy (`dtb.exchange`)."""

    #: True when a rank's own spikes are all the spikes it needs (one process, nothing measured)
    local: bool

    def exchange(self, epoch_start: int, steps: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Collective: the epoch's spikes this rank needs from every rank, in (step, gid) order."""


class Simulation:
    """Advance one rank's part of a network on ``ctx.backend``.

    Parameters
    ----------
    ctx : Context
    net : LocalNetwork
    exchange : SpikeExchange
    seed : int
        Seed of the initial state and per-step noise.
    gain : ndarray, shape (len(LIF_GAINS), n_local), float64, optional
        Per-neuron gains of lif_cond parameters (`dtb.model.hyper`); default all 1.
    graphs : bool
        GPU backend on one rank: replay batches of epochs as captured CUDA graphs.

    Attributes
    ----------
    step : int
        Steps done so far.
    engine : Engine
        The backend's state and kernels (`dtb.backends`).
    epoch_steps : int
    clock : PhaseClock
        Wall time spent in each phase of the epoch loop (``clock.phase_s``).
    """

    def __init__(self, ctx: Context, net: LocalNetwork, exchange: SpikeExchange, seed: int,
                 gain: np.ndarray | None = None, graphs: bool = True):
        self.ctx, self.net, self.exchange, self.seed = ctx, net, exchange, seed
        self.engine = ctx.backend.engine(net, seed, threads=ctx.threads, gain=gain,
                                         local=ctx.size == 1 and exchange.local, graphs=graphs)
        self.dt_ms = net.recipe.dt_ms
        self.epoch_steps = self.engine.epoch_steps
        self.step = 0
        self.clock = PhaseClock(self.engine.synchronize)

    def run(self, n_steps: int, sinks: Sequence[SpikeSink] = (),
            on_progress: Callable[[int], None] | None = None) -> None:
        """Collective: advance ``n_steps`` steps, epoch by epoch.

        Parameters
        ----------
        n_steps : int
        sinks : sequence of SpikeSink
            Each receives the local spikes, in (step, gid) order, after each epoch (or batch of epochs).
        on_progress : callable, optional
            Called with the number of steps done after each epoch (or batch).
        """
        stop, clock, eng = self.step + n_steps, self.clock, self.engine
        clock.start()
        while self.step < stop:
            if eng.batched:
                done = eng.run_batch(self.step, stop - self.step, clock)
                steps, gids = eng.take_spikes()
                clock.mark("update")
            else:
                done = min(self.epoch_steps, stop - self.step)
                eng.deliver(self.step, done)
                clock.mark("delivery")
                eng.advance(self.step, done)
                steps, gids = eng.take_spikes()
                clock.mark("update")
                eng.enqueue(*self.exchange.exchange(self.step, steps, gids))
                clock.mark("exchange")
            for sink in sinks:
                sink.spikes(steps, gids)
            clock.mark("recording")
            self.step += done
            if on_progress is not None:
                on_progress(done)

    def set_gains(self, gain: np.ndarray) -> None:
        """Replace the per-neuron lif_cond gains, shape (len(LIF_GAINS), n_local), between run windows."""
        self.engine.set_gains(gain)

    def set_stimulus(self, i_stim: np.ndarray) -> None:
        """Replace the per-neuron stimulus current, shape (n_local,), between run windows."""
        self.engine.set_stimulus(i_stim)

    def snapshot(self) -> dict:
        """A host copy of everything the next steps depend on (state, pending spikes, step)."""
        return {**self.engine.snapshot(), "step": self.step}

    def restore(self, snap: dict) -> None:
        """Go back to a `snapshot` (of any backend): the steps that follow repeat exactly."""
        self.engine.restore(snap, snap["step"])
        self.step = snap["step"]

    def membrane_potential_mv(self) -> np.ndarray:
        """Membrane potentials of the local neurons (mV), shape (n_local,), float64."""
        return self.engine.membrane_potential_mv()
