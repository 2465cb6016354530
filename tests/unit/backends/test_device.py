"""The GPU backend without a GPU: the device engine on the host build of the CUDA kernels (backend
'gpu_emulated'). The same code runs on a GPU with CuPy arrays (tests/gpu).

Skipped where nvcc is missing.
"""

import shutil

import h5py
import numpy as np
import pytest

import device_checks
from device_checks import run, spikes
from dtb import cli
from dtb.backends import device as device_backend
from dtb.errors import ResourceError
from dtb.kernels.gpu import resolve_backend
from helpers import simulation, small_wholebrain

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on this machine")


@pytest.mark.parametrize("model", ["wholebrain", "pd14"])
def test_emulated_gpu_run_matches_the_cpu_and_repeats_itself(tmp_path, model):
    device_checks.check_backend_run(tmp_path, model, "gpu_emulated")


def test_emulated_gpu_checkpoints_resume_bitwise(tmp_path):
    ref, _ = run(tmp_path, "ref", "wholebrain", "gpu_emulated", "recording.bold=true", "bold.tr_ms=50")

    class Stop(Exception):
        pass

    def stop(step):
        raise Stop

    extra = ["recording.bold=true", "bold.tr_ms=50", "simulation.checkpoint_ms=100"]
    with pytest.raises(Stop):
        run(tmp_path, "stopped", "wholebrain", "gpu_emulated", *extra, on_checkpoint=stop)
    out, summary = run(tmp_path, "stopped", "wholebrain", "gpu_emulated", *extra, resume=True)
    assert summary["resumed_at_ms"] == 100.0
    for a, b in zip(spikes(ref, "wholebrain"), spikes(out, "wholebrain")):
        np.testing.assert_array_equal(a, b)
    with h5py.File(ref) as a, h5py.File(out) as b:
        np.testing.assert_array_equal(a["bold"][()], b["bold"][()])


def test_snapshots_cross_backends(connectome):
    """A CPU snapshot restored on the device (and back) continues the same state."""
    recipe = small_wholebrain(connectome, n=4000)
    cpu_sim = simulation(recipe)
    cpu_sim.run(100)
    dev_sim = simulation(recipe, backend="gpu_emulated")
    dev_sim.restore(cpu_sim.snapshot())
    back = dev_sim.snapshot()
    for key, val in cpu_sim.snapshot().items():
        np.testing.assert_array_equal(back[key], val, err_msg=key)
    np.testing.assert_array_equal(dev_sim.membrane_potential_mv(), cpu_sim.membrane_potential_mv())


def test_backend_choice(capsys):
    assert resolve_backend("cpu") == "cpu"
    assert resolve_backend("gpu_emulated") == "gpu_emulated"
    try:
        import cupy
        has_gpu = cupy.is_available()
    except ImportError:
        has_gpu = False
    assert resolve_backend("auto") == ("gpu" if has_gpu else "cpu")
    assert capsys.readouterr().err.startswith(f"dtb: backend auto: {'gpu' if has_gpu else 'cpu'}")
    if not has_gpu:
        with pytest.raises(ResourceError, match="simulation.backend = 'gpu', but there is no usable GPU"):
            resolve_backend("gpu")


def test_cli_backend_flag(tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert cli.main(["run", "--quiet", "--backend", "gpu_emulated", "--out", str(out), "--set", "model=pd14",
                     "--set", "pd14.n_scale=0.02", "--set", "simulation.t_ms=50"]) == 0
    assert "gpu_emulated" in capsys.readouterr().out


def test_graphs_batches_and_exchange_mode_give_the_same_spikes(tmp_path, monkeypatch):
    """PD14 (1-step epochs): replayed graphs of epochs, single launches, one-epoch batches with queues grown
    from nothing (tiny budget), and the exchange path (host takes every epoch's spikes) agree bitwise."""
    ref, s_ref = run(tmp_path, "graphs", "pd14", "gpu_emulated")
    plain, s_plain = run(tmp_path, "plain", "pd14", "gpu_emulated", "simulation.cuda_graphs=false")
    hosted, _ = run(tmp_path, "hosted", "pd14", "gpu_emulated", "simulation.exchange=dry_run",
                    "simulation.dry_run_ranks=4")
    monkeypatch.setattr(device_backend, "QUEUE_BUDGET_BYTES", 1)
    small, _ = run(tmp_path, "small", "pd14", "gpu_emulated")
    for path in (plain, hosted, small):
        for a, b in zip(spikes(ref, "pd14"), spikes(path, "pd14")):
            np.testing.assert_array_equal(a, b)
    # graphs fuse delivery into the update; single launches time it apart
    assert s_ref["phase_s"]["delivery"] == 0 < s_plain["phase_s"]["delivery"]
