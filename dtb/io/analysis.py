"""Reading runs for analysis: lazy views of a run file, and streaming statistics.

    from dtb.io import open_run
    with open_run("dtb_run.h5") as run:
        run.rates.sel(population="Precentral_L.E").mean().compute()   # xarray over dask
        times, ids = run.spikes.times_ms, run.spikes.node_ids        # dask arrays
        cv = isi_cv(run)                                              # streams the spikes

Spikes are never read whole: `Run.spike_blocks` yields blocks of ``chunk_spikes``
spikes, and every helper here works block by block, keeping per-neuron or
per-sample accumulators only. One-rank files, many-rank files (virtual datasets
over the ranks' files) and the checkpoints of unfinished runs read alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtb.errors import DataError, UsageError
from dtb.io.hdf5 import open_data_file, open_dataset
from dtb.io.runfile import check_structure, get_sorting, verify_digests

#: spikes per block when streaming (16 bytes each: 16 MiB)
CHUNK_SPIKES = 1 << 20

#: what h5py, numpy and json raise on an HDF5 file that is not laid out as dtb writes it (a dataset missing or of
#: another shape, an attribute that is no number, a loop of soft links, a summary nested past the parser's depth)
NOT_AS_WRITTEN = (KeyError, ValueError, TypeError, IndexError, AttributeError, ZeroDivisionError, RuntimeError,
                  OSError)


def not_readable(path, err: BaseException, also: str = "") -> DataError:
    """The one-line `DataError` for a run file that ``err`` (one of `NOT_AS_WRITTEN`) shows is not as dtb wrote it
    (``also``: what else may be to blame)."""
    return DataError(f"{str(path)!r}{also} is not readable as dtb writes it ({type(err).__name__}: "
                     f"{' '.join(str(err).split())[:200]})")


def _as_written(read):
    """A `Run` property whose reads of a file not laid out as dtb writes it raise one `DataError` naming the file."""
    import functools

    @functools.wraps(read)
    def checked(self):
        try:
            return read(self)
        except DataError:
            raise
        except NOT_AS_WRITTEN as err:
            raise not_readable(self.path, err) from None

    return property(checked)


@dataclass(frozen=True)
class Spikes:
    """The spikes of a run as lazy dask arrays, shape (n_spikes,).

    Attributes
    ----------
    times_ms : dask.array.Array, float64
        Time of each spike (end of its step), ms.
    node_ids : dask.array.Array, uint64
        Neuron (gid) of each spike.
    sorting : str
        'by_id' (by node id, then time) for a finished run, 'none' for a checkpoint
        (segment by segment; each neuron's spikes still in time order).
    """

    times_ms: object
    node_ids: object
    sorting: str


class Run:
    """A run file opened for reading (see `open_run`). Use as a context manager, or call `close`.

    Attributes
    ----------
    path : Path
    metadata : dict
        The root attributes and the run's summary (sizes, timings, rates, version).
    populations : list of str
    population_sizes, population_first_gid, population_region : ndarray, int64
    regions : list of str
    n_neurons : int
    t_ms : float
        Biological time the file covers.
    """

    def __init__(self, path: str | Path, chunk_spikes: int = CHUNK_SPIKES):
        import os

        if not isinstance(path, (str, os.PathLike)):
            raise UsageError(f"open_run: path {path!r} is not a file name (str or Path)")
        if isinstance(chunk_spikes, bool) or not isinstance(chunk_spikes, (int, np.integer)) or chunk_spikes < 1:
            raise UsageError(f"open_run: chunk_spikes = {chunk_spikes!r}: must be an integer >= 1")
        self.path = Path(path)
        self.file = f = open_data_file(self.path, "run file")  # a FIFO is refused, never opened
        try:
            self._read_description(chunk_spikes)
        except DataError:
            f.close()
            raise
        except NOT_AS_WRITTEN as err:
            f.close()
            raise not_readable(self.path, err) from None

    def _read_description(self, chunk_spikes: int) -> None:
        f = self.file
        if "summary" not in f or "network" not in f:
            raise DataError(f"{str(self.path)!r} is not a dtb simulation run file (no /summary or /network)")
        check_structure(f, self.path)
        self.chunk_spikes = int(chunk_spikes)
        self.metadata = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        self.metadata.update(json.loads(f["summary"][()]))
        net = f["network"]
        self.populations = [s.decode() for s in net["populations/name"][()]]
        self.population_sizes = net["populations/size"][()].astype(np.int64)
        self.population_first_gid = net["populations/first_gid"][()].astype(np.int64)
        self.population_region = net["populations/region"][()].astype(np.int64)
        self.population_excitatory = net["populations/excitatory"][()].astype(bool)
        self.regions = [s.decode() for s in net["regions"][()]]
        self.n_neurons = int(self.population_sizes.sum())
        self.t_ms = float(f.attrs["t_ms"])
        # check_structure saw the tables' lengths and t_ms; their values are checked here
        if np.any(self.population_sizes < 0) or \
                np.any((self.population_region < 0) | (self.population_region >= len(self.regions))) or \
                not np.array_equal(self.population_first_gid, np.cumsum(self.population_sizes) - self.population_sizes):
            raise DataError(f"{str(self.path)!r} is not a consistent dtb run file (its /network tables)")
        group = f"spikes/{f.attrs['spike_population']}"
        self._spike_sorting = get_sorting(f[group])
        # virtual datasets (checkpoints, stitch = 'virtual') read from beside the file, or fail naming what is missing
        self._spike_ds = {k: open_dataset(f, f"{group}/{k}") for k in ("timestamps", "node_ids")}

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    @_as_written
    def config(self):
        """The run's resolved configuration (`dtb.config.Config`); None for a network built in Python."""
        from dtb.config import load_config

        text = self.file["config"][()].decode()
        return load_config(text=text) if text else None

    @_as_written
    def n_spikes(self) -> int:
        return int(self._spike_ds["node_ids"].shape[0])

    @_as_written
    def spikes(self) -> Spikes:
        """Lazy dask views of the spike datasets (chunks of ``chunk_spikes``)."""
        import dask.array as da

        g = self._spike_ds
        chunks = (max(1, min(self.chunk_spikes, self.n_spikes)),)
        where = f"/spikes/{self.file.attrs['spike_population']}"
        times = self._checked(da.from_array(g["timestamps"], chunks=chunks), where, "a time outside 0 to "
                              f"{self.t_ms:g} ms", 0.0, self.t_ms * (1 + 1e-12))
        ids = self._checked(da.from_array(g["node_ids"], chunks=chunks), where, "a node id outside the "
                            f"{self.n_neurons:,} neurons", 0, self.n_neurons - 1)
        return Spikes(times_ms=times, node_ids=ids, sorting=self._spike_sorting)

    def spike_blocks(self):
        """Yield the spikes as numpy blocks ``(times_ms float64, node_ids int64)`` of at most ``chunk_spikes``."""
        g = self._spike_ds
        for a in range(0, self.n_spikes, self.chunk_spikes):
            b = min(self.n_spikes, a + self.chunk_spikes)
            times, ids = g["timestamps"][a:b], g["node_ids"][a:b].astype(np.int64)
            # a value damaged in place: checked as it streams by, at no extra read
            late = self.t_ms * (1 + 1e-12)
            if np.any((ids < 0) | (ids >= self.n_neurons)) or not np.all((times >= 0) & (times <= late)):
                raise DataError(f"{str(self.path)!r}: spikes {a:,} to {b - 1:,} hold a node id outside the "
                                f"{self.n_neurons:,} neurons or a time outside 0 to {self.t_ms:g} ms: the file is "
                                "damaged")
            yield times, ids

    def _checked(self, data, where: str, what: str, low: float, high: float = np.inf):
        """``data`` (a dask array) whose blocks, as they are read, raise a `DataError` for a value outside
        ``low`` to ``high`` or not finite (a value damaged in place: checked at no extra read)."""
        def check(block):
            if not np.all(np.isfinite(block) & (block >= low) & (block <= high)):
                raise DataError(f"{str(self.path)!r}: {where} holds {what}: the file is damaged")
            return block

        return data.map_blocks(check, dtype=data.dtype)

    def _rates(self, name: str, labels: list[str], dim: str):
        import dask.array as da
        import xarray as xr

        ds = open_dataset(self.file, f"rates/{name}")
        bin_ms = float(ds.attrs["bin_ms"])
        time = (np.arange(ds.shape[0]) + 0.5) * bin_ms
        coords = {"time": ("time", time, {"units": "ms", "long_name": "bin centre"}), dim: labels}
        if dim == "population":
            coords["region"] = (dim, [self.regions[r] for r in self.population_region])
            coords["excitatory"] = (dim, self.population_excitatory)
        data = da.from_array(ds, chunks=(max(1, min(ds.shape[0], 1 << 14)), ds.shape[1]))
        return xr.DataArray(self._checked(data, f"/rates/{name}", "a negative or non-finite rate", 0.0),
                            dims=("time", dim), coords=coords, name=name,
                            attrs={"units": "Hz", "bin_ms": bin_ms, "long_name": f"{dim} firing rate"})

    @_as_written
    def rates(self):
        """Population rates, xarray DataArray (time x population), Hz, lazy (dask); coords time (ms), region.
        None if rates were not recorded."""
        return self._rates("population_hz", self.populations, "population") if "rates" in self.file else None

    @_as_written
    def state(self) -> dict:
        """Recorded state variables: ``{variable: xarray DataArray (time x neuron)}``, lazy; time (ms) is the end
        of each sampled step, neuron the gid; the variable's unit in ``attrs['units']``."""
        import dask.array as da
        import xarray as xr

        out = {}
        for name, g in self.file.get("state", {}).items():
            ds = g["data"]
            out[name] = xr.DataArray(da.from_array(ds, chunks=(max(1, min(ds.shape[0], 1 << 14)), ds.shape[1])),
                                     dims=("time", "neuron"),
                                     coords={"time": ("time", g["times_ms"][()], {"units": "ms"}),
                                             "neuron": g["node_ids"][()].astype(np.int64)},
                                     name=name, attrs={"units": g.attrs["units"], "every_ms": g.attrs["every_ms"]})
        return out

    @_as_written
    def region_rates(self):
        """Region rates, xarray DataArray (time x region), Hz, lazy; None for a checkpoint (derived at the end)."""
        return self._rates("region_hz", self.regions, "region") if "rates/region_hz" in self.file else None

    @_as_written
    def bold(self):
        """The BOLD signal, xarray DataArray (time x region), lazy; time is each TR's end (s). None if not recorded."""
        if "bold" not in self.file:
            return None
        import dask.array as da
        import xarray as xr

        ds = self.file["bold"]
        tr_s = float(ds.attrs["tr_ms"]) * 1e-3
        time = (np.arange(ds.shape[1]) + 1) * tr_s
        data = self._checked(da.from_array(ds, chunks=ds.shape), "/bold", "a non-finite value", -np.inf)
        return xr.DataArray(data.T, dims=("time", "region"),
                            coords={"time": ("time", time, {"units": "s"}), "region": self.regions}, name="bold",
                            attrs={"units": "1", "long_name": "BOLD signal change", "tr_s": tr_s,
                                   "params": ds.attrs["params"]})

    def verify(self) -> dict:
        """Read every dataset and check it against the digests the run stored when it finished
        (`dtb.io.runfile.verify_digests`: what it returns, or a `DataError` naming what differs)."""
        return verify_digests(self.file, self.path)

    def population_of(self, gids: np.ndarray) -> np.ndarray:
        """Population index of each gid, shape like ``gids``, int64."""
        return np.searchsorted(self.population_first_gid, gids, side="right") - 1


def open_run(path: str | Path, chunk_spikes: int = CHUNK_SPIKES) -> Run:
    """Open a run file (finished, many-rank, or the ``.partial`` checkpoint of an unfinished run) for reading.

    Parameters
    ----------
    path : str or Path
    chunk_spikes : int
        Spikes per block when streaming (memory per block: 16 bytes x chunk_spikes).

    Raises
    ------
    DataError
        Missing, not HDF5, or not a dtb simulation run file.
    """
    return Run(path, chunk_spikes)


def spike_counts(run: Run) -> np.ndarray:
    """Spikes of each neuron, shape (n_neurons,), int64 (streamed)."""
    counts = np.zeros(run.n_neurons, dtype=np.int64)
    for _, ids in run.spike_blocks():
        counts += np.bincount(ids, minlength=run.n_neurons)
    return counts


def rate_histograms(run: Run, bins: np.ndarray | int = 50, max_rate_hz: float | None = None) -> dict:
    """Histogram of the neurons' mean rates, per population.

    Returns
    -------
    dict
        ``edges`` (ndarray (n_bins + 1,), Hz) and ``counts`` (xarray DataArray, population x bin, neurons).
    """
    import xarray as xr

    rates = spike_counts(run) / (run.t_ms * 1e-3)
    edges = np.histogram_bin_edges(rates, bins=bins, range=(0.0, max_rate_hz or max(rates.max(), 1e-9)))
    pop = run.population_of(np.arange(run.n_neurons))
    counts = np.stack([np.histogram(rates[pop == p], bins=edges)[0] for p in range(len(run.populations))])
    return dict(edges=edges, counts=xr.DataArray(counts, dims=("population", "bin"),
                                                 coords={"population": run.populations},
                                                 attrs={"units": "neurons", "rate_edges_hz": edges}))


def isi_cv(run: Run) -> np.ndarray:
    """Coefficient of variation of each neuron's inter-spike intervals, shape (n_neurons,), float64.

    NaN where a neuron has fewer than 3 spikes. Streams the spikes; needs only that each
    neuron's spikes come in time order, which holds for every dtb run file and checkpoint.
    """
    n = run.n_neurons
    last = np.full(n, np.nan)
    k, s1, s2 = np.zeros(n), np.zeros(n), np.zeros(n)
    for times, ids in run.spike_blocks():
        order = np.lexsort((times, ids))
        times, ids = times[order], ids[order]
        first = np.ones(len(ids), dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        isi = np.empty(len(ids))
        isi[~first] = np.diff(times)[~first[1:]]
        isi[first] = times[first] - last[ids[first]]  # NaN for a neuron's first spike
        ok = ~np.isnan(isi)
        np.add.at(k, ids[ok], 1.0)
        np.add.at(s1, ids[ok], isi[ok])
        np.add.at(s2, ids[ok], isi[ok] ** 2)
        last_of = np.ones(len(ids), dtype=bool)
        last_of[:-1] = ids[:-1] != ids[1:]
        last[ids[last_of]] = times[last_of]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / k
        var = np.maximum(s2 / k - mean**2, 0.0) * k / (k - 1)
        cv = np.sqrt(var) / mean
    cv[k < 2] = np.nan
    return cv


def spike_count_correlation(run: Run, bin_ms: float = 5.0, per_population: int = 50, seed: int = 0,
                            t_start_ms: float = 0.0, t_stop_ms: float | None = None):
    """Mean pairwise Pearson correlation of spike counts, per population, from a sample of its neurons.

    Counts go into a (sample x bin) int32 matrix while the spikes stream by: memory is
    ``4 * per_population * n_populations * (t_stop - t_start) / bin_ms`` bytes.

    Returns
    -------
    xarray.DataArray, dims (population,)
        NaN where fewer than 2 sampled neurons fired.
    """
    import xarray as xr

    t_stop_ms = run.t_ms if t_stop_ms is None else t_stop_ms
    n_bins = int(np.ceil((t_stop_ms - t_start_ms) / bin_ms))
    if n_bins < 2:
        raise DataError(f"spike_count_correlation: [{t_start_ms:g}, {t_stop_ms:g}) ms holds fewer than 2 bins")
    rng = np.random.default_rng(seed)
    sample = np.concatenate([np.sort(rng.choice(np.arange(a, a + size), min(size, per_population), replace=False))
                             for a, size in zip(run.population_first_gid, run.population_sizes)])
    row_of = np.full(run.n_neurons, -1, dtype=np.int64)
    row_of[sample] = np.arange(len(sample))
    counts = np.zeros((len(sample), n_bins), dtype=np.int32)
    for times, ids in run.spike_blocks():
        rows = row_of[ids]
        keep = (rows >= 0) & (times > t_start_ms) & (times <= t_stop_ms)
        b = np.minimum(((times[keep] - t_start_ms) / bin_ms).astype(np.int64), n_bins - 1)
        np.add.at(counts, (rows[keep], b), 1)
    pops = run.population_of(sample)
    out = np.full(len(run.populations), np.nan)
    for p in range(len(run.populations)):
        c = counts[pops == p].astype(np.float64)
        c = c[c.std(axis=1) > 0]
        if len(c) >= 2:
            r = np.corrcoef(c)
            out[p] = r[np.triu_indices(len(c), 1)].mean()
    return xr.DataArray(out, dims=("population",), coords={"population": run.populations},
                        name="spike_count_correlation", attrs={"bin_ms": bin_ms, "units": "1"})


def bold_fc(run: Run, skip_trs: int = 0):
    """Functional connectivity of the BOLD signal: Pearson r between regions, xarray DataArray (region x region).

    ``skip_trs`` leaves out the first TRs (the hemodynamic transient).
    """
    import xarray as xr

    bold = run.bold
    if bold is None:
        raise DataError(f"{str(run.path)!r} has no /bold (run with recording.bold = true)")
    x = np.asarray(bold.values[skip_trs:], dtype=np.float64)
    if x.shape[0] < 3:
        raise DataError(f"{str(run.path)!r}: {x.shape[0]} TRs after skipping {skip_trs}; FC needs at least 3")
    with np.errstate(invalid="ignore", divide="ignore"):
        fc = np.corrcoef(x.T)
    return xr.DataArray(fc, dims=("region", "region_2"), coords={"region": run.regions, "region_2": run.regions},
                        name="fc", attrs={"units": "1", "long_name": "BOLD functional connectivity (Pearson r)"})


#: default BOLD transient left out of a run's FC (s): the hemodynamic response rises from rest for about 10 s
TRANSIENT_S = 10.0


def compare_fc(run: Run, data: str | Path, subject: str, transient_s: float = TRANSIENT_S) -> dict:
    """A run's BOLD FC beside a subject's recorded (empirical) FC, with the structural baseline.

    Parameters
    ----------
    run : Run
        A run with ``/bold`` (``recording.bold = true``).
    data : str or Path
        HDF5 file with the recorded BOLD (``/subjects/<subject>/bold``, the bundled file's layout).
    subject : str
    transient_s : float
        Seconds of the run's BOLD left out first (its rise from rest), >= 0.

    Returns
    -------
    dict
        ``fc_run``, ``fc_empirical`` (ndarray (R, R), regions in the run's order), ``fc_r`` (Pearson r of their
        upper triangles), ``sc_fc_r`` (of the subject's sc with the empirical FC, where the data file has the
        subject's connectome, else None: the baseline any model must beat), ``run_trs`` (TRs used),
        ``empirical_trs``, ``skipped_trs``, ``tr_s`` (run), ``empirical_tr_s``, ``subject``, ``data``.

    Raises
    ------
    DataError
        No BOLD, fewer than 3 TRs after the transient, regions that differ from the recording's.
    """
    from dtb.assimilation.metrics import fc_similarity, functional_connectivity
    from dtb.assimilation.observation import load_observed_bold

    if not transient_s >= 0:
        raise DataError(f"transient {transient_s!r} s: must be >= 0")
    bold = run.bold
    if bold is None:
        raise DataError(f"{str(run.path)!r} has no /bold (run with --set recording.bold=true)")
    tr_s = float(bold.attrs["tr_s"])
    skip = int(np.ceil(transient_s / tr_s - 1e-9))
    obs = load_observed_bold(data, subject)
    if sorted(obs.labels) != sorted(run.regions):
        only = sorted(set(run.regions) ^ set(obs.labels))
        raise DataError(f"{data}: subject {subject}'s regions differ from the run's ({len(only)} not in both, e.g. "
                        f"{only[0]!r}): compare a run of the same atlas")
    order = [obs.labels.index(r) for r in run.regions]
    fc_run = bold_fc(run, skip_trs=skip).values
    fc_emp = functional_connectivity(obs.bold[order])
    sc_fc_r = None
    try:
        from dtb.connectome.connectome import load_connectome

        con = load_connectome(data, subject)
        if list(con.labels) == list(obs.labels):
            sc = con.sc[np.ix_(order, order)]
            sc_fc_r = fc_similarity((sc + sc.T) / 2, fc_emp)
    except DataError:
        pass  # a data file with BOLD only: no structural baseline to give
    return dict(fc_run=fc_run, fc_empirical=fc_emp, fc_r=fc_similarity(fc_run, fc_emp), sc_fc_r=sc_fc_r,
                run_trs=int(bold.sizes["time"]) - skip, skipped_trs=skip, empirical_trs=int(obs.bold.shape[1]),
                tr_s=tr_s, empirical_tr_s=float(obs.tr_s), subject=str(subject), data=str(data))
