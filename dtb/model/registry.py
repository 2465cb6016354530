"""The built-in models, by name: ``dtb.wholebrain``, ``dtb.pd14``, and what a config's ``model`` selects.

Each builder takes plain parameters (never the whole `Config`) and returns a
`Network`. Per-region parameters of the whole brain are a number, an array (one
value per region, in the connectome's order) or a dict by region label (regions
not named keep the default).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np

from dtb.errors import ConfigError, DataError, deferred_warnings
from dtb.model.builder import Network

#: whole-brain parameters that may differ from region to region
PER_REGION = ("w_e_trace", "w_i_trace", "bg_mu_mv_ms", "bg_sigma_mv_ms", "bg_tau_ms")


def wholebrain(connectome=None, subject: str = "101309", *, seed: int = 1, dt_ms: float = 0.1,
               lengths=None, labels=None, sizes=None, sc_rows: str = "targets", **params) -> Network:
    """The DTB whole-brain model on a subject's connectome.

    Parameters
    ----------
    connectome : str, Path or Connectome, optional
        A `Connectome`, or a file `dtb.connectome.connectome.load_connectome` reads (dtb's HDF5, a TVB
        connectivity zip or folder, a weights matrix); default the bundled HCP/AAL2 file.
    subject : str
        Subject id in an HDF5 file.
    seed, dt_ms : int, float
    lengths, labels, sizes, sc_rows
        For a weights-matrix file: `load_connectome`'s.
    **params
        Keyword parameters of `dtb.connectome.wholebrain.wholebrain_recipe` (``n_neurons``,
        ``in_degree``, ``bg_mu_mv_ms``, ...); those in `PER_REGION` also as arrays or dicts by label.

    Returns
    -------
    Network
    """
    from dtb.connectome.connectome import Connectome, load_connectome
    from dtb.connectome.wholebrain import wholebrain_recipe

    with deferred_warnings():  # "no region sizes" is not said before "too small"
        con = connectome if isinstance(connectome, Connectome) else \
            load_connectome(connectome, str(subject), lengths=lengths, labels=labels, sizes=sizes, sc_rows=sc_rows)
        _check_params(wholebrain_recipe, params, "wholebrain", seed, dt_ms)
        for name in PER_REGION:
            if name in params:
                params[name] = per_region(params[name], con.labels, _default(wholebrain_recipe, name), name)
        return Network.from_recipe(wholebrain_recipe(con, dt_ms=dt_ms, **params), seed=seed)


def pd14(*, seed: int = 1, dt_ms: float = 0.1, **params) -> Network:
    """The Potjans & Diesmann (2014) cortical microcircuit (``n_scale``, ``k_scale``, ``background``,
    ``bg_rate_hz``: `dtb.connectome.pd14.pd14_recipe`)."""
    from dtb.connectome.pd14 import pd14_recipe

    _check_params(pd14_recipe, params, "pd14", seed, dt_ms)
    return Network.from_recipe(pd14_recipe(dt_ms=dt_ms, **params), seed=seed)


def per_region(value, labels, default: float, name: str) -> np.ndarray:
    """A per-region parameter as an array over ``labels``: from a number, a sequence or a dict by label."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(labels))
        if unknown:
            raise ConfigError(f"{name}: no region {', '.join(map(repr, unknown[:5]))} in the connectome")
        return np.array([float(value.get(label, default)) for label in labels])
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(len(labels), float(arr))
    if arr.ndim == 1 and len(arr) != len(labels):
        raise ConfigError(f"{name}: {len(arr)} values for {len(labels)} regions (give one, or one per region)")
    return arr


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def _check_params(fn, params: dict, model: str, seed, dt_ms) -> None:
    """A `ConfigError` for a parameter ``fn`` does not take, or a value that its config key (``[model]``,
    ``simulation.seed``, ``simulation.dt_ms``) does not allow: the Python API takes what a config file takes."""
    from dtb.config import check_value

    known = [p for p in inspect.signature(fn).parameters if p not in ("con", "dt_ms")]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{model}: unknown parameter {', '.join(unknown)} (known: {', '.join(known)})")
    check_value("simulation", "seed", seed, "seed")
    check_value("simulation", "dt_ms", dt_ms, "dt_ms")
    for key, value in params.items():
        if isinstance(value, dict) and key in PER_REGION:
            values = list(value.values())
        elif key in PER_REGION and not isinstance(value, (str, bool)) and np.ndim(value) == 1:
            values = list(value)
        else:
            values = [value]
        for v in values:
            check_value(model, key, v, f"{model}: {key}")


