"""Network: build your own network from populations, connections and drives; it freezes into a `Recipe`.

    net = dtb.Network(seed=1, dt_ms=0.1)
    e = net.population("E", 800, model="lif_cond")
    i = net.population("I", 200, model="lif_cond")
    net.connect(e, [e, i], rule="fixed_in_degree", k=80, weight=0.4, delay_ms=1.5)
    net.connect(i, [e, i], rule="fixed_in_degree", k=20, weight=2.0, delay_ms=0.8)
    net.drive([e, i], rate_hz=8.0, k=100, weight=0.4)

A population's synapses act on the excitatory receptors of their targets when the
population is excitatory (by default, unless its name starts with "I"), else on
the inhibitory ones. Weights are in the model's unit: the jump of the receptor
traces for ``lif_cond`` (positive: the reversal potentials give the sign), pA for
``iaf_psc_exp`` (negative for inhibitory synapses). Nothing is built until a
`dtb.Session` prepares the network, on every rank only its own part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dtb.errors import ConfigError, UsageError
from dtb.model.neurons import IafPscExp, LifCond
from dtb.model.recipe import Population, Projection, Recipe

#: neuron models by name
NEURON_MODELS = {"lif_cond": LifCond, "iaf_psc_exp": IafPscExp}
RULES = ("fixed_in_degree", "fixed_total_number")
#: the largest iaf_psc_exp synaptic weight, either sign (PD14's are 88 pA, -351 pA for inhibition)
MAX_WEIGHT_PA = 1e6


@dataclass(frozen=True)
class PopulationView:
    """A population of a `Network`, or some of its neurons (``e[:10]``, ``e[[0, 5, 7]]``).

    Attributes
    ----------
    index : int
        Population index.
    name : str
    size : int
        Neurons in the population.
    select : tuple of int, range or None
        Which of its neurons (indices inside it; a slice of the whole population stays a range); None: all.
    """

    index: int
    name: str
    size: int
    select: tuple | range | None = None
    #: the network it belongs to (a token: a same-named population of another network is not this one)
    owner: object = dataclasses.field(default=None, compare=False, repr=False)

    def __getitem__(self, key) -> "PopulationView":
        if isinstance(key, (bool, np.bool_, float, np.floating, str)) or \
                isinstance(key, (list, tuple, np.ndarray)) and np.asarray(key).dtype.kind not in "iu":
            raise UsageError(f"population {self.name!r}[{key!r}]: index it by integers or a slice")
        where = f"population {self.name!r}[{key!r}]"
        if isinstance(key, (int, np.integer)) and not -len(self) <= key < len(self):
            raise UsageError(f"{where}: index {key} is out of range (it has {len(self)} neurons)")
        try:
            if self.select is None and isinstance(key, (slice, int, np.integer)):
                idx = range(self.size)[key]  # no index array of the whole population
                idx = [idx] if isinstance(idx, int) else idx
            elif self.select is None:
                idx = np.asarray(key, dtype=np.int64).ravel()
                if np.any((idx < -self.size) | (idx >= self.size)):
                    raise IndexError(f"an index is outside 0 to {self.size - 1:,}")
                idx = np.where(idx < 0, idx + self.size, idx)
            else:
                idx = np.atleast_1d(self._local()[key])
        except (IndexError, TypeError, ValueError) as err:
            raise UsageError(f"{where}: {err} (it has {len(self)} neurons)") from None
        if len(idx) == 0:
            raise UsageError(f"{where}: selects no neuron (it has {len(self)} neurons)")
        return dataclasses.replace(self, select=idx if isinstance(idx, range) else tuple(int(i) for i in idx))

    def __len__(self) -> int:
        return self.size if self.select is None else len(self.select)

    @property
    def whole(self) -> bool:
        return self.select is None

    def _local(self) -> np.ndarray:
        if self.select is None:
            return np.arange(self.size)
        if isinstance(self.select, range):
            return np.arange(self.select.start, self.select.stop, self.select.step, dtype=np.int64)
        return np.array(self.select, dtype=np.int64)

    def gids(self, recipe: Recipe) -> np.ndarray:
        """The selected neurons' gids in ``recipe``, increasing, int64."""
        return np.unique(recipe.offsets[self.index] + self._local()).astype(np.int64)

    def __repr__(self) -> str:
        return f"<population {self.name!r}: {len(self)} of {self.size} neurons>"


