"""Context: where a run executes (communicator, backend, threads).

Only this module and `dtb.exchange` talk to MPI. A serial context (``comm`` None)
stands in on one process; its collectives are identities, so the rest of dtb is
written once for any number of ranks. mpi4py is imported only when a run was
launched by an MPI launcher (mpiexec, mpirun, srun), so ``dtb run`` on a laptop
never initialises MPI.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dtb.errors import DTBError, LauncherError

#: seconds an aborting rank waits after flushing its output
_ABORT_DRAIN_S = 0.5

#: the PMI rank variables, which a shell can keep after its launcher is gone
_PMI_RANK_VARS = ("PMI_RANK", "PMI_SIZE")
#: what only a live launcher gives: its PMI socket or port, PMIx, Open MPI's or Hydra's own variables
_LIVE_LAUNCHER_VARS = ("PMI_FD", "PMI_PORT", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "HYDI_CONTROL_FD")
#: environment variables that MPI launchers set in every rank
_LAUNCHER_VARS = (*_PMI_RANK_VARS, *_LIVE_LAUNCHER_VARS, "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def mpi_library() -> str:
    """The installed MPI library's version string, read without initialising MPI."""
    import mpi4py

    mpi4py.rc.initialize = False
    mpi4py.rc.finalize = False
    from mpi4py import MPI

    return MPI.Get_library_version()


def launcher_rank() -> int:
    """This process's rank as the launcher announced it (0 when not launched by MPI)."""
    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(var, "").isdigit():  # a launcher writes digits; anything else is no launcher's
            return int(os.environ[var])
    return 0


def launcher_size() -> int:
    """The number of ranks the launcher started (1 when not launched by MPI)."""
    if not launched_by_mpi():
        return 1
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


