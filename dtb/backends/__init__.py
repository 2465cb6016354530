"""Backends: where a rank's neurons and synapses live and which kernels advance them.

A `Backend` (``Context.backend``) prepares, for one rank's `LocalNetwork`, an
`Engine`: the neuron state, the synapse tables and the pending spikes, with the
kernels that act on them. `dtb.simulation.Simulation` runs the one epoch loop over
any engine. Three backends share the data layout and the kernel signatures:

- ``cpu``: the numba kernels (`dtb.kernels.cpu`), state in NumPy arrays.
- ``gpu``: the CUDA kernels through CuPy on the rank's GPU (`dtb.kernels.gpu.CudaDevice`).
- ``gpu_emulated``: the same CUDA kernels built for the host with nvcc (`HostDevice`):
  the GPU backend's whole code path without a GPU, for tests.

CuPy is imported only when the ``gpu`` backend is made.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from dtb.backends.base import Engine

__all__ = ["Backend", "Engine", "make_backend", "BACKENDS"]

#: the names ``simulation.backend`` takes ('auto' picks 'gpu' when there is one)
BACKENDS = ("cpu", "gpu", "auto", "gpu_emulated")


class Backend(Protocol):
    """What ``Context.backend`` is: a factory of engines for one rank, on one device."""

    #: 'cpu', 'gpu' or 'gpu_emulated'
    name: str

    def engine(self, net, seed: int, *, threads: int, gain: np.ndarray | None = None, local: bool = False,
               graphs: bool = True) -> Engine:
        """The engine of one rank's part ``net`` (state initialised from ``seed``).

        ``local``: the rank's spikes are all the spikes (one rank, serial exchange), so the engine may
        deliver them itself and run many epochs at once (``Engine.batched``). ``graphs``: replay
        batches as captured CUDA graphs where the device can.
        """

    def free_bytes(self) -> int | None:
        """Free memory of the device (bytes), or None for the host backend."""


def make_backend(name: str, local_rank: int = 0, announce: bool = True) -> Backend:
    """The backend ``simulation.backend = name`` asks for, on the node's GPU number ``local_rank``.

    'gpu' without a usable GPU is a `ResourceError`; 'auto' takes the GPU when there is one (and
    says which it took on stderr when ``announce``).
    """
    from dtb.kernels.gpu import make_device, resolve_backend

    chosen = resolve_backend(name, announce)
    if chosen == "cpu":
        from dtb.backends.cpu import CpuBackend

        return CpuBackend()
    from dtb.backends.device import DeviceBackend

    return DeviceBackend(make_device(chosen, local_rank))
