"""The CUDA kernels and the GPU backend on a device (marker gpu); skipped where no GPU is usable.

The same checks as tests/unit/kernels/test_cuda.py and backends/test_device.py, on a GPU: each
kernel against the CPU kernel on random input (poisoned outputs, several sizes), whole small
networks GPU vs CPU, determinism run after run.
"""

import pytest

import device_checks
from dtb.kernels.gpu import CudaDevice, gpu_usable

usable, why = gpu_usable()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not usable, reason=why)]


@pytest.fixture(scope="module")
def device():
    return CudaDevice(0)


@pytest.mark.parametrize("n", [1, 37, None])
def test_lif_cond_kernel(device, connectome, n):
    device_checks.check_lif_cond_epoch(device, connectome, n, exact=False)


@pytest.mark.parametrize("n", [1, 37, None])
def test_iaf_psc_exp_kernel(device, n):
    device_checks.check_iaf_psc_exp_epoch(device, n, exact=False)


@pytest.mark.parametrize("model", ["pd14", "pd14_float32", "wholebrain"])
def test_delivery_kernel(device, connectome, model):
    device_checks.check_delivery(device, connectome, model)


def test_enqueue_and_counts(device):
    device_checks.check_enqueue_and_counts(device)


@pytest.mark.parametrize("model", ["wholebrain", "pd14"])
def test_gpu_run_matches_the_cpu_and_repeats_itself(tmp_path, model):
    device_checks.check_backend_run(tmp_path, model, "gpu")
