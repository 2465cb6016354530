"""The CUDA kernels without a GPU: every .cu file compiles with nvcc, and the kernels' bodies, built
for the host from the same headers (`HostDevice`), reproduce the numba kernels: random numbers bit
for bit, neuron updates and spikes exactly, delivery to fixed-point rounding and independent of the
order of adds (tests/device_checks.py; tests/gpu runs the same checks on a GPU).

Skipped where nvcc is missing.
"""

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

import device_checks
from dtb.kernels import rng
from dtb.kernels.gpu import KERNELS, OPTIONS, SOURCE_DIR, HostDevice
from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on this machine")
I64, U64, PTR = ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_cu_file_compiles(tmp_path, arch):
    for src in sorted(SOURCE_DIR.glob("*.cu")):
        p = subprocess.run([NVCC, f"-arch={arch}", "-std=c++17", "--fmad=false", "-Werror", "all-warnings",
                            f"-I{SOURCE_DIR}", "-c", "-o", str(tmp_path / (src.stem + ".o")), str(src)],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"{src.name}: {p.stderr}"
    ptx = subprocess.run([NVCC, f"-arch={arch}", "-std=c++17", f"-I{SOURCE_DIR}", "--ptx", "-o", "-",
                          str(SOURCE_DIR / "kernels.cu")], capture_output=True, text=True, check=True).stdout
    for name in KERNELS:  # extern "C": the names CuPy looks up
        assert re.search(rf"\.entry {name}\(", ptx), name


def nvrtc_library():
    """libnvrtc from the nvidia-cuda-nvrtc wheel (a test dependency) or the CUDA toolkit, or None."""
    import glob
    import importlib.util

    spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    places = [p + "/lib/libnvrtc.so*" for p in (spec.submodule_search_locations if spec else [])]
    places += ["/usr/local/cuda/lib64/libnvrtc.so*", "/usr/local/cuda/targets/*/lib/libnvrtc.so*"]
    found = [f for pattern in places for f in sorted(glob.glob(pattern)) if "alt" not in f]
    return ctypes.CDLL(found[0]) if found else None


def test_kernels_compile_with_nvrtc():
    """What cupy.RawModule does on a GPU machine: NVRTC, without the C library's headers, to PTX."""
    nvrtc = nvrtc_library()
    if nvrtc is None:
        pytest.skip("no libnvrtc (pip install nvidia-cuda-nvrtc-cu12)")
    prog = ctypes.c_void_p()
    source = (SOURCE_DIR / "kernels.cu").read_bytes()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source, b"kernels.cu", 0, None, None) == 0
    options = [b"--gpu-architecture=compute_90", f"-I{SOURCE_DIR}".encode()] + [o.encode() for o in OPTIONS]
    status = nvrtc.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    assert status == 0, log.value.decode()
    for name in KERNELS:
        assert re.search(rf"\.entry {name}\(", ptx.value.decode()), name


def test_parameter_columns_match_the_python_tables():
    text = (SOURCE_DIR / "neurons.cuh").read_text()
    for prefix, columns in (("IAF", IAF_COLUMNS), ("LIF", LIF_COLUMNS)):
        body = re.search(rf"enum {prefix.title()}Column \{{(.*?)\}};", text, re.S).group(1)
        names = [x.strip() for x in body.split(",") if x.strip()]
        assert names == [f"{prefix}_{c.upper()}" for c in columns] + [f"{prefix}_N_COLUMNS"]


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """host_check.cu built with nvcc: every kernel as a host loop, plus the random-number helpers."""
    dev = HostDevice(cache_dir=tmp_path_factory.mktemp("cuda"))
    dev.lib.host_draw.argtypes = [U64, ctypes.c_uint32, ctypes.c_uint32, I64, PTR, U64, PTR]
    dev.lib.host_normal.argtypes = [U64, ctypes.c_uint32, I64, PTR, U64, PTR, PTR, PTR, PTR]
    dev.lib.host_poisson.argtypes = [I64, PTR, PTR, PTR]
    return dev


def test_random_numbers_bit_for_bit(device):
    host = device.lib
    gids = np.concatenate([np.arange(1000), [2**31 - 1, 2**32 + 5, 2**40 + 3]]).astype(np.int64)
    for seed, purpose, stream, index in ((1, rng.NOISE, 0, 0), (12345, rng.POISSON, 3, 2**33 + 7)):
        out = np.full((len(gids), 4), 0xDEADBEEF, dtype=np.uint32)  # poisoned
        host.host_draw(seed, purpose, stream, len(gids), gids.ctypes.data, index, out.ctypes.data)
        np.testing.assert_array_equal(out, rng.random_words(seed, purpose, stream, gids, index))
    zig = [np.ascontiguousarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
    gids = np.arange(200_000, dtype=np.int64)  # enough for the ziggurat's slow path and its tail
    out = np.full(len(gids), np.nan)
    host.host_normal(7, rng.NOISE, len(gids), gids.ctypes.data, 99, *(a.ctypes.data for a in zig), out.ctypes.data)
    np.testing.assert_array_equal(out, rng.normals(7, rng.NOISE, gids, 99))
    assert np.abs(out).max() > 3.5  # the tail was taken
    lam = np.repeat([0.0, 0.3, 2.5, 17.0, 250.0, 3000.0], 500)
    u = np.random.default_rng(0).uniform(size=len(lam))
    got = np.full(len(lam), -1, dtype=np.int64)
    host.host_poisson(len(lam), lam.ctypes.data, u.ctypes.data, got.ctypes.data)
    np.testing.assert_array_equal(got, [rng.poisson(a, b) for a, b in zip(lam, u)])


@pytest.mark.parametrize("n", [1, 37, None])
def test_lif_cond_epoch_equals_the_cpu_kernel(device, connectome, n):
    device_checks.check_lif_cond_epoch(device, connectome, n)


@pytest.mark.parametrize("n", [1, 37, None])
def test_iaf_psc_exp_epoch_equals_the_cpu_kernel(device, n):
    device_checks.check_iaf_psc_exp_epoch(device, n)


@pytest.mark.parametrize("model", ["pd14", "pd14_float32", "wholebrain"])
def test_delivery_equals_the_cpu_kernel_in_any_order(device, connectome, model):
    device_checks.check_delivery(device, connectome, model)


def test_enqueue_and_counts(device):
    device_checks.check_enqueue_and_counts(device)
