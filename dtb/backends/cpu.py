"""The CPU backend: the numba kernels of `dtb.kernels.cpu`, state in NumPy arrays.

Pending spikes (slot, due step, next row) replace a ring buffer of ``max_delay``
input slots per neuron: with fibre-length delays of tens of ms such a ring would
outweigh the synapses.
"""

from __future__ import annotations

import numpy as np

from dtb.backends.base import Engine
from dtb.kernels import cpu


class CpuBackend:
    """The numba kernels on this rank's cores (``Context.threads`` of them)."""

    name = "cpu"

    def engine(self, net, seed: int, *, threads: int, gain: np.ndarray | None = None, local: bool = False,
               graphs: bool = True) -> "CpuEngine":
        eng = CpuEngine(net, seed, threads)
        if gain is not None:
            eng.set_gains(gain)
        return eng

    @staticmethod
    def free_bytes() -> None:
        return None

    @staticmethod
    def compile_notice() -> str | None:
        """What to tell the user before a first run compiles the kernels (None when they are cached)."""
        return ("compiling the CPU kernels for this machine (first run only, about 30 s on 2 cores; numba caches "
                "them for later runs)") if cpu.kernels_to_compile() else None

    def __repr__(self) -> str:
        return "CpuBackend()"


class CpuEngine(Engine):
    """One rank's part on the CPU: an epoch is one call each of `cpu.deliver` and the model's advance kernel.

    Parameters
    ----------
    net : LocalNetwork
    seed : int
    threads : int
        The kernels' parallel blocks are about twice as many (at least cache-sized, `cpu.BLOCK_NEURONS`).
    """

    def __init__(self, net, seed: int, threads: int):
        super().__init__(net, seed)
        n = net.n_local
        self.inbuf = np.zeros((self.epoch_steps, 2, n), dtype=np.float32)
        self.lo_hi = cpu.blocks(n, max(1, min(n, max(2 * threads, -(-n // cpu.BLOCK_NEURONS)))))
        self.mask = np.zeros(n, dtype=np.uint64)
        self.scratch = np.empty((4, n), dtype=np.uint32) if self.lif else np.empty(n)
        cap = max(1, n * -(-self.epoch_steps // (self.refractory_steps + 1)))
        self.out_lid = np.empty(cap, dtype=np.int64)
        self.out_step = np.empty(cap, dtype=np.int64)
        self.n_out = 0
        self.n_pend = 0
        self.pend = np.empty((3, 1024), dtype=np.int64)  # slot, step, next row

    def deliver(self, step: int, m: int) -> None:
        net = self.net
        self.inbuf[:m] = 0.0
        self.n_pend = cpu.deliver(step, m, self.n_pend, self.pend[0], self.pend[1], self.pend[2],
                                  net.slot_row_ptr, net.row_ptr, net.row_delay, net.post, net.post_bits,
                                  net.weight, net.weight_table, net.slot_receptor, self.inbuf)

    def advance(self, step: int, m: int) -> None:
        net, st = self.net, self.state
        common = (step, m, self.seed, net.gids, net.pop, self.table, self.poisson_cdf)
        if self.lif:
            self.n_out = cpu.advance_lif_cond(*common, st["v"], st["j"], st["i_bg"], st["ref"], st["gain"],
                                              st["i_stim"], self.inbuf, self.lo_hi, self.mask, self.scratch,
                                              self.out_lid, self.out_step)
        else:
            self.n_out = cpu.advance_iaf_psc_exp(*common, st["v"], st["i_ex"], st["i_in"], st["ref"], st["i_stim"],
                                                 self.inbuf, self.lo_hi, self.mask, self.scratch, self.out_lid,
                                                 self.out_step)

    def take_spikes(self) -> tuple[np.ndarray, np.ndarray]:
        k, self.n_out = self.n_out, 0
        return self.out_step[:k].copy(), self.net.gids[self.out_lid[:k]]

    def enqueue(self, steps: np.ndarray, gids: np.ndarray) -> None:
        need = self.n_pend + len(gids)
        if need > self.pend.shape[1]:
            grown = np.empty((3, max(need, 2 * self.pend.shape[1])), dtype=np.int64)
            grown[:, : self.n_pend] = self.pend[:, : self.n_pend]
            self.pend = grown
        net = self.net
        self.n_pend = cpu.enqueue(steps, gids, net.slot_gids, net.slot_row_ptr, self.n_pend, self.pend[0],
                                  self.pend[1], self.pend[2])

    def _pending(self) -> np.ndarray:
        return self.pend[:, : self.n_pend].copy()

    def _set_pending(self, pend: np.ndarray, step: int) -> None:
        self.n_pend = pend.shape[1]
        if self.n_pend > self.pend.shape[1]:
            self.pend = np.empty((3, self.n_pend), dtype=np.int64)
        self.pend[:, : self.n_pend] = pend
