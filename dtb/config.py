"""Typed, validated run configuration: TOML files plus ``--set section.key=value``.

Every key is a dataclass field below with its default, type, allowed range and a
one-line description; `describe()` renders them for the README and ``dtb run
--help-config``. A bad value raises `ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import tomli_w

from dtb.errors import ConfigError
from dtb.model.registry import MODELS
from dtb.partition.balance import DEFAULT_STRATEGY, STRATEGIES

SEED_MAX = 2**32 - 1
#: a config file larger than this is not one (its per-region values come from files of their own)
MAX_CONFIG_BYTES = 16 * 2**20


def _key(default, doc, *, gt=None, ge=None, le=None, lt=None, choices=None, per_region=False, names=False,
         values=False):
    # values: a list of numbers (a tuple default); otherwise a tuple default is a pair [lo, hi]
    return field(default=default, metadata=dict(doc=doc, gt=gt, ge=ge, le=le, lt=lt, choices=choices,
                                                per_region=per_region, names=names, values=values))


#: keys renamed so that their units are in their names (or moved to where they belong): old name -> new name (the
#: old ones still read)
RENAMED = {"wholebrain.w_e": "wholebrain.w_e_trace", "wholebrain.w_i": "wholebrain.w_i_trace",
           "wholebrain.bg_mu": "wholebrain.bg_mu_mv_ms", "wholebrain.bg_sigma": "wholebrain.bg_sigma_mv_ms",
           "assimilation.replay_n_neurons": "validation.n_neurons"}


@dataclass(frozen=True)
class SimulationConfig:
    t_ms: float = _key(1000.0, "biological time to simulate (ms)", gt=0.0, le=1e9)
    dt_ms: float = _key(0.1, "integration time step (ms)", ge=1e-4, le=1.0)
    seed: int = _key(1, "seed of every random draw (network, initial state, noise)", ge=0, le=SEED_MAX)
    backend: str = _key("cpu", "compute backend: numba CPU kernels, the CUDA kernels on a GPU (one per rank), auto "
                        "(the GPU if there is one), or gpu_emulated (the CUDA kernels built for the host with nvcc: "
                        "slow, for testing)", choices=("cpu", "gpu", "auto", "gpu_emulated"))
    threads: int = _key(0, "CPU threads per rank for the kernels; 0 = the node's cores / ranks on the node",
                        ge=0, le=4096)
    partition: str = _key(DEFAULT_STRATEGY, "how neurons are split over MPI ranks: regions to nodes, then ranks "
                          "(see dtb partition and docs/concepts/partitioning.md)", choices=STRATEGIES)
    exchange: str = _key("alltoall", "spike exchange over MPI: flat all-to-all, two-level (across nodes, then "
                         "inside them), or dry_run (one process measures the traffic of dry_run_ranks ranks)",
                         choices=("alltoall", "two_level", "dry_run"))
    dry_run_ranks: int = _key(64, "ranks the dry-run exchange pretends to have", ge=1, le=10_000_000)
    checkpoint_ms: float = _key(0.0, "write the run's full state to <out>.partial every this much biological time "
                                "(ms), so that dtb run --resume can finish a stopped run; 0 = never", ge=0.0, le=1e9)
    memory_check: bool = _key(True, "before building, refuse a run whose ranks cannot hold their part in memory")
    compact_weights: bool = _key(True, "store each synapse's weight as a code in its 4-byte word where that is exact "
                                 "or within 1e-3 of the smallest mean weight (else, or false: float32 weights "
                                 "beside the target, 8 bytes)")
    cuda_graphs: bool = _key(True, "GPU backend, one rank: replay epochs as captured CUDA graphs (false: launch "
                             "each kernel, and phase_s splits delivery from update)")
    ranks_per_node: int = _key(0, "for the two-level exchange: 0 = ranks sharing memory form a node, else blocks "
                               "of this many consecutive ranks", ge=0, le=100_000)


@dataclass(frozen=True)
class RecordingConfig:
    spikes: bool = _key(True, "record spikes (SONATA layout): true (every population), false, or a list of "
                        "population or region names", names=True)
    rate_bin_ms: float = _key(1.0, "bin width of the recorded population rates (ms)", gt=0.0, le=1e6)
    flush_ms: float = _key(100.0, "write recording buffers to the run file every this much biological time (ms)",
                           gt=0.0, le=1e9)
    progress: bool = _key(True, "show a progress bar on long phases (stderr)")
    bold: bool = _key(False, "compute each region's BOLD signal (see [bold]) and store it as /bold")
    stitch: str = _key("copy", "a many-rank run file: 'copy' the ranks' spikes into it at the end (self-contained); "
                       "'virtual' = virtual datasets over the ranks' files, which stay beside it in <out>.parts",
                       choices=("copy", "virtual"))
    state: dict = field(default_factory=dict, metadata=dict(
        doc="state variables to record: {v_mv = {populations = [...], every_ms = 1.0, max_neurons = 100}}; "
            "variables v_mv, i_bg_mv_ms, j_ampa, j_nmda, j_gaba_a, j_gaba_b (lif_cond), i_ex_pa, i_in_pa "
            "(iaf_psc_exp); stored as /state/<variable> with units", state=True))


@dataclass(frozen=True)
class WholebrainConfig:
    n_neurons: int = _key(100_000, "total neurons over all regions", ge=200, le=10**12)
    in_degree: int = _key(100, "incoming synapses per neuron (fixed in-degree K)", ge=7, le=100_000)
    subject: str = _key("101309", "subject id inside the connectome file")
    connectome: str = _key("", "connectome: dtb's HDF5, a TVB connectivity (.zip or its folder), or a weights "
                           "matrix (.csv/.tsv/.txt as MRtrix3 writes it, .npy, .mat as DSI Studio writes it); "
                           "relative to the config file; empty = bundled HCP/AAL2")
    lengths_file: str = _key("", "fibre lengths (mm) of a weights-matrix connectome: a matrix file of the same "
                             "layout; empty = from the connectome (TVB: tract_lengths, else the centres' distance)")
    labels_file: str = _key("", "region names of a weights-matrix connectome, one per line or a lookup table "
                            "(index name ...); empty = from the file's header, else R000, R001, ...")
    sizes_file: str = _key("", "region sizes (neurons are allotted in proportion): one number per line in region "
                           "order or label,value rows; empty = from the connectome (nvoxel, TVB areas), else uniform "
                           "with a warning")
    sc_rows: str = _key("targets", "rows of the connectome's matrices: 'targets' (sc[i, j] is from j to i, TVB's and "
                        "dtb's convention) or 'sources' (the Brain Connectivity Toolbox's); a triangular matrix is "
                        "mirrored", choices=("targets", "sources"))
    sc_normalisation: str = _key("row", "how sc becomes long-range source probabilities: 'row' = sc[i, j] / sum_j "
                                 "sc[i, j]; 'waytotal' = sc[i, j] / waytotal[j], then row-normalised",
                                 choices=("row", "waytotal"))
    e_fraction: float = _key(0.8, "fraction of each region's neurons that are excitatory", ge=0.001, le=0.999)
    k_local_e: float = _key(4 / 7, "share of K from the own region's E population", ge=0.0, le=1.0)
    k_local_i: float = _key(1 / 7, "share of K from the own region's I population (long-range gets the rest)",
                            ge=0.0, le=1.0)
    conduction_velocity_m_s: float = _key(5.0, "axonal conduction velocity for long-range delays (m/s = mm/ms)",
                                          ge=0.01, le=1000.0)
    local_delay_ms: float = _key(1.0, "delay of synapses inside a region (ms)", gt=0.0, le=1000.0)
    coupling: float = _key(1.0, "global coupling G: weight of a long-range synapse relative to a local excitatory "
                           "one (w_e_trace of the target region)", ge=0.0, le=1e3)
    w_e_trace: float = _key(0.4, "weight of an excitatory synapse: jump of the AMPA and NMDA traces (1); per "
                            "region: a list, a table by region label, or a CSV/TSV file of label,value rows", ge=0.0,
                            le=1e3, per_region=True)
    w_i_trace: float = _key(2.0, "weight of an inhibitory synapse: jump of the GABA-A and GABA-B traces (1); per "
                            "region as w_e_trace", ge=0.0, le=1e3, per_region=True)
    bg_mu_mv_ms: float = _key(0.7, "mean of the OU background current (mV/ms, C = 1); per region as w_e_trace",
                              ge=-100.0, le=100.0, per_region=True)
    bg_sigma_mv_ms: float = _key(0.25, "stationary s.d. of the OU background current (mV/ms); per region as "
                                 "w_e_trace", ge=0.0, le=100.0, per_region=True)
    bg_tau_ms: float = _key(5.0, "time constant of the OU background current (ms); per region as w_e_trace",
                            gt=0.0, le=1e4, per_region=True)


@dataclass(frozen=True)
class PD14Config:
    n_scale: float = _key(0.1, "fraction of the full-scale neuron counts", gt=0.0, le=1.0)
    k_scale: float = _key(1.0, "fraction of the full-scale in-degrees (DC compensation below 1)", ge=1e-4, le=1.0)
    background: str = _key("poisson", "external drive: Poisson spikes or the equivalent DC current",
                           choices=("poisson", "dc"))
    bg_rate_hz: float = _key(8.0, "rate of each external Poisson source (Hz)", ge=0.0, le=1e4)


@dataclass(frozen=True)
class HyperConfig:
    """Region hyperparameters of the lif_cond model: gains on neuron parameters (see dtb.model.hyper)."""

    gamma_alpha: float = _key(0.0, "shape of the Gamma(alpha, alpha) spread of each neuron's gains around its "
                              "region's value (mean 1, variance 1/alpha); 0 = no spread (the DTB used about 5)",
                              ge=0.0, le=1e6)
    g_ampa: float = _key(1.0, "region gain of the AMPA conductance (initial value when assimilated); per region as "
                         "wholebrain.w_e_trace", gt=0.0, le=1e3, per_region=True)
    g_nmda: float = _key(1.0, "region gain of the NMDA conductance; per region likewise", gt=0.0, le=1e3,
                         per_region=True)
    g_gaba_a: float = _key(1.0, "region gain of the GABA-A conductance; per region likewise", gt=0.0, le=1e3,
                           per_region=True)
    g_gaba_b: float = _key(1.0, "region gain of the GABA-B conductance; per region likewise", gt=0.0, le=1e3,
                           per_region=True)
    i_bg: float = _key(1.0, "region gain of the background current's mean (wholebrain.bg_mu_mv_ms); per region "
                       "likewise", gt=0.0, le=1e3, per_region=True)


@dataclass(frozen=True)
class BoldConfig:
    tr_ms: float = _key(720.0, "sampling interval of the recorded BOLD signal (ms; a multiple of 1 ms)", gt=0.0,
                        le=1e6)
    params: str = _key("dtb", "Balloon-Windkessel parameter set", choices=("dtb", "friston2003"))
    eps: float = _key(0.0, "neuronal efficacy: gain of the firing fraction per ms on the vasodilatory signal "
                      "(1/s^2); 0 = the parameter set's (dtb 200, friston2003 32.8), else >= 0.001", ge=0.0, le=1e6)


@dataclass(frozen=True)
class AssimilationConfig:
    members: int = _key(32, "ensemble members (disjoint copies of the brain in one simulation)", ge=2, le=100_000)
    trs: int = _key(200, "TRs of the recording to assimilate (from the first)", ge=3, le=10**7)
    fit: str = _key("g_ampa,g_gaba_a,i_bg", "comma-separated hyperparameters to fit, from: g_ampa, g_nmda, "
                    "g_gaba_a, g_gaba_b, i_bg")
    g_ampa_bounds: tuple = _key((0.5, 2.0), "bounds [lo, hi] of the fitted AMPA gain", ge=0.0, le=1e3)
    g_nmda_bounds: tuple = _key((0.5, 2.0), "bounds of the fitted NMDA gain", ge=0.0, le=1e3)
    g_gaba_a_bounds: tuple = _key((0.5, 2.0), "bounds of the fitted GABA-A gain", ge=0.0, le=1e3)
    g_gaba_b_bounds: tuple = _key((0.5, 2.0), "bounds of the fitted GABA-B gain", ge=0.0, le=1e3)
    i_bg_bounds: tuple = _key((0.7, 1.3), "bounds of the fitted background-current gain", ge=0.0, le=1e3)
    prior_sd: float = _key(0.5, "s.d. of the initial ensemble around the [hyper] values (logit units)", ge=0.0,
                           le=100.0)
    walk_sd: float = _key(0.15, "s.d. of the random walk of each hyperparameter per TR (logit units)", ge=0.0,
                          le=100.0)
    obs_var: float = _key(4e-6, "observation error variance of the scaled BOLD (the DTB used 1e-8 on [0.02, 0.05])",
                          ge=1e-30, le=1.0)
    local_weight: float = _key(1.0, "weight of the per-region update (the global update gets the rest)", ge=0.0,
                               le=1.0)
    inflation: float = _key(1.05, "multiplicative inflation of the prior ensemble anomalies", ge=1.0, le=100.0)
    inflate_hyper: bool = _key(False, "apply the inflation to the hyperparameters too; false: only to the "
                               "hemodynamic states and BOLD (the random walk alone keeps the hyperparameters' spread)")
    hemodynamics: str = _key("separate", "how the filter treats the hemodynamic states: 'joint' = updated with the "
                             "hyperparameters, as the DTB (the correction erases, every TR, the BOLD that a "
                             "member's hyperparameters built up); 'separate' = a dual filter: the hyperparameters "
                             "are updated from each member's own, never corrected BOLD, and a second copy of the "
                             "hemodynamics, driven by the same activity, is corrected every TR and gives the prior, "
                             "posterior and 5-TR forecasts", choices=("joint", "separate"))
    sweep_coupling: tuple = _key((), "global couplings G (wholebrain.coupling) the ensemble tries before the filter: "
                                 "its members, spread over every pair of these and sweep_w_i_trace, run free on the "
                                 "fit window; the pair whose FC is closest to the fit window's is kept for the filter "
                                 "and the twin; empty = the [wholebrain] value", ge=0.0, le=1e3, values=True)
    sweep_w_i_trace: tuple = _key((), "inhibitory weights (wholebrain.w_i_trace, one for every region) the sweep tries "
                                  "with each coupling; empty = the [wholebrain] value", ge=0.0, le=1e3, values=True)
    smoother_trs: int = _key(8, "fixed-lag smoother: each TR's observation also updates the hyperparameters of "
                             "this many earlier TRs (BOLD answers a rate change seconds later); the recorded "
                             "hyperparameters and the replay use these smoothed values; 0 = filter only", ge=0,
                             le=1000)
    preprocess: bool = _key(True, "detrend, filter and scale the recorded BOLD, causally; false: use it as it is "
                            "(in model units, e.g. BOLD from a dtb run)")
    detrend_order: int = _key(0, "polynomial order fitted on the calibration window and removed from each "
                              "region's recorded BOLD (0 = its mean; an extrapolated slope drifts: the high-pass "
                              "edge removes slow trends)", ge=0, le=10)
    calibration_trs: int = _key(50, "the first TRs of the recording, read only to set each region's trend and scale "
                                "(so that every later observation depends on no later TR); not assimilated, not "
                                "scored", ge=2, le=10**7)
    band_lo_hz: float = _key(0.01, "high-pass edge of the causal Butterworth filter (Hz); 0 = none", ge=0.0,
                             le=1e3)
    band_hi_hz: float = _key(0.1, "low-pass edge (Hz); 0 = none", ge=0.0, le=1e3)
    obs_lo: float = _key(0.01, "each region's recorded BOLD is scaled to [obs_lo, obs_hi], the model's range",
                         ge=-1.0, le=1.0)
    obs_hi: float = _key(0.03, "upper end of the scaled BOLD", ge=-1.0, le=1.0)
    obs_baseline: str = _key("member", "where the scaled BOLD sits: 'range' = each region in [obs_lo, obs_hi]; "
                             "'model' = each region shifted so that its mean is the region's ensemble-mean model "
                             "BOLD at the end of the spin-up (its width stays obs_hi - obs_lo); 'member' = as "
                             "'model', spun up at the [hyper] values, and each member's BOLD meets it less that "
                             "member's level there minus the ensemble's (the members are different network draws)",
                             choices=("range", "model", "member"))
    spinup_ms: float = _key(2000.0, "simulated before the first TR; the hemodynamics then start at the steady "
                            "state of its last half's rates (ms)", ge=0.0, le=1e7)
    burn_in_trs: int = _key(10, "TRs after the calibration window left out of the metrics while the filter "
                            "converges", ge=0, le=10**7)
    forecast5_every: int = _key(20, "make a 5-TR-ahead forecast every this many TRs; 0 = never", ge=0, le=10**7)
    replay: bool = _key(True, "after the filter, replay one brain with the posterior-mean hyperparameters of each "
                        "assimilated TR (in-sample: its FC is scored on the TRs it was fitted on)")


@dataclass(frozen=True)
class ValidationConfig:
    trs: int = _key(0, "held-out TRs, after the assimilated ones: the fitted twin's FC and forecasts are judged on "
                    "them; 0 = all that is left of the recording", ge=0, le=10**7)
    forecast_trs: int = _key(100, "of these, the first this many get the ensemble's 1- and 5-TR-ahead forecasts with "
                             "the hyperparameters frozen (each costs an ensemble TR); 0 = none", ge=0, le=10**7)
    average_trs: int = _key(0, "the twin's hyperparameters: the posterior mean averaged over the last this many "
                            "assimilated TRs; 0 = the last half of those after the burn-in", ge=0, le=10**7)
    n_neurons: int = _key(0, "neurons of the twin, the unfitted baseline and the in-sample replay (the "
                          "hyperparameters are per region, so they carry over to any size; more neurons per region, "
                          "less finite-size noise in the FC); 0 = wholebrain.n_neurons, a member's size", ge=0,
                          le=10**10)


@dataclass(frozen=True)
class Config:
    """A complete, validated run configuration.

    Build one with `load_config`; the resolved values are written into every run file.
    """

    model: str = _key("wholebrain", "which network to build (a built-in model, dtb.model.registry)",
                      choices=tuple(MODELS))
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    wholebrain: WholebrainConfig = field(default_factory=WholebrainConfig)
    pd14: PD14Config = field(default_factory=PD14Config)
    hyper: HyperConfig = field(default_factory=HyperConfig)
    bold: BoldConfig = field(default_factory=BoldConfig)
    assimilation: AssimilationConfig = field(default_factory=AssimilationConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    #: the [[stimulus]] tables: dicts of populations, amplitude, start_ms, stop_ms
    stimulus: tuple = ()

    def to_dict(self) -> dict:
        """Plain nested dict of every key."""
        out = {}
        for f in dataclasses.fields(Config):
            val = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(val) if dataclasses.is_dataclass(val) else val
        out["stimulus"] = [dict(s) for s in self.stimulus]
        if not out["stimulus"]:
            del out["stimulus"]
        return out

    def to_toml(self) -> str:
        """The resolved configuration as TOML text (what run files store)."""
        return tomli_w.dumps(self.to_dict())

    def connectome_path(self) -> Path | None:
        """Absolute path of the user's connectome file (resolved by `load_config`), or None for the bundled one."""
        return Path(self.wholebrain.connectome) if self.wholebrain.connectome else None

    def connectome_files(self) -> list[Path]:
        """Every file the connectome is read from (the bundled one, a TVB folder's files, the lengths, labels and
        sizes files): what a run may not overwrite and a resume must find unchanged."""
        from dtb.connectome.connectome import bundled_connectome_path

        files = []
        for key in CONNECTOME_FILES:
            value = getattr(self.wholebrain, key)
            if value:
                path = Path(value)
                files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        return files or [bundled_connectome_path()]

    def region_value_files(self) -> list[Path]:
        """The CSV/TSV files per-region values are read from (``w_e_trace = "we.csv"``, ...): inputs too."""
        files = []
        for section, kind in _SECTION_TYPES.items():
            for f in dataclasses.fields(kind):
                value = getattr(getattr(self, section), f.name)
                if f.metadata.get("per_region") and isinstance(value, str):
                    files.append(Path(value))
        return sorted(set(files))