@dataclasses.dataclass(frozen=True)
class Model:
    """A built-in model: its builder and the config section of its parameters."""

    build: object
    section: str
    #: section keys that are not builder parameters
    skip: tuple = ()


MODELS = {"wholebrain": Model(wholebrain, "wholebrain",
                             skip=("subject", "connectome", "lengths_file", "labels_file", "sizes_file", "sc_rows")),
          "pd14": Model(pd14, "pd14")}


def network_from_config(cfg, **overrides) -> Network:
    """The network a configuration's ``model`` asks for, from its section (``overrides`` replace keys)."""
    model = MODELS[cfg.model]
    section = {**dataclasses.asdict(getattr(cfg, model.section)), **overrides}
    params = {k: v for k, v in section.items() if k not in model.skip}
    if cfg.model == "wholebrain":
        params.update(connectome=section["connectome"] or None, subject=section["subject"],
                      lengths=section["lengths_file"] or None, labels=section["labels_file"] or None,
                      sizes=section["sizes_file"] or None, sc_rows=section["sc_rows"])
        for name in PER_REGION:
            params[name] = read_table(params[name], f"wholebrain.{name}", "wholebrain")
    return model.build(seed=cfg.simulation.seed, dt_ms=cfg.simulation.dt_ms, **params)


def read_table(value, name: str, section: str | None = None):
    """A per-region value as given: a number, a list or a dict by label stay; a CSV/TSV file of
    (label, value) rows (a header line is skipped; cells may be quoted as in CSV) becomes a dict."""
    if isinstance(value, str):
        from dtb.connectome.formats import is_number, split_cells, text_float

        path = Path(value)
        try:
            if not path.is_file():  # a FIFO would block, a device read forever
                raise ConfigError(f"{name}: {value!r} is not a regular file")
            if path.stat().st_size > 16 * 2**20:
                raise ConfigError(f"{name}: {value!r} is {path.stat().st_size:,} bytes: not a table of regions")
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, ValueError, RuntimeError) as err:  # unreadable, not UTF-8 text, a link loop
            raise ConfigError(f"{name}: cannot read {value!r} ({getattr(err, 'strerror', None) or err})") from None
        delim = "\t" if path.suffix.lower() == ".tsv" else ","
        lines = text.splitlines()
        try:
            rows = split_cells(lines, delim, f"{name}: {value}")  # "Left, anterior",0.5: CSV quoting
        except DataError as err:
            raise ConfigError(str(err)) from None
        table = {}
        for i, (line, cells) in enumerate(zip(lines, rows)):
            if not line.strip() or (i == 0 and not is_number(cells[-1])):
                continue  # blank lines and a header
            if len(cells) != 2:
                raise ConfigError(f"{name}: {value}: line {i + 1} is not 'label{delim}value'")
            if not is_number(cells[1]):
                raise ConfigError(f"{name}: {value}: line {i + 1}: {cells[1]!r} is not a number")
            if cells[0] in table:  # which of the two would be meant cannot be told
                raise ConfigError(f"{name}: {value}: line {i + 1} gives region {cells[0]!r} twice")
            table[cells[0]] = text_float(cells[1])
        if not table:  # an empty file, or one line taken for a header: never the same as no file
            raise ConfigError(f"{name}: {value}: no 'label{delim}value' rows ({'tab' if delim == chr(9) else 'comma'}-"
                              "separated; a first line without a number is a header)")
        if section is not None:  # the file's values get the checks the config's own values get
            from dtb.config import check_value

            key = name.split(".")[-1]
            table = {label: check_value(section, key, v, f"{name} ({value}, region {label!r})")
                     for label, v in table.items()}
        return table
    return value

