"""The CUDA kernels (``dtb/kernels/cuda``) and the devices that run them.

`CudaDevice` runs them on a GPU through CuPy: ``cupy.RawModule`` compiles
``kernels.cu`` with NVRTC once per device in this process (CuPy also keeps the
binary in its on-disk kernel cache, so later processes load it without compiling).
`HostDevice` runs the very same kernel bodies on the host, compiled by nvcc into a
shared library (``host_check.cu``): the GPU backend's whole code path, with NumPy
arrays, on machines without a GPU (tests, debugging). Both offer ``xp`` (the array
module), ``launch(kernel, n_threads, *args)``, ``capture(fn)`` (a replayable
recording of the launches ``fn`` makes: a CUDA graph), ``pinned(shape, dtype)``
(page-locked host memory), ``to_host(array, out=None)``, ``synchronize()``,
``free_bytes()`` and ``grid_threads`` (the fixed grid of the delivery kernel).

CuPy is imported only when a `CudaDevice` is made (or `gpu_usable` asks), so
importing dtb never imports it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from dtb.errors import ResourceError

SOURCE_DIR = Path(__file__).with_name("cuda")
KERNELS = ("advance_iaf_psc_exp", "advance_lif_cond", "deliver", "enqueue", "count_spikes")
#: no fused multiply-add: keeps the device's arithmetic closer to the CPU kernels'
OPTIONS = ("-std=c++17", "--fmad=false")
THREADS_PER_BLOCK = 256

_modules: dict[int, object] = {}


def gpu_usable() -> tuple[bool, str]:
    """Whether a CUDA GPU can be used here, and why not (cupy missing, no device, driver)."""
    try:
        import cupy
    except ImportError as err:
        return False, f"cupy is not installed ({err}; pip install 'dtb[gpu]')"
    try:
        if not cupy.is_available():
            return False, "cupy finds no usable CUDA device"
    except Exception as err:  # the CUDA driver itself may be missing or broken
        return False, f"CUDA is not usable ({err})"
    return True, ""


def resolve_backend(name: str, announce: bool = True) -> str:
    """The backend a run uses for ``simulation.backend = name``: 'cpu', 'gpu' or 'gpu_emulated'.

    'gpu' without a usable GPU is a `ResourceError`; 'auto' takes the GPU when there is one and
    says which it took on stderr when ``announce`` (one rank of a job announces).
    """
    if name == "gpu_emulated" and shutil.which("nvcc") is None:
        raise ResourceError("simulation.backend = 'gpu_emulated' needs nvcc (the CUDA toolkit) on this machine")
    if name in ("cpu", "gpu_emulated"):
        return name
    ok, why = gpu_usable()
    if name == "gpu" and not ok:
        raise ResourceError(f"simulation.backend = 'gpu', but there is no usable GPU: {why}")
    choice = "gpu" if ok else "cpu"
    if name == "auto" and announce:
        print(f"dtb: backend auto: {choice}" + ("" if ok else f" ({why})"), file=sys.stderr, flush=True)
    return choice


def device_free_bytes() -> int:
    """Free memory of the GPU this process will use (its index on the node, as the launcher announces it,
    modulo the GPUs), read before MPI starts."""
    import cupy

    from dtb.context import launcher_local_rank

    with cupy.cuda.Device(launcher_local_rank() % cupy.cuda.runtime.getDeviceCount()):
        return int(cupy.cuda.runtime.memGetInfo()[0])


def make_device(backend: str, local_rank: int = 0):
    """The device of a rank: its node's GPU number ``local_rank`` (modulo the GPUs), or the host emulation."""
    if backend == "gpu_emulated":
        return HostDevice()
    import cupy

    return CudaDevice(local_rank % cupy.cuda.runtime.getDeviceCount())


def module(device_id: int | None = None):
    """The kernels compiled for ``device_id`` (default: the current device), as a ``cupy.RawModule``."""
    import cupy

    device = cupy.cuda.Device(device_id)
    if device.id not in _modules:
        source = (SOURCE_DIR / "kernels.cu").read_text()
        with device:
            mod = cupy.RawModule(code=source, options=(*OPTIONS, f"-I{SOURCE_DIR}"))
            mod.compile()
        _modules[device.id] = mod
    return _modules[device.id]


