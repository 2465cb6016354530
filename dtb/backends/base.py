"""What every engine shares: the initial state, the gains and stimulus, snapshots."""

from __future__ import annotations

import numpy as np

from dtb.kernels import cpu, rng
from dtb.model.neurons import LIF_GAINS
from dtb.model.tables import column, kernel_table, refractory_steps


def initial_state(net, seed: int, table: np.ndarray) -> dict:
    """Initial state of the local neurons, drawn from (seed, INIT, gid): the same on any partition.

    Parameters
    ----------
    net : LocalNetwork
    seed : int
    table : ndarray, shape (n_pop, n_columns), float64
        `dtb.model.tables.kernel_table` of the recipe.

    Returns
    -------
    dict of ndarray
        iaf_psc_exp: ``v`` (relative to E_L, mV), ``i_ex``, ``i_in`` (pA), ``ref`` (int32 steps);
        lif_cond: ``v`` (mV), ``j`` (4, n) traces, ``i_bg`` (mV/ms), ``ref``, ``gain`` (len(LIF_GAINS), n).
        Both: ``i_stim``, the stimulus current (pA for iaf_psc_exp, mV/ms for lif_cond), zero.
    """
    recipe = net.recipe
    model = recipe.neuron_model
    v0_mean = np.array([p.v0_mean_mv for p in recipe.populations])
    v0_sd = np.array([p.v0_sd_mv for p in recipe.populations])
    z = rng.normals(seed, rng.INIT, net.gids, 0)
    v = v0_mean[net.pop] + v0_sd[net.pop] * z
    n = net.n_local
    ref = np.zeros(n, dtype=np.int32)
    if model == "iaf_psc_exp":
        e_l = column(table, model, "e_l_mv")[net.pop]
        return dict(v=v - e_l, i_ex=np.zeros(n), i_in=np.zeros(n), ref=ref, i_stim=np.zeros(n))
    cols = {c: column(table, model, c)[net.pop] for c in ("v_th_mv", "ou_noise", "ou_decay", "ou_mu")}
    v = np.minimum(v, cols["v_th_mv"] - 0.1)
    # OU current starts in its stationary distribution
    sigma = cols["ou_noise"] / np.sqrt(np.maximum(1.0 - cols["ou_decay"] ** 2, 1e-300))
    i_bg = cols["ou_mu"] + sigma * rng.normals(seed, rng.INIT, net.gids, 1)
    return dict(v=v, j=np.zeros((4, n)), i_bg=i_bg, ref=ref, gain=np.ones((len(LIF_GAINS), n)),
                i_stim=np.zeros(n))


class Engine:
    """One rank's part of a network on a backend: state, synapses, pending spikes and the kernels.

    Subclasses provide ``deliver(step, m)`` (the pending spikes' input for the epoch of ``m`` steps
    from ``step``), ``advance(step, m)`` (the neurons through it), ``take_spikes()`` (the spikes fired
    since the last call, (emission step, gid) int64 in (step, gid) order), ``enqueue(steps, gids)``
    (queue the spikes received), and, where ``batched``, ``run_batch(step, n_steps, clock)`` (as many
    whole epochs as fit, delivering the rank's own spikes; returns the steps done). The state is in
    ``self.state``, arrays of ``self.xp`` (numpy, or cupy on a GPU).

    Attributes
    ----------
    net : LocalNetwork
    seed : int
    table : ndarray, shape (n_pop, n_columns), float64
        The recipe's kernel table (host copy).
    epoch_steps : int
        ``min(min_delay_steps, 64)``.
    refractory_steps : int
        `dtb.model.tables.refractory_steps`: bounds the spikes of an epoch.
    batched : bool
    """

    batched = False

    def __init__(self, net, seed: int, xp=np):
        recipe = net.recipe
        self.net, self.seed, self.xp = net, seed, xp
        self.lif = recipe.neuron_model == "lif_cond"
        self.table = kernel_table(recipe)
        self.epoch_steps = min(recipe.min_delay_steps, cpu.MAX_EPOCH_STEPS)
        self.refractory_steps = refractory_steps(self.table, recipe.neuron_model)
        self.poisson_cdf = poisson_table(self.table, recipe.neuron_model)
        self.state = {k: xp.asarray(np.ascontiguousarray(v)) for k, v in initial_state(net, seed, self.table).items()}

    def to_host(self, a) -> np.ndarray:
        """A host copy of a state array."""
        return np.array(a)

    def synchronize(self) -> None:
        """Wait for the device (nothing to wait for on the host)."""

    def set_gains(self, gain: np.ndarray) -> None:
        """Replace the per-neuron lif_cond gains, shape (len(LIF_GAINS), n_local), between run windows."""
        self._replace("gain", gain)

    def set_stimulus(self, i_stim: np.ndarray) -> None:
        """Replace the per-neuron stimulus current, shape (n_local,) (pA for iaf_psc_exp, mV/ms for lif_cond)."""
        self._replace("i_stim", i_stim)

    def _replace(self, name: str, value: np.ndarray) -> None:
        if name not in self.state:
            from dtb.errors import ConfigError

            raise ConfigError(f"{self.net.recipe.neuron_model} neurons have no {name!r}")
        if np.shape(value) != self.state[name].shape:
            raise ValueError(f"{name} has shape {np.shape(value)}, expected {self.state[name].shape}")
        self.state[name][...] = self.xp.asarray(value)

    def membrane_potential_mv(self) -> np.ndarray:
        """Membrane potentials of the local neurons (mV), shape (n_local,), float64, on the host."""
        v = self.to_host(self.state["v"])
        if not self.lif:
            v = v + column(self.table, "iaf_psc_exp", "e_l_mv")[self.net.pop]
        return v

    def snapshot(self) -> dict:
        """A host copy of everything the next steps depend on: the state and ``pend``, the pending spikes
        (slot, due step, next row) in (due step, slot, row) order, shape (3, n), int64."""
        snap = {k: self.to_host(v) for k, v in self.state.items()}
        snap["pend"] = self._pending()
        return snap

    def restore(self, snap: dict, step: int) -> None:
        """Go back to a `snapshot` (of any backend's engine) taken at ``step``: the steps that follow
        repeat exactly (noise is keyed by step). A snapshot without ``i_stim`` (an older checkpoint)
        leaves no stimulus."""
        from dtb.errors import DataError

        for k in self.state:
            if k in snap and np.shape(snap[k]) == self.state[k].shape:
                self.state[k][...] = self.xp.asarray(snap[k])
            elif k == "i_stim" and k not in snap:  # a checkpoint from before stimuli
                self.state[k][...] = 0
            else:
                raise DataError(f"the checkpoint's state {k!r} is missing or has shape {np.shape(snap.get(k))}, "
                                f"expected {self.state[k].shape}")
        if np.shape(snap.get("pend", ())) [:1] != (3,):
            raise DataError(f"the checkpoint's pending spikes have shape {np.shape(snap.get('pend'))}, expected (3, n)")
        self._set_pending(np.asarray(snap["pend"], dtype=np.int64), step)

    def _pending(self) -> np.ndarray:
        raise NotImplementedError

    def _set_pending(self, pend: np.ndarray, step: int) -> None:
        raise NotImplementedError


def poisson_table(table: np.ndarray, neuron_model: str) -> np.ndarray:
    """Cumulative Poisson tables of the populations' external drive, shape (n_pop, K), float64."""
    lam = column(table, neuron_model, "poisson_lam")
    return cpu.poisson_tables(lam, int(16 + lam.max() + 10 * np.sqrt(lam.max())))