#: launcher variables that hold numbers; an MPI library reads them when it starts, and a value that is not a
#: launcher's ends it with pages of internal errors
_LAUNCHER_NUMBERS = ("PMI_RANK", "PMI_SIZE", "PMI_FD", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")


def check_launcher() -> None:
    """A `LauncherError` unless the launcher variables in the environment could be a launcher's: numbers, a rank
    below the size, a ``PMI_FD`` open in this process. Called before MPI starts, which would read them."""
    start = "or start dtb with mpiexec or srun"
    for var in _LAUNCHER_NUMBERS:
        value = os.environ.get(var)
        if value is not None and not (value.isascii() and value.isdigit()):
            raise LauncherError(f"{var} = {value!r} in the environment is not a launcher's (a number): unset it, "
                                f"{start}")
    for rank_var, size_var in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        size, rank = int(os.environ.get(size_var, 1)), int(os.environ.get(rank_var, 0))
        if size < 1 or rank >= size:
            raise LauncherError(f"{rank_var} = {rank}, {size_var} = {size} in the environment: no launcher starts "
                                f"rank {rank} of {size}; a stale variable? unset them, {start}")
    if "PMI_FD" in os.environ:
        try:
            os.fstat(int(os.environ["PMI_FD"]))
        except OSError:
            raise LauncherError(f"PMI_FD = {os.environ['PMI_FD']} in the environment is not open in this process: "
                                f"a stale launcher variable? unset it, {start}") from None


def stale_launcher() -> bool:
    """Whether PMI rank variables are set with nothing a launcher would also give (its socket, PMIx, Open MPI)."""
    return any(v in os.environ for v in _PMI_RANK_VARS) and not any(v in os.environ for v in _LIVE_LAUNCHER_VARS)


def available_bytes() -> int:
    """Memory this process may still use: MemAvailable, or less under a cgroup limit."""
    avail = math.inf
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return int(avail)


def ranks_per_node(n_ranks: int) -> int:
    """Ranks sharing this node's memory, as the launcher announces it (all of them if it does not)."""
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return max(1, min(int(value), n_ranks))
    return n_ranks


def launcher_local_rank() -> int:
    """This process's index among the ranks on its node, as the launcher announces it (0 if it does not)."""
    for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def mpi_world_size() -> int:
    """The ranks of MPI_COMM_WORLD, or 0 while MPI is not running in this process."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return 0
    return mpi.COMM_WORLD.Get_size()


def mpi_running() -> bool:
    """Whether MPI was initialised in this process (and not finalised) with more than one rank."""
    return mpi_world_size() > 1


def cuda_aware_mpi() -> bool:
    """Whether the MPI library this process has loaded says it takes CUDA device buffers.

    Asks ``MPIX_Query_cuda_support`` (MPICH and Open MPI export it; mpi4py does not wrap it) of the
    loaded libmpi; False when MPI is not loaded or cannot say. Never assumed.
    """
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            libs = sorted({line.split()[-1] for line in maps if "/libmpi" in line})
    except OSError:
        return False
    for path in libs:
        try:
            query = ctypes.CDLL(path).MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        query.restype = ctypes.c_int
        return bool(query())
    return False


def abort_all(code: int) -> None:
    """End every rank of the MPI job with ``code``, so that no rank waits forever in a collective."""
    if mpi_running():
        sys.stdout.flush()
        sys.stderr.flush()
        # the launcher kills every rank on the abort, and MPICH's Hydra can drop output still in transit
        # (a rank's last line, the one that says why); a moment lets it forward that first
        time.sleep(_ABORT_DRAIN_S)
        sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)


@dataclass(frozen=True)
class Context:
    """An execution context.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks.
    backend : Backend
        Where this rank's part runs and which kernels advance it (`dtb.backends`); ``backend.name`` is
        'cpu', 'gpu' or 'gpu_emulated'.
    threads : int
        Threads the CPU kernels of this rank may use.
    local_rank : int
        This rank's index among the ranks on its node (picks its GPU).
    comm : mpi4py.MPI.Comm or None
        The communicator; None for a serial run.
    """

    rank: int = 0
    size: int = 1
    backend: object = field(default=None, compare=False)
    threads: int = 1
    local_rank: int = 0
    comm: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.backend is None or isinstance(self.backend, str):
            object.__setattr__(self, "backend", _backend(self.backend or "cpu", self.local_rank, self.rank == 0))

    @classmethod
    def serial(cls, backend="cpu", threads: int = 0) -> "Context":
        """A one-process context; ``backend`` a `dtb.backends.Backend` or its name; ``threads`` 0 means all
        cores of this process."""
        return cls(rank=0, size=1, backend=backend, threads=_set_threads(threads or _cores()))

    @classmethod
    def world(cls, backend="cpu", threads: int = 0) -> "Context":
        """Collective: a context over MPI_COMM_WORLD.

        ``backend``: a name (each rank makes its own, on its node's GPU number ``local_rank``) or a
        `dtb.backends.Backend`. ``threads`` 0 shares this node's cores evenly among the ranks on it.
        """
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_size() == 1 and launcher_size() > 1:
            # every process would run the whole job alone, writing the same files
            if stale_launcher():
                raise LauncherError(f"PMI_SIZE = {launcher_size()} in the environment, but no launcher started this "
                                    "process: a stale variable? unset PMI_RANK and PMI_SIZE, or start dtb with mpiexec "
                                    "or srun")
            raise LauncherError(f"the launcher started {launcher_size()} ranks, but MPI sees only this one: the "
                                "launcher belongs to another MPI library than the one mpi4py loaded (pip's mpich: use "
                                "its mpiexec, or point MPI4PY_LIBMPI at the launcher's libmpi)")
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = local.Get_rank(), local.Get_size()
        local.Free()
        threads = threads or max(1, _cores() // local_size)
        return cls(rank=comm.Get_rank(), size=comm.Get_size(), backend=backend, threads=_set_threads(threads),
                   local_rank=local_rank, comm=comm)

    @classmethod
    def from_environment(cls, backend="cpu", threads: int = 0) -> "Context":
        """Collective: `world` under an MPI launcher, else `serial`."""
        check_launcher()
        return cls.world(backend, threads) if launched_by_mpi() else cls.serial(backend, threads)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Collective: wait for every rank."""
        if self.comm is not None:
            self.comm.Barrier()

    def raise_if_any(self, err: BaseException | None, kind: type[DTBError] = DTBError) -> None:
        """Collective: end a step that some ranks may have failed alone (rank 0's file writes) on every rank.

        Each rank passes the exception it caught there, or None. The ranks that failed raise theirs; if
        any did, the others raise a ``kind`` naming the first of them, instead of waiting for it in
        their next collective.
        """
        if self.comm is not None:
            notes = self.comm.allgather(None if err is None else (str(err).splitlines() or [type(err).__name__])[0])
            failed = [r for r, note in enumerate(notes) if note is not None]
            if err is None and failed:
                raise kind(f"rank {failed[0]} failed: {notes[failed[0]]}")
        if err is not None:
            raise err

    def everywhere(self, fn, catch: type[BaseException], kind: type[DTBError] | None = None):
        """Collective: ``fn()`` on every rank, returning its result; if it raised ``catch`` on any rank, every
        rank raises (`raise_if_any`; the others a ``kind``, by default ``catch``): a full disk on one rank stops
        all of them here."""
        failed = result = None
        try:
            result = fn()
        except catch as err:
            failed = err
        self.raise_if_any(failed, kind or catch)
        return result

    def on_root(self, fn) -> None:
        """Collective: ``fn()`` on rank 0 alone (the run file's writes), and every rank learns whether it failed:
        rank 0 raises its exception, the others a `DTBError` naming it (`raise_if_any`)."""
        self.everywhere(lambda: fn() if self.is_root else None, BaseException, DTBError)

    def sum(self, value):
        """Collective: the sum over ranks of a number or array, on every rank."""
        if self.comm is None:
            return value
        from mpi4py import MPI

        if np.isscalar(value):
            return self.comm.allreduce(value, op=MPI.SUM)
        out = np.empty_like(value)
        self.comm.Allreduce(np.ascontiguousarray(value), out, op=MPI.SUM)
        return out

    def max(self, value: float) -> float:
        """Collective: the largest value over ranks, on every rank."""
        if self.comm is None:
            return value
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MAX)

    def gather_objects(self, value) -> list | None:
        """Collective: every rank's ``value`` (picklable), in rank order, on rank 0 (None elsewhere)."""
        return [value] if self.comm is None else self.comm.gather(value, root=0)

    def bcast(self, value):
        """Collective: rank 0's ``value`` (any picklable object), on every rank."""
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def gather_arrays(self, arr: np.ndarray) -> list[np.ndarray] | None:
        """Collective: every rank's 1-d array, in rank order, on rank 0 (None elsewhere)."""
        if self.comm is None:
            return [arr]
        arr = np.ascontiguousarray(arr)
        counts = self.comm.gather(len(arr), root=0)
        if self.rank != 0:
            self.comm.Gatherv(arr, None, root=0)
            return None
        out = np.empty(sum(counts), dtype=arr.dtype)
        self.comm.Gatherv(arr, (out, counts), root=0)
        return np.split(out, np.cumsum(counts)[:-1])


def _backend(name: str, local_rank: int, announce: bool):
    from dtb.backends import make_backend

    return make_backend(name, local_rank, announce)


def _return_large_blocks_to_os() -> None:
    """Make glibc serve every block over 1 MiB with mmap, so freed build temporaries leave the process.

    glibc otherwise raises its mmap threshold after each large free (up to 32 MiB), after
    which the next large temporaries land on the heap and stay resident once freed.
    Elsewhere (no glibc) this does nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except OSError:
        pass


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _set_threads(n: int) -> int:
    """Give numba ``n`` threads (bounded by what it was started with); return the number set."""
    import numba

    _return_large_blocks_to_os()

    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n