class CudaDevice:
    """One GPU, through CuPy.

    Parameters
    ----------
    device_id : int
        CUDA device ordinal (one rank per GPU: the rank's index on its node, modulo the devices).
    """

    name = "gpu"

    def __init__(self, device_id: int = 0):
        import cupy

        self.xp = cupy
        self.device = cupy.cuda.Device(device_id)
        self.device.use()
        # one non-blocking stream for all of this rank's work: graphs cannot be captured on the legacy stream
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.stream.use()
        # looked up once, not while a graph is being captured
        self.functions = {name: module(self.device.id).get_function(name) for name in KERNELS}
        props = cupy.cuda.runtime.getDeviceProperties(self.device.id)
        self.description = f"{props['name'].decode()} (device {self.device.id})"
        # enough resident warps to fill the device; each loops over its share of the pending spikes
        self.grid_threads = int(props["multiProcessorCount"]) * 16 * 32

    def launch(self, kernel: str, n_threads: int, *args) -> None:
        if n_threads > 0:
            blocks = -(-n_threads // THREADS_PER_BLOCK)
            self.functions[kernel]((blocks,), (THREADS_PER_BLOCK,), args, stream=self.stream)

    def capture(self, fn):
        """A CUDA graph of the launches ``fn()`` makes (not run now); ``replay()`` launches it."""
        self.stream.begin_capture()
        try:
            fn()
        finally:
            graph = self.stream.end_capture()
        return _Replay(lambda: graph.launch(self.stream))

    def pinned(self, shape, dtype) -> np.ndarray:
        """Page-locked host memory (fast, asynchronous copies), as a NumPy array."""
        import cupyx

        return cupyx.empty_pinned(shape, dtype=dtype)

    def to_host(self, a, out: np.ndarray | None = None) -> np.ndarray:
        """A host copy of ``a`` (into ``out``, e.g. `pinned`), complete when this returns."""
        out = a.get(stream=self.stream, out=out)
        self.stream.synchronize()
        return out

    def synchronize(self) -> None:
        self.stream.synchronize()

    def free_bytes(self) -> int:
        return int(self.device.mem_info[0])


class _Replay:
    """A captured sequence of launches (`CudaDevice.capture`, `HostDevice.capture`)."""

    def __init__(self, run):
        self.replay = run


_CTYPES = {np.dtype(np.int64): ctypes.c_longlong, np.dtype(np.int32): ctypes.c_int,
           np.dtype(np.uint64): ctypes.c_ulonglong}


class HostDevice:
    """The GPU kernels run on the host (built with nvcc), with NumPy arrays.

    Parameters
    ----------
    cache_dir : Path, optional
        Where the shared library is built and kept (default ``~/.cache/dtb``); it is rebuilt
        when a source changes.
    """

    name = "gpu_emulated"
    description = "the GPU kernels on the host"
    grid_threads = 4 * 32

    def __init__(self, cache_dir: Path | None = None):
        self.xp = np
        self.lib = ctypes.CDLL(str(build_host_library(cache_dir)))

    def launch(self, kernel: str, n_threads: int, *args) -> None:
        converted = []
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError(f"{kernel}: array arguments must be C-contiguous")
                converted.append(ctypes.c_void_p(a.ctypes.data))
            else:
                converted.append(_CTYPES[np.asarray(a).dtype](int(a)))
        getattr(self.lib, kernel)(ctypes.c_longlong(n_threads), *converted)

    @staticmethod
    def capture(fn):
        """A recording of ``fn``'s launches: here, ``fn`` itself, run at each replay."""
        return _Replay(fn)

    @staticmethod
    def pinned(shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def to_host(a, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return a.copy()
        out[...] = a
        return out

    @staticmethod
    def synchronize() -> None:
        """Nothing to wait for: the host runs the kernels synchronously."""

    @staticmethod
    def free_bytes() -> int:
        from dtb.context import available_bytes

        return available_bytes()


def build_host_library(cache_dir: Path | None = None) -> Path:
    """Compile ``host_check.cu`` with nvcc into a shared library (once per source version); its path."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise ResourceError("the emulated GPU backend needs nvcc (the CUDA toolkit) to build the kernels for the host")
    sources = sorted(SOURCE_DIR.glob("*.cu*"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    cache_dir = Path(cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dtb")
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = cache_dir / f"dtb_host_kernels_{digest}.so"
    if not lib.exists():
        tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        p = subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-O2", *OPTIONS, f"-I{SOURCE_DIR}", "-o", str(tmp),
                            str(SOURCE_DIR / "host_check.cu")], capture_output=True, text=True)
        if p.returncode != 0:
            raise ResourceError(f"nvcc could not build the host kernels: {p.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)  # atomic: ranks building at once all end with one good file
    return lib
