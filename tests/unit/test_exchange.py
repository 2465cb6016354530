"""Exchange helpers and the dry-run exchange on one process (the MPI exchanges: tests/mpi)."""

import json

import h5py
import numpy as np

from helpers import small_wholebrain
from dtb import driver
from dtb.config import load_config
from dtb.context import Context
from dtb.exchange import DryRunExchange, pack, unpack_sorted
from dtb.network import build_local
from dtb.partition import contiguous
from dtb.simulation import Simulation


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(0)
    steps = rng.integers(1000, 1064, 5000)
    gids = rng.integers(0, 2**50, 5000)
    s, g = unpack_sorted(pack(steps, gids, 1000), 1000)
    order = np.lexsort((gids, steps))
    np.testing.assert_array_equal(s, steps[order])
    np.testing.assert_array_equal(g, gids[order])


def test_dry_run_bounds(connectome):
    recipe = small_wholebrain(connectome, n=3000, k=40)
    net = build_local(Context(threads=2), recipe, contiguous(recipe, 1), seed=1)
    for p, ppn in ((1, 1), (16, 4)):
        dry = DryRunExchange(contiguous(recipe, p), net, ppn)
        Simulation(Context(threads=2), net, dry, seed=1).run(500)
        st = dry.stats()
        assert st["epochs"] == -(-500 // recipe.min_delay_steps)
        if p == 1:
            assert st["records_per_rank_epoch"] == st["messages_flat"] == st["messages_two_level"] == 0
        else:
            assert 0 < st["messages_flat"] <= p - 1 and st["messages_flat_max"] <= p - 1
            assert st["messages_two_level_max"] <= (p // ppn - 1) + (ppn - 1)
            assert st["bytes_per_rank_epoch"] == 8 * st["records_per_rank_epoch"]


def test_dry_run_in_the_run_file(tmp_path):
    out = tmp_path / "dry.h5"
    driver.run(load_config(overrides=["wholebrain.n_neurons=3000", "wholebrain.in_degree=30", "simulation.t_ms=50",
                                      "simulation.exchange=dry_run", "simulation.dry_run_ranks=32",
                                      "recording.progress=false"]), out)
    with h5py.File(out) as f:
        d = json.loads(f["summary"][()])["dry_run"]
        assert d["ranks"] == 32 and d["messages_flat"] > 0
        assert f["partition"].attrs["n_ranks"] == 1  # the run itself was serial