def real(what: str, value, *, ge: float | None = None, gt: float | None = None) -> float:
    """``value`` as a float, or a `ConfigError` naming ``what`` unless it is a finite real number (not a bool or a
    string) that is ``>= ge`` and ``> gt`` where those are given."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            not np.isfinite(value):
        raise ConfigError(f"{what} = {value!r}: must be a finite number")
    if 0 < abs(value) < np.finfo(np.float64).tiny:  # passes "> 0", then overflows what divides by it
        raise ConfigError(f"{what} = {value!r}: below the smallest normal float")
    if ge is not None and value < ge or gt is not None and value <= gt:
        raise ConfigError(f"{what} = {value!r}: must be {'>= ' + format(ge, 'g') if ge is not None else ''}"
                          f"{' and ' if ge is not None and gt is not None else ''}"
                          f"{'> ' + format(gt, 'g') if gt is not None else ''}")
    return float(value)


def _count(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{what} = {value!r}: must be an integer >= 1")
    return int(value)


def _views(x, what: str) -> list[PopulationView]:
    views = list(x) if isinstance(x, (list, tuple)) else [x]
    if not views or not all(isinstance(v, PopulationView) for v in views):
        raise UsageError(f"{what}: expected populations (what Network.population returns), got {x!r}")
    return views


class Network:
    """A network under construction: populations, connections and external drive.

    Parameters
    ----------
    seed : int
        Seed of the connectivity, initial state and noise (a `Session` may override it).
    dt_ms : float
        Time step (ms); delays are rounded to it.
    name : str
        Stored as the run file's ``model``.
    """

    def __init__(self, seed: int = 1, dt_ms: float = 0.1, name: str = "network"):
        from dtb.config import check_value

        if isinstance(seed, bool) or not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**32):
            raise ConfigError(f"seed = {seed!r}: must be an integer in [0, 2**32)")
        check_value("simulation", "dt_ms", real("dt_ms", dt_ms), "dt_ms")  # the bounds of simulation.dt_ms
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name = {name!r}: must be a non-empty string")
        self.seed, self.dt_ms, self.name = int(seed), float(dt_ms), name
        self._pops: list[Population] = []
        self._projections: list[Projection] = []
        self._regions: list[str] = []
        self._frozen: Recipe | None = None
        self._owner = object()  # what its views carry, so that they can be told from another network's

    @classmethod
    def from_recipe(cls, recipe: Recipe, seed: int = 1) -> "Network":
        """A network holding a built-in recipe (`dtb.wholebrain`, `dtb.pd14`), to drive, connect or run."""
        net = cls(seed=seed, dt_ms=recipe.dt_ms, name=recipe.model)
        net._pops = list(recipe.populations)
        net._projections = list(recipe.projections)
        net._regions = list(recipe.regions)
        net._frozen = recipe
        return net

    # -- building ----------------------------------------------------------------------------------------

    def population(self, name: str, size: int, model="lif_cond", *, excitatory: bool | None = None,
                   region: str | None = None, v0_mean_mv: float = -60.0, v0_sd_mv: float = 4.0,
                   **params) -> PopulationView:
        """Add ``size`` neurons of one model.

        Parameters
        ----------
        name : str
            Unique.
        size : int
        model : str or LifCond or IafPscExp
            'lif_cond' (the DTB neuron, without background current unless `drive` adds one) or
            'iaf_psc_exp' (NEST's); or a parameter object. One model per network.
        excitatory : bool, optional
            Default: True unless ``name`` starts with "I".
        region : str, optional
            Region (for region rates and BOLD); default a region of its own, named like it.
        v0_mean_mv, v0_sd_mv : float
            Initial membrane potential, normal.
        **params
            Fields of the model's parameter object (`dtb.model.neurons`), e.g. ``tau_m_ms=20.0``.

        Returns
        -------
        PopulationView
        """
        self._thaw("population")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"population name {name!r}: must be a non-empty string")
        if region is not None and (not isinstance(region, str) or not region):
            raise ConfigError(f"population {name!r}: region {region!r}: must be a non-empty string")
        v0_mean_mv = real(f"population {name!r}: v0_mean_mv", v0_mean_mv)
        v0_sd_mv = real(f"population {name!r}: v0_sd_mv", v0_sd_mv, ge=0.0)
        if any(p.name == name for p in self._pops):
            raise ConfigError(f"population {name!r} exists already")
        size = _count(f"population {name!r}: size", size)
        if isinstance(model, str):
            if model not in NEURON_MODELS:
                raise ConfigError(f"population {name!r}: model {model!r}: one of {', '.join(NEURON_MODELS)}")
            base = NEURON_MODELS[model](ou_mu=0.0, ou_sigma=0.0) if model == "lif_cond" else NEURON_MODELS[model]()
        elif isinstance(model, tuple(NEURON_MODELS.values())):
            base = model
        else:
            raise UsageError(f"population {name!r}: model must be a name or a LifCond/IafPscExp, not {model!r}")
        fields = {f.name for f in dataclasses.fields(base)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ConfigError(f"population {name!r}: {base.model} has no parameter {', '.join(unknown)} (it has: "
                              f"{', '.join(sorted(fields))})")
        neuron = dataclasses.replace(base, **params)
        if self._pops and neuron.model != self._pops[0].neuron.model:
            raise ConfigError(f"population {name!r}: model {neuron.model!r}, but this network's neurons are "
                              f"{self._pops[0].neuron.model!r} (one model per network)")
        region = name if region is None else region
        if region not in self._regions:
            self._regions.append(region)
        exc = not name.upper().startswith("I") if excitatory is None else bool(excitatory)
        self._pops.append(Population(name, int(size), exc, self._regions.index(region), neuron, float(v0_mean_mv),
                                     float(v0_sd_mv)))
        return self._view(len(self._pops) - 1)

    def connect(self, sources, targets, rule: str = "fixed_in_degree", *, k: int | None = None,
                n: int | None = None, weight: float, weight_sd: float = 0.0, delay_ms: float,
                delay_sd_ms: float = 0.0) -> None:
        """Connect ``sources`` to each of ``targets`` (whole populations).

        Parameters
        ----------
        sources, targets : PopulationView or list of them
            Each synapse draws its source population in proportion to their sizes, then a neuron
            uniformly inside it (multapses and autapses allowed).
        rule : {'fixed_in_degree', 'fixed_total_number'}
            Every target neuron gets ``k`` synapses; or each target population gets ``n`` synapses,
            on targets drawn uniformly.
        weight, weight_sd : float
            Normal weights (redrawn to keep the sign of the mean); model units (see the module).
        delay_ms, delay_sd_ms : float
            Normal delays (redrawn outside [one step, mean + 8 sd]); at least one step.
        """
        self._thaw("connect")
        srcs, tgts = self._own(sources, "connect sources"), self._own(targets, "connect targets")
        if not all(v.whole for v in srcs + tgts):
            raise UsageError("connect: give whole populations (a selection like e[:10] is for recording and "
                             "stimuli)")
        if rule not in RULES:
            raise ConfigError(f"connect: rule {rule!r}: one of {', '.join(RULES)}")
        count = _count(f"connect: rule {rule!r} needs {'k' if rule == 'fixed_in_degree' else 'n'}",
                       k if rule == "fixed_in_degree" else n)
        weight, weight_sd = self._weight("connect: weight", weight), real("connect: weight_sd", weight_sd, ge=0.0)
        delay_ms, delay_sd_ms = real("connect: delay_ms", delay_ms), real("connect: delay_sd_ms", delay_sd_ms, ge=0.0)
        if delay_ms < self.dt_ms - 1e-12:
            raise ConfigError(f"connect: delay_ms = {delay_ms:g}: at least one step (dt_ms = {self.dt_ms:g})")
        idx = np.array([v.index for v in srcs], dtype=np.int64)
        if len(set(idx.tolist())) != len(idx):
            raise ConfigError("connect: a source population is given twice")
        sizes = np.array([v.size for v in srcs], dtype=np.float64)
        for t in tgts:
            self._projections.append(Projection(
                t.index, idx, sizes / sizes.sum(), indegree=int(count) if rule == "fixed_in_degree" else 0,
                total=int(count) if rule == "fixed_total_number" else 0, weight_mean=float(weight),
                weight_sd=float(weight_sd), delay_ms=np.full(len(idx), float(delay_ms)),
                delay_sd_ms=float(delay_sd_ms)))

    def drive(self, targets, *, rate_hz: float | None = None, k: int = 1, weight: float | None = None,
              ou_mu_mv_ms: float | None = None, ou_sigma_mv_ms: float | None = None,
              ou_tau_ms: float | None = None, i_e_pa: float | None = None) -> None:
        """Give ``targets`` an external drive.

        Parameters
        ----------
        targets : PopulationView or list of them (whole populations)
        rate_hz, k, weight : float, int, float
            Independent Poisson input: ``k`` sources of ``rate_hz`` each, of ``weight`` (model units)
            onto the excitatory receptors.
        ou_mu_mv_ms, ou_sigma_mv_ms, ou_tau_ms : float, optional
            lif_cond: an Ornstein-Uhlenbeck background current (mean, stationary s.d. in mV/ms, time
            constant in ms).
        i_e_pa : float, optional
            iaf_psc_exp: a constant current (pA).
        """
        self._thaw("drive")
        views = self._own(targets, "drive targets")
        if not all(v.whole for v in views):
            raise UsageError("drive: give whole populations (use Session.stimulate for some neurons)")
        ou = dict(ou_mu=ou_mu_mv_ms, ou_sigma=ou_sigma_mv_ms, ou_tau_ms=ou_tau_ms)
        if rate_hz is None and all(v is None for v in ou.values()) and i_e_pa is None:
            raise ConfigError("drive: give rate_hz (with k and weight), an OU background (ou_mu_mv_ms, ...) or "
                              "i_e_pa")
        if rate_hz is not None:
            if weight is None:
                raise ConfigError("drive: a Poisson drive needs rate_hz >= 0, k >= 1 and a weight")
            rate_hz, k, weight = real("drive: rate_hz", rate_hz, ge=0.0), _count("drive: k", k), \
                self._weight("drive: weight", weight)
        from dtb.config import check_value

        if rate_hz is not None:
            check_value("pd14", "bg_rate_hz", rate_hz, "drive: rate_hz")
        for key, config_key, val in (("ou_mu_mv_ms", "bg_mu_mv_ms", ou_mu_mv_ms),
                                     ("ou_sigma_mv_ms", "bg_sigma_mv_ms", ou_sigma_mv_ms),
                                     ("ou_tau_ms", "bg_tau_ms", ou_tau_ms)):
            if val is not None:  # the bounds of the whole brain's OU background
                check_value("wholebrain", config_key, real(f"drive: {key}", val), f"drive: {key}")
        if i_e_pa is not None:
            real("drive: i_e_pa", i_e_pa)
        for v in views:
            p = self._pops[v.index]
            neuron = p.neuron
            changes = {key: float(val) for key, val in ou.items() if val is not None}
            if changes and neuron.model != "lif_cond":
                raise ConfigError(f"drive: an OU background is a lif_cond current; {p.name!r} is {neuron.model}")
            if i_e_pa is not None:
                if neuron.model != "iaf_psc_exp":
                    raise ConfigError(f"drive: i_e_pa is an iaf_psc_exp current; {p.name!r} is {neuron.model}")
                changes["i_e_pa"] = float(i_e_pa)
            p = dataclasses.replace(p, neuron=dataclasses.replace(neuron, **changes))
            if rate_hz is not None:
                p = dataclasses.replace(p, drive_rate_hz=float(rate_hz) * int(k), drive_weight=float(weight))
            self._pops[v.index] = p

    def _weight(self, what: str, weight) -> float:
        """``weight`` within its model's bounds: a trace jump of 0 to 1e3 for lif_cond (wholebrain.w_e_trace's
        bounds: the reversal potentials give the sign), at most 1e6 pA either way for iaf_psc_exp."""
        weight = real(what, weight)
        if self._pops and self._pops[0].neuron.model == "iaf_psc_exp":
            if abs(weight) > MAX_WEIGHT_PA:
                raise ConfigError(f"{what} = {weight!r}: must be a current of at most {MAX_WEIGHT_PA:g} pA either way")
            return weight
        from dtb.config import check_value

        return check_value("wholebrain", "w_e_trace", weight, f"{what} (lif_cond)")

    # -- reading -----------------------------------------------------------------------------------------

    def _own(self, x, what: str) -> list[PopulationView]:
        """``x`` as views of this network's populations; a `UsageError` for one of another network."""
        views = _views(x, what)
        for v in views:
            if v.owner is not self._owner:
                raise UsageError(f"{what}: population {v.name!r} is not one of this network's")
        return views

    def __getitem__(self, name: str) -> PopulationView:
        for i, p in enumerate(self._pops):
            if p.name == name:
                return self._view(i)
        raise ConfigError(f"no population {name!r} (populations: {', '.join(p.name for p in self._pops[:10])}"
                          f"{', ...' if len(self._pops) > 10 else ''})")

    @property
    def populations(self) -> list[PopulationView]:
        return [self._view(i) for i in range(len(self._pops))]

    @property
    def n_neurons(self) -> int:
        return sum(p.size for p in self._pops)

    def _view(self, i: int) -> PopulationView:
        p = self._pops[i]
        return PopulationView(i, p.name, p.size, owner=self._owner)

    def _thaw(self, what: str) -> None:
        self._frozen = None

    def recipe(self) -> Recipe:
        """The network as a frozen, validated `Recipe`."""
        if self._frozen is None:
            if not self._pops:
                raise ConfigError("the network has no population")
            if not self._projections:  # the epoch length is the shortest delay: there must be one
                raise ConfigError("the network has no connection: connect its populations (Network.connect)")
            self._frozen = Recipe(model=self.name, populations=tuple(self._pops),
                                  projections=tuple(self._projections), regions=tuple(self._regions),
                                  dt_ms=self.dt_ms)
        return self._frozen

    def __repr__(self) -> str:
        return (f"<Network {self.name!r}: {len(self._pops)} populations, {self.n_neurons:,} neurons, "
                f"{len(self._projections)} projections, dt {self.dt_ms:g} ms, seed {self.seed}>")


def as_recipe(network) -> tuple[Recipe, int]:
    """(recipe, seed) of a `Network` or a `Recipe` (seed 1); a `UsageError` for anything else."""
    if isinstance(network, Network):
        return network.recipe(), network.seed
    if isinstance(network, Recipe):
        return network, 1
    raise UsageError(f"expected a dtb.Network (or Recipe), got {type(network).__name__}")
