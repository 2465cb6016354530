"""Run under mpiexec (any size): same spikes as one process, complete routing.

    mpiexec -n 4 python -m mpi4py -m pytest --with-mpi tests/mpi
"""

import shutil

import h5py
import numpy as np
import pytest

from helpers import small_pd14, small_wholebrain
from dtb import driver
from dtb.config import load_config
from dtb.context import Context, cuda_aware_mpi
from dtb.exchange import DryRunExchange, make_exchange
from dtb.network import build_local
from dtb.partition import Partition, contiguous
from dtb.simulation import Simulation

RUNS = {
    "wholebrain": ["wholebrain.n_neurons=3000", "wholebrain.in_degree=40", "simulation.t_ms=150"],
    "pd14": ["model=pd14", "pd14.n_scale=0.03", "pd14.k_scale=0.1", "simulation.t_ms=150"],
}


@pytest.fixture(scope="module")
def world():
    return Context.world(threads=1)


EXCHANGES = ["alltoall", "two_level"]


@pytest.mark.mpi
@pytest.mark.parametrize("exchange", EXCHANGES)
@pytest.mark.parametrize("strategy", ["contiguous", "hierarchical", "greedy", "metis"])
@pytest.mark.parametrize("model", sorted(RUNS))
def test_run_file_is_independent_of_rank_count(world, mpi_tmp_path, model, strategy, exchange):
    """The central invariant: a run on P ranks writes bitwise the same spikes and rates as one process.

    For every partition and exchange strategy; the two-level exchange fakes nodes of 2 ranks.
    """
    per_node = 2 if world.size % 2 == 0 else 1
    stitch = "virtual" if exchange == "two_level" else "copy"  # both ways of stitching the ranks' spikes
    cfg = load_config(overrides=RUNS[model] + ["recording.progress=false", "recording.flush_ms=40",
                                               f"simulation.partition={strategy}", f"simulation.exchange={exchange}",
                                               f"simulation.ranks_per_node={per_node}", f"recording.stitch={stitch}"])
    out = mpi_tmp_path / f"{model}_{strategy}_{exchange}_p{world.size}.h5"
    summary = driver.run(cfg, out, ctx=world)
    assert summary["n_ranks"] == world.size
    if world.is_root:
        ref = mpi_tmp_path / f"{model}_{strategy}_{exchange}_serial.h5"
        driver.run(cfg, ref, ctx=Context.serial(threads=1))
        with h5py.File(out) as a, h5py.File(ref) as b:
            for name in (f"spikes/{model}/timestamps", f"spikes/{model}/node_ids", "rates/population_hz",
                         "rates/region_hz", *(f"network/synapse_counts/{k}" for k in ("target", "source", "count"))):
                np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
            assert len(a[f"spikes/{model}/node_ids"]) > 100
            assert a["partition"].attrs["n_ranks"] == world.size
            assert a["partition"].attrs["strategy"] == strategy
            # many ranks: each wrote its own part; copied in (a self-contained file, no parts left), or
            # stitched as virtual datasets over the parts kept beside the file
            virtual = stitch == "virtual" and world.size > 1
            assert a[f"spikes/{model}/node_ids"].is_virtual == virtual
            assert (out.parent / (out.name + ".parts")).is_dir() == virtual
    world.barrier()


def _interleaved(recipe, size):
    """More ranges than ranks, owners interleaved: routing must not assume contiguity."""
    n = recipe.n_neurons
    cuts = np.linspace(0, n, 3 * size + 1).astype(np.int64)
    ranks = (np.arange(3 * size) * 7 % size).astype(np.int32)
    return Partition(starts=cuts[:-1], stops=cuts[1:], ranks=ranks, n_ranks=size, strategy="test")


