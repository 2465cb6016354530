"""Shared fixtures: small configurations that build in well under a second."""

import numpy as np
import pytest

from dtb.config import load_config
from dtb.connectome.connectome import load_connectome
from dtb.connectome.pd14 import pd14_recipe
from dtb.connectome.wholebrain import wholebrain_recipe
from dtb.context import Context


@pytest.fixture(scope="session")
def ctx():
    return Context.serial()


@pytest.fixture(scope="session")
def connectome():
    return load_connectome()


def small_wholebrain(connectome, *overrides, n=3000, k=40):
    cfg = load_config(overrides=[f"wholebrain.n_neurons={n}", f"wholebrain.in_degree={k}", *overrides])
    return wholebrain_recipe(cfg, connectome)


def small_pd14(*overrides, n_scale=0.02, k_scale=0.05):
    cfg = load_config(overrides=["model=pd14", f"pd14.n_scale={n_scale}", f"pd14.k_scale={k_scale}", *overrides])
    return pd14_recipe(cfg)


def write_connectome(path, n=4, subject="s1", **changes):
    """A valid n-region connectome file in the bundled layout, with ``changes`` (None drops a dataset)."""
    import h5py

    rng = np.random.default_rng(0)
    sc = rng.uniform(1, 10, (n, n))
    sc = sc + sc.T
    np.fill_diagonal(sc, 0)
    data = dict(sc=sc, len_mm=np.where(sc > 0, 20.0, 0.0), nvoxel=np.full(n, 100), waytotal=np.full(n, 1000))
    data.update(changes)
    with h5py.File(path, "w") as f:
        f["labels"] = np.array([f"R{i}".encode() for i in range(n)])
        for k, v in data.items():
            if v is not None:
                f[f"subjects/{subject}/{k}"] = v
    return path


def collect(sim, n_steps):
    """Run a Simulation and return its spikes as (steps, gids) int64 arrays."""
    steps, gids = [], []

    class Sink:
        def spikes(self, s, g):
            steps.append(s)
            gids.append(g)

    sim.run(n_steps, [Sink()])
    if not steps:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(steps), np.concatenate(gids)
