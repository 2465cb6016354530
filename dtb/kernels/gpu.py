"""The CUDA kernels (``dtb/kernels/cuda/*.cu``) as a CuPy module, compiled once per device.

CuPy is imported only when `module` is first called, so importing dtb never imports
it. ``cupy.RawModule`` compiles with NVRTC and keeps the binary in CuPy's on-disk
kernel cache (``~/.cupy/kernel_cache``), so a later process on the same device type
loads it without compiling; this process keeps one loaded module per device.

Status: the kernels are written and tested (compiled with nvcc, their bodies run on
the host against the numba kernels: tests/unit/test_cuda_kernels.py; on a GPU,
tests/gpu), but no simulation loop uses them yet (`simulation.backend` is 'cpu' only).
"""

from __future__ import annotations

from pathlib import Path

SOURCE_DIR = Path(__file__).with_name("cuda")
KERNELS = ("advance_iaf_psc_exp", "advance_lif_cond", "spike_flags", "deliver_f32", "deliver_u16", "fixed_to_float",
           "count_spikes")
#: no fused multiply-add: keeps the device's arithmetic closer to the CPU kernels'
OPTIONS = ("-std=c++17", "--fmad=false")

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


def module(device_id: int | None = None):
    """The kernels compiled for ``device_id`` (default: the current device), as a ``cupy.RawModule``."""
    import cupy

    device = cupy.cuda.Device(device_id)
    if device.id not in _modules:
        source = (SOURCE_DIR / "kernels.cu").read_text()
        with device:
            mod = cupy.RawModule(code=source, options=(*OPTIONS, f"-I{SOURCE_DIR}"), name_expressions=())
            mod.compile()
        _modules[device.id] = mod
    return _modules[device.id]