@pytest.mark.mpi
@pytest.mark.parametrize("model", ["wholebrain", "pd14"])
def test_every_needed_spike_arrives_exactly_once(world, connectome, model):
    """Brute force: every neuron fires once; each rank receives exactly the sources of its synapses."""
    recipe = small_wholebrain(connectome, n=2000, k=30) if model == "wholebrain" else small_pd14()
    per_node = 2 if world.size % 2 == 0 else 1
    for partition in (contiguous(recipe, world.size), _interleaved(recipe, world.size)):
        net = build_local(world, recipe, partition, seed=2)
        steps = net.gids % 3 + 30
        order = np.lexsort((net.gids, steps))
        for name in EXCHANGES:
            ex = make_exchange(world, partition, net.gids, net.slot_gids, name, per_node)
            r_steps, r_gids = ex.exchange(30, steps[order], net.gids[order])
            np.testing.assert_array_equal(np.sort(r_gids), net.slot_gids)  # each needed source once, nothing else
            np.testing.assert_array_equal(r_steps, r_gids % 3 + 30)  # steps survive packing
            assert np.all(np.diff(r_steps) >= 0)
            same = np.diff(r_steps) == 0
            assert np.all(np.diff(r_gids)[same] > 0)  # (step, gid) order
            assert world.sum(len(r_gids)) == world.sum(len(net.slot_gids))
            n_nodes = world.size // per_node
            bound = world.size - 1 if name == "alltoall" else (n_nodes - 1) + (per_node - 1)
            assert ex.messages_sent <= bound


@pytest.mark.mpi
@pytest.mark.parametrize("name", EXCHANGES)
def test_dry_run_predicts_the_messages_ranks_send(world, connectome, name):
    """One process faking P ranks counts exactly the messages the real P-rank exchange sends."""
    recipe = small_wholebrain(connectome, n=2000, k=30)
    part = contiguous(recipe, world.size)
    per_node = 2 if world.size % 2 == 0 else 1
    net = build_local(world, recipe, part, seed=2)
    ex = make_exchange(world, part, net.gids, net.slot_gids, name, per_node)
    Simulation(world, net, ex, seed=2).run(700)
    sent = world.sum(ex.messages_sent)
    if world.is_root:
        whole = build_local(Context(threads=1), recipe, contiguous(recipe, 1), seed=2)
        dry = DryRunExchange(part, whole, per_node)
        Simulation(Context(threads=1), whole, dry, seed=2).run(700)
        predicted = dry.flat.sum() if name == "alltoall" else dry.two_level.sum()
        assert sent == predicted and (world.size == 1 or sent > 0)
    world.barrier()


ASSIM = ["wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.dt_ms=1.0", "assimilation.members=3",
         "assimilation.trs=7", "assimilation.calibration_trs=2", "assimilation.spinup_ms=100",
         "assimilation.burn_in_trs=0", "assimilation.forecast5_every=1", "validation.trs=4", "validation.forecast_trs=2",
         "hyper.gamma_alpha=5", "recording.progress=false"]


@pytest.mark.mpi
@pytest.mark.parametrize("filter_name", ["joint", "separate"])
def test_assimilation_is_independent_of_rank_count(world, mpi_tmp_path, filter_name):
    """The ensemble is partitioned like any network; the filter's results equal one process's bitwise
    (the DTB's joint filter, and the default dual filter with member levels and a smoother), held-out
    forecasts, twin and baselines included."""
    from dtb.assimilation.driver import assimilate

    options = {"joint": ["assimilation.obs_baseline=range", "assimilation.hemodynamics=joint",
                         "assimilation.smoother_trs=0"],
               "separate": ["assimilation.smoother_trs=2"]}[filter_name]
    cfg = load_config(overrides=ASSIM + options)
    out = mpi_tmp_path / f"assim_{filter_name}_p{world.size}.h5"
    summary = assimilate(cfg, out, ctx=world)
    assert summary["n_ranks"] == world.size
    if world.is_root:
        ref = mpi_tmp_path / f"assim_{filter_name}_serial_p{world.size}.h5"
        assimilate(cfg, ref, ctx=Context.serial(threads=1))
        with h5py.File(out) as a, h5py.File(ref) as b:
            keys = ["bold"]
            a["assimilation"].visit(lambda n: keys.append(f"assimilation/{n}")
                                    if isinstance(a[f"assimilation/{n}"], h5py.Dataset) else None)
            assert "assimilation/validation/bold_twin" in keys
            for key in keys:
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)
            assert np.isfinite(a["assimilation/bold_prior"][:, 2:]).all()


class _Stop(Exception):
    pass


