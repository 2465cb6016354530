"""Context: where a run executes (communicator and backend).

Only this module and `dtb.exchange` may talk to MPI. This serial context is the
one-process stand-in; the MPI context follows with the distributed engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """A serial execution context.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks (0 and 1 here).
    backend : str
        'cpu'.
    threads : int
        Threads the CPU kernels may use.
    """

    rank: int = 0
    size: int = 1
    backend: str = "cpu"
    threads: int = 1

    @classmethod
    def serial(cls, backend: str = "cpu", threads: int = 0) -> "Context":
        """A one-process context; ``threads`` 0 means all cores of this process."""
        import numba

        n = threads or len(os.sched_getaffinity(0))
        n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(n)
        return cls(rank=0, size=1, backend=backend, threads=n)

    @property
    def is_root(self) -> bool:
        return self.rank == 0
