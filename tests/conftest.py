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