@pytest.mark.mpi
def test_resumed_run_is_bitwise_on_any_rank_count(world, mpi_tmp_path):
    """Stopped after a checkpoint and resumed on P ranks: the same file as one uninterrupted process."""
    base = RUNS["wholebrain"] + ["recording.progress=false", "recording.flush_ms=40", "recording.bold=true",
                                 "bold.tr_ms=30"]
    cfg = load_config(overrides=base + ["simulation.checkpoint_ms=50"])
    out = mpi_tmp_path / f"resume_p{world.size}.h5"

    def stop(step):
        if step >= 1000:
            raise _Stop

    with pytest.raises(_Stop):
        driver.run(cfg, out, ctx=world, on_checkpoint=stop)
    world.barrier()
    summary = driver.run(cfg, out, ctx=world, resume=True)
    assert summary["resumed_at_ms"] == 100.0
    if world.is_root:
        ref = mpi_tmp_path / f"resume_ref_p{world.size}.h5"
        driver.run(load_config(overrides=base), ref, ctx=Context.serial(threads=1))
        with h5py.File(out) as a, h5py.File(ref) as b:
            for name in ("spikes/wholebrain/timestamps", "spikes/wholebrain/node_ids", "rates/population_hz",
                         "bold"):
                np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
    world.barrier()


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="the emulated GPU backend needs nvcc")
@pytest.mark.parametrize("model", sorted(RUNS))
def test_gpu_backend_is_independent_of_rank_count(world, mpi_tmp_path, model):
    """The GPU code path (kernels built for the host) writes the same spikes on P ranks as on one."""
    cfg = load_config(overrides=RUNS[model] + ["recording.progress=false", "recording.flush_ms=40"])
    out = mpi_tmp_path / f"gpu_{model}_p{world.size}.h5"
    summary = driver.run(cfg, out, ctx=Context.world(backend="gpu_emulated", threads=1))
    # asked of the loaded MPI library, never assumed (the pip MPICH is built without CUDA)
    assert cuda_aware_mpi() is False and summary.get("mpi_cuda_aware", False) is False
    assert ("mpi_cuda_aware" in summary) == (world.size > 1)
    if world.is_root:
        ref = mpi_tmp_path / f"gpu_{model}_serial_p{world.size}.h5"
        driver.run(cfg, ref, ctx=Context.serial(backend="gpu_emulated", threads=1))
        with h5py.File(out) as a, h5py.File(ref) as b:
            for name in (f"spikes/{model}/timestamps", f"spikes/{model}/node_ids", "rates/population_hz"):
                np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
    world.barrier()


@pytest.mark.mpi
def test_the_python_api_runs_distributed_with_the_same_spikes(world, mpi_tmp_path):
    """A network built with dtb.Network, with selective spikes, recorded state and a stimulus: P ranks write
    what one process writes (spikes, rates, state)."""
    import dtb

    net = dtb.Network(seed=4, dt_ms=0.1)
    e = net.population("E", 600, model="lif_cond")
    i = net.population("I", 150, model="lif_cond")
    net.connect(e, [e, i], k=60, weight=0.4, delay_ms=1.5)
    net.connect(i, [e, i], k=15, weight=2.0, delay_ms=0.8)
    net.drive([e, i], rate_hz=8.0, k=100, weight=0.4)

    def simulate(path, ctx):
        s = dtb.Session(net, out=path, ctx=ctx, progress=False, partition="greedy")
        s.record(spikes=[i], state={"v_mv": e[::50], "j_ampa": i[:7]}, state_every_ms=0.5)
        s.stimulate(e[:300], amplitude=1.0, start_ms=20.0, stop_ms=60.0)
        s.run(40.0)
        s.run(60.0)
        return s.close()

    out = mpi_tmp_path / f"api_p{world.size}.h5"
    summary = simulate(out, world)
    assert summary["n_ranks"] == world.size
    if world.is_root:
        ref = mpi_tmp_path / f"api_serial_p{world.size}.h5"
        simulate(ref, Context.serial(threads=1))
        with h5py.File(out) as a, h5py.File(ref) as b:
            for name in ("spikes/network/timestamps", "spikes/network/node_ids", "rates/population_hz",
                         "state/v_mv/data", "state/v_mv/node_ids", "state/j_ampa/data"):
                np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
            assert a["state/v_mv/data"].shape == (200, 12)
            assert a["spikes/network/node_ids"][()].min() >= 600
    world.barrier()
