"""Shared test helpers: small networks that build in well under a second, and ways to run them."""

import numpy as np

from dtb.config import load_config
from dtb.context import Context
from dtb.exchange import SerialExchange
from dtb.model.registry import network_from_config
from dtb.network import build_local
from dtb.partition import contiguous
from dtb.simulation import Simulation


def small_wholebrain(connectome=None, *overrides, n=3000, k=40):
    """A whole brain of ``n`` neurons and in-degree ``k`` on the bundled connectome (a Recipe)."""
    cfg = load_config(overrides=[f"wholebrain.n_neurons={n}", f"wholebrain.in_degree={k}", *overrides])
    return network_from_config(cfg).recipe()


def small_pd14(*overrides, n_scale=0.02, k_scale=0.05):
    """PD14 at ``n_scale`` of the neurons and ``k_scale`` of the in-degrees (a Recipe)."""
    cfg = load_config(overrides=["model=pd14", f"pd14.n_scale={n_scale}", f"pd14.k_scale={k_scale}", *overrides])
    return network_from_config(cfg).recipe()


def simulation(recipe, seed=1, backend="cpu", threads=1, gain=None, compact_weights=True):
    """A one-process Simulation of ``recipe`` (its LocalNetwork is ``sim.net``)."""
    ctx = Context.serial(backend=backend, threads=threads)
    net = build_local(ctx, recipe, contiguous(recipe, 1), seed, compact_weights=compact_weights)
    return Simulation(ctx, net, SerialExchange(), seed, gain)


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


class Stop(Exception):
    """What `stop_at_checkpoint` raises: a run stopped after a checkpoint, as a kill would stop it."""


def stop_at_checkpoint(step):
    """An ``on_checkpoint`` callback that stops the run at its first checkpoint (its ``.partial`` stays)."""
    raise Stop


def write_tvb_zip(path, areas: str):
    """A TVB connectivity zip of 2 regions at ``path`` with ``areas`` as its areas.txt; returns ``path``."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("weights.txt", "0 1\n1 0\n")
        z.writestr("tract_lengths.txt", "0 20\n20 0\n")
        z.writestr("areas.txt", areas)
    return path