#: most values of one swept key (assimilation.sweep_*)
MAX_SWEEP = 64

#: [wholebrain] keys that name input files (resolved against the config file's folder)
CONNECTOME_FILES = ("connectome", "lengths_file", "labels_file", "sizes_file")

_SECTION_TYPES = {"simulation": SimulationConfig, "recording": RecordingConfig,
                  "wholebrain": WholebrainConfig, "pd14": PD14Config, "hyper": HyperConfig, "bold": BoldConfig,
                  "assimilation": AssimilationConfig, "validation": ValidationConfig}


def _allowed(meta, kind) -> str:
    if meta.get("values"):
        return f"a list of at most {MAX_SWEEP} numbers, each {meta['ge']:g} to {meta['le']:g} (may be empty)"
    if kind is tuple:
        return f"a pair [lo, hi] of numbers with {meta['ge']:g} <= lo < hi <= {meta['le']:g}"
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    parts = []
    for op, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(op) is not None:
            parts.append(f"{sym} {meta[op]:,}" if kind is int else f"{sym} {meta[op]:g}")
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
    return name + (" " + " and ".join(parts) if parts else "")


def _number(x) -> float | None:
    """``x`` as a float; None if it is no number (a bool, a string) or an integer too large for a float."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        return float(x)
    except OverflowError:
        return None


def _coerce(name: str, value: Any, f: dataclasses.Field, base_dir: Path | None = None) -> Any:
    kind = type(f.default)
    meta = f.metadata
    if meta.get("per_region") and isinstance(value, (list, dict, str)) and not isinstance(value, bool):
        return _coerce_per_region(name, value, f, base_dir or Path.cwd())
    if meta.get("names") and isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} = {value!r}: must be true, false or a non-empty list of population names")
        return list(value)
    if meta.get("state"):
        return _coerce_state(name, value)
    ok = True
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        number = _number(value)
        ok = number is not None
        value = number if ok else value
    elif kind is tuple and meta.get("values"):
        numbers = tuple(_number(x) for x in value) if isinstance(value, (list, tuple)) else (None,)
        ok = len(numbers) <= MAX_SWEEP and None not in numbers
        if not ok or not all(meta["ge"] <= x <= meta["le"] for x in numbers) or len(set(numbers)) < len(numbers):
            raise ConfigError(f"{name} = {value!r}: must be {_allowed(meta, kind)}, without repeats")
        return numbers
    elif kind is tuple:
        pair = tuple(_number(x) for x in value) if isinstance(value, (list, tuple)) else ()
        ok = len(pair) == 2 and None not in pair
        if ok:
            value = pair
            ok = meta["ge"] <= value[0] < value[1] <= meta["le"]
        if not ok:
            raise ConfigError(f"{name} = {value!r}: must be {_allowed(meta, kind)}")
        return value
    elif kind is str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # subject ids look like numbers: subject = 102311
        ok = isinstance(value, str)
    if ok and meta.get("choices") is not None:
        ok = value in meta["choices"]
    if ok and kind is float and 0 < abs(value) < sys.float_info.min:
        # a subnormal passes "> 0" but loses its digits and overflows what divides by it (1 / 1e-320 = inf)
        raise ConfigError(f"{name} = {value!r}: below the smallest normal float ({sys.float_info.min:.1e}); "
                          f"must be {_allowed(meta, kind)}")
    if ok and kind in (int, float):
        ok = ((meta.get("gt") is None or value > meta["gt"]) and (meta.get("ge") is None or value >= meta["ge"])
              and (meta.get("lt") is None or value < meta["lt"]) and (meta.get("le") is None or value <= meta["le"]))
        ok = ok and value == value  # NaN
    if not ok:
        raise ConfigError(f"{name} = {value!r}: must be {_allowed(meta, kind)}")
    return value


def _coerce_per_region(name: str, value, f: dataclasses.Field, base_dir: Path):
    """A per-region value: a list of numbers, a table {label = number}, or a CSV/TSV file (stored absolute)."""
    if isinstance(value, str):
        try:
            return str((base_dir / value).resolve())
        except (OSError, RuntimeError, ValueError) as err:  # a link loop, a name too long, a NUL byte
            raise ConfigError(f"{name} = {value[:200]!r}: not a usable path ({getattr(err, 'strerror', None) or err})") \
                from None
    items = value.items() if isinstance(value, dict) else enumerate(value)
    if not value:
        raise ConfigError(f"{name} = {value!r}: an empty list or table")
    out = {}
    for key, v in items:
        plain = SimpleNamespace(default=f.default, metadata={**f.metadata, "per_region": False})
        out[key] = _coerce(f"{name}[{key!r}]", v, plain)
    return out if isinstance(value, dict) else [out[i] for i in range(len(value))]


def _coerce_state(name: str, value) -> dict:
    """``recording.state``: {variable: {populations = [names], every_ms = number, max_neurons = int}}."""
    if not isinstance(value, dict):
        raise ConfigError(f"{name} = {value!r}: must be a table {{variable = {{populations = [...]}}}}")
    out = {}
    for var, spec in value.items():
        where = f"{name}.{var}"
        if not isinstance(spec, dict) or set(spec) - {"populations", "every_ms", "max_neurons"}:
            raise ConfigError(f"{where} = {spec!r}: a table with populations, every_ms and max_neurons")
        pops = spec.get("populations")
        if not (isinstance(pops, list) and pops and all(isinstance(p, str) for p in pops)):
            raise ConfigError(f"{where}.populations = {pops!r}: a non-empty list of population names")
        every = spec.get("every_ms", 1.0)
        most = spec.get("max_neurons", 100)
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0 < every <= 1e6:
            raise ConfigError(f"{where}.every_ms = {every!r}: must be a number > 0 and <= 1e6")
        if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= 10**6:
            raise ConfigError(f"{where}.max_neurons = {most!r}: must be an integer >= 1 and <= 1,000,000")
        out[var] = dict(populations=list(pops), every_ms=float(every), max_neurons=most)
    return out


def _coerce_stimuli(value) -> tuple:
    """``[[stimulus]]`` tables: populations (or regions), amplitude, start_ms, stop_ms."""
    if not isinstance(value, list):
        raise ConfigError("stimulus: write each as a [[stimulus]] table")
    out = []
    for i, stim in enumerate(value):
        where = f"stimulus[{i}]"
        need = {"populations", "amplitude", "start_ms", "stop_ms"}
        if not isinstance(stim, dict) or set(stim) != need:
            raise ConfigError(f"{where}: needs exactly the keys {', '.join(sorted(need))}")
        pops = stim["populations"]
        if not (isinstance(pops, list) and pops and all(isinstance(p, str) for p in pops)):
            raise ConfigError(f"{where}.populations = {pops!r}: a non-empty list of population or region names")
        nums = {k: _number(stim[k]) for k in ("amplitude", "start_ms", "stop_ms")}
        if any(v is None or not abs(v) < float("inf") for v in nums.values()):  # NaN fails too
            raise ConfigError(f"{where}: amplitude, start_ms and stop_ms must be finite numbers")
        if not 0 <= nums["start_ms"] < nums["stop_ms"]:
            raise ConfigError(f"{where}: need 0 <= start_ms < stop_ms")
        out.append(dict(populations=list(pops), **{k: float(v) for k, v in nums.items()}))
    return tuple(out)


def check_value(section: str, key: str, value, where: str) -> float:
    """``value`` as key ``section.key`` allows it (a `ConfigError` naming ``where`` otherwise): for per-region values
    read from a file, which the TOML parser never saw, and for the Python API's arguments. A key the section does
    not have is returned as given."""
    f = next((f for f in dataclasses.fields(_SECTION_TYPES[section]) if f.name == key), None)
    if f is None:
        return value
    plain = SimpleNamespace(default=f.default, metadata={**f.metadata, "per_region": False})
    return _coerce(where, value, plain)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        doc = tomllib.loads(f"v = {text.strip()}")
    except (ValueError, RecursionError):  # TOMLDecodeError, an integer of over 4,300 digits, deep nesting
        doc = {"v": text.strip()}  # a bare word is a string: --set model=pd14
        if not doc["v"].isprintable():
            raise ConfigError(f"--set {item[:200]!r}: a bare value may not hold control characters (quote it as "
                              "a TOML string)") from None
    if list(doc) != ["v"]:  # "a"\nmodel = "pd14" would set a second key unseen
        raise ConfigError(f"--set {item[:200]!r}: the value must be one TOML value")
    return key.split("."), doc["v"]


#: the settings ``dtb assimilate`` starts from (benchmarks/assimilation.py validates them)
ASSIMILATION_DEFAULTS = Path(__file__).parent / "data" / "assimilation.toml"


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                text: str | None = None, defaults: str | Path | None = None) -> Config:
    """Read, merge and validate a run configuration.

    Relative paths in it (``wholebrain.connectome``) are resolved against the config
    file's folder (the working directory for ``--set`` and ``text``) and stored absolute.

    Parameters
    ----------
    path : str or Path, optional
        TOML file; missing keys take their defaults. None: defaults only.
    overrides : list of str
        ``"section.key=value"`` items applied after the file, in order; values are
        TOML literals (``1e5``, ``true``, ``"x"``) or bare strings.
    text : str, optional
        TOML text used instead of ``path`` (the config stored in a run file).
    defaults : str or Path, optional
        TOML file read before ``path``: a command's own defaults (`ASSIMILATION_DEFAULTS`), which
        the file and the overrides override.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Unknown key, wrong type, value out of range, unreadable file.
    """
    raw: dict = {}
    base_dir = Path.cwd()
    where = "--set"
    if text is not None:
        try:
            raw = tomllib.loads(text)
        except (ValueError, RecursionError) as err:  # TOMLDecodeError, a 4,300-digit integer, deep nesting
            raise ConfigError(f"stored config is not valid TOML: {err}") from None
        where = "stored config"
    elif path is not None:
        if str(path) == "":  # Path("") would be the current folder
            raise ConfigError("the config path is empty (leave it out for the defaults)")
        path = Path(path)
        try:
            base_dir = path.resolve().parent
            if path.exists() and not path.is_file():  # a FIFO would block, a device read forever
                raise ConfigError(f"config file {str(path)!r} is not a regular file")
            if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"config file {str(path)!r} is {path.stat().st_size:,} bytes: not a dtb config "
                                  f"(at most {MAX_CONFIG_BYTES:,})")
            content = path.read_text(encoding="utf-8-sig")  # TOML is UTF-8; a spreadsheet's BOM is dropped
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
        except (OSError, ValueError, RuntimeError) as err:  # a name too long, a NUL byte, a link loop
            why = getattr(err, "strerror", None) or err
            raise ConfigError(f"config file {str(path)[:200]!r} cannot be read ({why})") from None
        try:
            raw = tomllib.loads(content)
        except (ValueError, RecursionError) as err:  # TOMLDecodeError, a 4,300-digit integer, deep nesting
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
        where = str(path)
    values: dict[str, Any] = {}  # "section.key" -> value
    spelled: dict[tuple[str, str], str] = {}  # (origin, "section.key") -> the name it was given under there
    deprecated: list[str] = []  # warned once every key is read: a key given under both names gets its error alone

    def put(parts: list[str], value: Any, origin: str) -> None:
        name = ".".join(parts)
        key = RENAMED.get(name, name)
        if spelled.setdefault((origin, key), name) != name:  # one file, or the --set items, giving both names
            old = name if name in RENAMED else spelled[origin, key]
            raise ConfigError(f"{origin}: both {old} and {key} are given: {old} is the deprecated name of {key} "
                              "(which one is meant cannot be told); give only " + key)
        if name in RENAMED:
            deprecated.append(f"{origin}: {name} is deprecated, use {key} (same meaning, units in the name)")
            name, parts = key, key.split(".")
        if parts in (["model"], ["stimulus"]):
            values[name] = value
            return
        if len(parts) != 2 or parts[0] not in _SECTION_TYPES:
            raise ConfigError(f"{origin}: unknown key {name!r} (sections: model, {', '.join(_SECTION_TYPES)})")
        known = {f.name for f in dataclasses.fields(_SECTION_TYPES[parts[0]])}
        if parts[1] not in known:
            raise ConfigError(f"{origin}: unknown key {name!r} (known in [{parts[0]}]: {', '.join(sorted(known))})")
        values[name] = value

    layers = [(tomllib.loads(Path(defaults).read_text()), str(defaults))] if defaults is not None else []
    for table, origin in [*layers, (raw, where)]:
        for top, val in table.items():
            if isinstance(val, dict):
                for k, v in val.items():
                    put([top, k], v, origin)
            else:
                put([top], val, origin)
    for item in overrides:
        parts, value = _parse_override(item)
        put(parts, value, "--set")
    if deprecated:
        import warnings

        for text in deprecated:
            warnings.warn(text, FutureWarning, stacklevel=3)

    model_field = next(f for f in dataclasses.fields(Config) if f.name == "model")
    model = _coerce("model", values.get("model", model_field.default), model_field)
    sections = {}
    for sec, cls in _SECTION_TYPES.items():
        kwargs = {}
        for f in dataclasses.fields(cls):
            name = f"{sec}.{f.name}"
            if name in values:
                kwargs[f.name] = _coerce(name, values[name], f, base_dir)
        sections[sec] = cls(**kwargs)
    for key in CONNECTOME_FILES:
        value = getattr(sections["wholebrain"], key)
        if value:
            try:
                resolved = str((base_dir / value).resolve())
            except (OSError, RuntimeError, ValueError) as err:  # a link loop, a name too long, a NUL byte
                raise ConfigError(f"wholebrain.{key} = {value[:200]!r}: not a usable "
                                  f"path ({getattr(err, 'strerror', None) or err})") from None
            sections["wholebrain"] = dataclasses.replace(sections["wholebrain"], **{key: resolved})
    cfg = Config(model=model, stimulus=_coerce_stimuli(values.get("stimulus", [])), **sections)
    wb = cfg.wholebrain
    if wb.k_local_e + wb.k_local_i > 1.0 + 1e-12:
        raise ConfigError(f"wholebrain.k_local_e + wholebrain.k_local_i = {wb.k_local_e + wb.k_local_i:g}: "
                          "must be <= 1")
    steps = wb.local_delay_ms / cfg.simulation.dt_ms
    if cfg.model == "wholebrain" and (abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or round(steps) < 1):
        raise ConfigError(f"wholebrain.local_delay_ms = {wb.local_delay_ms:g}: must be a positive multiple of "
                          f"simulation.dt_ms = {cfg.simulation.dt_ms:g} (delays are whole steps)")
    if 0 < cfg.bold.eps < 1e-3:  # a BOLD signal of almost nothing: every scale and variance of it underflows
        raise ConfigError(f"bold.eps = {cfg.bold.eps:g}: must be 0 (the parameter set's) or >= 0.001")
    _check_assimilation(cfg)
    return cfg


def _check_assimilation(cfg: Config) -> None:
    from dtb.model.neurons import LIF_GAINS

    da = cfg.assimilation
    names = fitted(cfg)
    unknown = [n for n in names if n not in LIF_GAINS]
    if not names or unknown or len(set(names)) != len(names):
        raise ConfigError(f"assimilation.fit = {da.fit!r}: must name distinct hyperparameters from "
                          f"{', '.join(LIF_GAINS)}")
    if not da.obs_lo < da.obs_hi:
        raise ConfigError(f"assimilation.obs_lo = {da.obs_lo:g} must be < assimilation.obs_hi = {da.obs_hi:g}")
    if 0 < da.band_hi_hz <= da.band_lo_hz:
        raise ConfigError(f"assimilation.band_lo_hz = {da.band_lo_hz:g} must be < band_hi_hz = {da.band_hi_hz:g}")
    if da.calibration_trs + da.burn_in_trs + 3 > da.trs:
        raise ConfigError(f"assimilation.trs = {da.trs}: must exceed assimilation.calibration_trs + burn_in_trs + 2 "
                          f"= {da.calibration_trs + da.burn_in_trs + 2} (the first calibration_trs TRs only set the "
                          "observation's scale; the metrics need at least 3 TRs after the burn-in)")
    fitted_trs = da.trs - da.calibration_trs - da.burn_in_trs
    if cfg.validation.average_trs > fitted_trs:
        raise ConfigError(f"validation.average_trs = {cfg.validation.average_trs}: must be at most the assimilated TRs "
                          f"after the calibration and the burn-in ({fitted_trs}); 0 = the last half of them")
    if da.preprocess and da.detrend_order >= da.calibration_trs:
        raise ConfigError(f"assimilation.detrend_order = {da.detrend_order}: must be < assimilation.calibration_trs "
                          f"= {da.calibration_trs}")


def fitted(cfg: Config) -> list[str]:
    """Names of the hyperparameters ``assimilation.fit`` selects, in the given order."""
    return [n.strip() for n in cfg.assimilation.fit.split(",") if n.strip()]


def describe() -> str:
    """Markdown table of every key: name, default, allowed values, meaning."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    model_field = next(f for f in dataclasses.fields(Config) if f.name == "model")
    entries = [("model", model_field)]
    for sec, cls in _SECTION_TYPES.items():
        entries += [(f"{sec}.{f.name}", f) for f in dataclasses.fields(cls)]
    for name, f in entries:
        if f.metadata.get("state"):
            rows.append(f"| `{name}` | `{{}}` | a table | {f.metadata['doc']} |")
            continue
        default = f.default
        shown = f"{default:.6g}" if isinstance(default, float) else repr(default).replace("'", '"')
        if isinstance(default, tuple):
            shown = "[" + ", ".join(f"{x:g}" for x in default) + "]"
        if isinstance(default, bool):
            shown = str(default).lower()
        rows.append(f"| `{name}` | `{shown}` | {_allowed(f.metadata, type(default))} | {f.metadata['doc']} |")
    rows.append("| `[[stimulus]]` | none | tables of populations (names of populations or regions), amplitude (pA "
                "for iaf_psc_exp, mV/ms for lif_cond), start_ms, stop_ms | current steps onto whole populations |")
    return "\n".join(rows)
