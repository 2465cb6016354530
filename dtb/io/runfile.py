"""The run file: one HDF5 file per run (schema in the README, "Run file").

Written under ``<final>.partial`` and renamed when complete, so a failed run never
leaves a file under the final name. Spikes follow the SONATA spike-report layout;
rates, the network description, the partition, the resolved config and timings
sit beside them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from dtb.errors import DataError, ResourceError

SCHEMA_VERSION = 1
_STR = h5py.string_dtype()


def partial_path(path: Path) -> Path:
    """Where a run file is written before it is complete."""
    return path.with_name(path.name + ".partial")


def parts_dir(path: Path) -> Path:
    """Folder of the per-rank spike files of a many-rank run (kept beside the run file)."""
    return path.with_name(path.name + ".parts")


def check_output(path: str | Path, overwrite: bool) -> Path:
    """The run file's path, or a `ResourceError` if it exists (without overwrite) or has no folder.

    Every rank calls this, so that all of them fail alike before anything is written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ResourceError(f"output {str(path)!r} exists (use --overwrite to replace it)")
    if not path.parent.is_dir():
        raise ResourceError(f"output folder {str(path.parent)!r} does not exist")
    return path


class RunWriter:
    """Writes one run file; rank 0 only.

    Parameters
    ----------
    path : str or Path
        Final path of the run file.
    overwrite : bool
        Replace an existing file at ``path``; otherwise that is a `ResourceError`.
    """

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = check_output(path, overwrite)
        self.tmp = partial_path(self.path)
        self.file = h5py.File(self.tmp, "w")
        self.file.attrs["schema_version"] = SCHEMA_VERSION

    def write_header_plain(self, *, config_toml: str, version: str, model: str, seed: int, dt_ms: float) -> None:
        """Root attributes and the resolved config, for a file without spikes or rates (an assimilation)."""
        self.file.attrs.update(dict(dtb_version=version, model=model, seed=seed, dt_ms=dt_ms))
        self.file.create_dataset("config", data=config_toml, dtype=_STR)

    def write_header(self, *, config_toml: str, version: str, model: str, seed: int, dt_ms: float, t_ms: float,
                     spike_population: str, n_populations: int) -> None:
        """Root attributes, the resolved config, and empty growable spike and rate datasets."""
        f = self.file
        f.attrs.update(dict(dtb_version=version, model=model, seed=seed, dt_ms=dt_ms, t_ms=t_ms,
                            spike_population=spike_population))
        f.create_dataset("config", data=config_toml, dtype=_STR)
        f.create_group(f"spikes/{spike_population}").attrs["sorting"] = "by_id"
        f.create_dataset("rates/population_hz", shape=(0, n_populations), maxshape=(None, n_populations),
                         dtype=np.float32, chunks=(max(1, (1 << 16) // max(n_populations, 1)), n_populations))

    def write_network(self, *, names, sizes, first_gids, excitatory, regions, region_names, synapse_counts,
                      neuron_model: str, min_delay_steps: int, max_delay_steps: int, bytes_per_synapse: float) -> None:
        """The network description: populations, regions, synapse counts."""
        g = self.file.create_group("network")
        g.create_dataset("populations/name", data=list(names), dtype=_STR)
        g.create_dataset("populations/size", data=np.asarray(sizes, dtype=np.int64))
        g.create_dataset("populations/first_gid", data=np.asarray(first_gids, dtype=np.int64))
        g.create_dataset("populations/excitatory", data=np.asarray(excitatory, dtype=bool))
        g.create_dataset("populations/region", data=np.asarray(regions, dtype=np.int32))
        g.create_dataset("regions", data=list(region_names), dtype=_STR)
        g.create_dataset("synapse_counts", data=np.asarray(synapse_counts, dtype=np.int64))
        g["synapse_counts"].attrs["axes"] = "target population, source population"
        g.attrs.update(dict(n_neurons=int(np.sum(sizes)), n_synapses=int(np.sum(synapse_counts)),
                            neuron_model=neuron_model, min_delay_steps=min_delay_steps,
                            max_delay_steps=max_delay_steps, bytes_per_synapse=bytes_per_synapse))

    def write_partition(self, starts, stops, ranks, strategy: str, n_ranks: int) -> None:
        g = self.file.create_group("partition")
        g.create_dataset("starts", data=starts)
        g.create_dataset("stops", data=stops)
        g.create_dataset("ranks", data=ranks)
        g.attrs.update(dict(strategy=strategy, n_ranks=n_ranks))

    def write_spikes(self, times_ms: np.ndarray, node_ids: np.ndarray) -> None:
        """Store all spikes, sorted by (node id, time), as plain datasets (one-rank runs)."""
        grp = self.file[f"spikes/{self.file.attrs['spike_population']}"]
        chunks = (min(len(times_ms), 1 << 16),) if len(times_ms) else None
        grp.create_dataset("timestamps", data=times_ms, dtype=np.float64, chunks=chunks).attrs["units"] = "ms"
        grp.create_dataset("node_ids", data=node_ids, dtype=np.uint64, chunks=chunks)

    def link_spikes(self, parts: list[tuple[str, int, int, int]]) -> None:
        """Store spikes as virtual datasets over the ranks' part files (many-rank runs).

        Parameters
        ----------
        parts : list of (relative part path, part length, first, stop)
            In gid order: rows ``first:stop`` of each part's sorted datasets, one entry per gid range.
        """
        import h5py

        grp = self.file[f"spikes/{self.file.attrs['spike_population']}"]
        total = sum(stop - first for _, _, first, stop in parts)
        for name, dtype in (("timestamps", np.float64), ("node_ids", np.uint64)):
            layout = h5py.VirtualLayout(shape=(total,), dtype=dtype)
            at = 0
            for path, length, first, stop in parts:
                if stop > first:
                    source = h5py.VirtualSource(path, f"by_id/{name}", shape=(length,))
                    layout[at:at + stop - first] = source[first:stop]
                    at += stop - first
            grp.create_virtual_dataset(name, layout)
        grp["timestamps"].attrs["units"] = "ms"

    def append_rates(self, rows_hz: np.ndarray, bin_ms: float) -> None:
        """Append complete rate bins, shape (n_bins, n_populations)."""
        ds = self.file["rates/population_hz"]
        ds.attrs["bin_ms"] = bin_ms
        ds.attrs["units"] = "Hz"
        n0 = ds.shape[0]
        ds.resize((n0 + len(rows_hz), ds.shape[1]))
        ds[n0:] = rows_hz

    def write_bold(self, bold: np.ndarray, tr_ms: float, params: str, eps: float) -> None:
        """Store the BOLD signal, shape (n_regions, n_trs), sampled at the end of each TR."""
        ds = self.file.create_dataset("bold", data=np.asarray(bold, dtype=np.float64))
        ds.attrs.update(dict(tr_ms=tr_ms, params=params, eps=eps, units="1", axes="region, TR",
                             model="Balloon-Windkessel"))

    def write_group(self, name: str, arrays: dict, attrs: dict) -> None:
        """Store a group of named arrays (strings allowed) and scalar attributes."""
        g = self.file.create_group(name)
        for key, val in arrays.items():
            val = np.asarray(val)
            g.create_dataset(key, data=val.tolist() if val.dtype.kind == "U" else val,
                             dtype=_STR if val.dtype.kind == "U" else None)
        g.attrs.update(attrs)

    def finish(self, summary: dict) -> Path:
        """Write region rates and the summary, close, and move to the final name."""
        f = self.file
        if "rates/population_hz" in f:
            self._region_rates()
        f.create_dataset("summary", data=json.dumps(summary), dtype=_STR)
        for k, v in summary.items():
            if isinstance(v, (int, float, str)):
                f.attrs[k] = v
        f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def _region_rates(self) -> None:
        f = self.file
        pop = f["rates/population_hz"]
        sizes = f["network/populations/size"][()]
        region = f["network/populations/region"][()]
        n_regions = len(f["network/regions"])
        # region rate = spikes of the region's populations / its neurons
        weights = np.zeros((len(sizes), n_regions))
        weights[np.arange(len(sizes)), region] = sizes
        weights /= weights.sum(axis=0, keepdims=True)
        reg = f.create_dataset("rates/region_hz", data=(pop[()] @ weights).astype(np.float32))
        reg.attrs.update(dict(bin_ms=pop.attrs.get("bin_ms", 0.0), units="Hz"))

    def abort(self) -> None:
        """Close and delete the partial file and any spike parts."""
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            shutil.rmtree(parts_dir(self.path), ignore_errors=True)


class SpikePart:
    """One rank's spikes, appended per flush to an HDF5 file of its own.

    Parameters
    ----------
    path : Path
    """

    def __init__(self, path: Path):
        import h5py

        self.path = path
        self.file = h5py.File(path, "w")
        for name, dtype in (("steps", np.int64), ("gids", np.int64)):
            self.file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 16,))

    def append(self, steps: np.ndarray, gids: np.ndarray) -> None:
        n0 = self.file["steps"].shape[0]
        for name, data in (("steps", steps), ("gids", gids)):
            self.file[name].resize((n0 + len(data),))
            self.file[name][n0:] = data

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """All spikes of this rank sorted by (gid, step)."""
        steps, gids = self.file["steps"][()], self.file["gids"][()]
        order = np.lexsort((steps, gids))
        return steps[order], gids[order]


class Recorder:
    """Records one rank's spikes and population counts; together the ranks write the run file.

    Each rank keeps its spikes in its own part file (``<run>.parts/rank<r>.h5``) and
    the ranks' rate counts are summed on rank 0 at every flush. At the end each rank
    sorts its spikes by (gid, time); a one-rank run copies them into the run file,
    a many-rank run maps each gid range, in gid order, into virtual datasets. Either
    way the spike datasets are sorted by node id and identical for any number of ranks.

    Parameters
    ----------
    ctx : Context
    writer : RunWriter or None
        The run file on rank 0; None elsewhere, or for no file.
    run_path : Path or None
        Final path of the run file (None: no file).
    offsets : ndarray, shape (n_pop + 1,), int64
        Population gid offsets.
    dt_ms : float
    bin_steps : int
        Rate bin width in steps.
    record_spikes : bool
    """

    def __init__(self, ctx, writer, run_path, offsets: np.ndarray, dt_ms: float, bin_steps: int,
                 record_spikes: bool = True):
        self.ctx = ctx
        self.writer = writer
        self.offsets = offsets
        self.sizes = np.diff(offsets)
        self.dt_ms = dt_ms
        self.bin_steps = bin_steps
        self.record_spikes = record_spikes and run_path is not None
        self._steps: list[np.ndarray] = []
        self._gids: list[np.ndarray] = []
        self.bin0 = 0  # first bin still in memory
        self.counts = np.zeros((16, len(self.sizes)), dtype=np.int64)
        self.total_counts = np.zeros(len(self.sizes), dtype=np.int64)  # this rank's
        self.part = None
        if self.record_spikes:
            folder = parts_dir(Path(run_path))
            folder.mkdir(exist_ok=True)  # every rank, so that no rank has to wait for another
            self.part = SpikePart(folder / f"rank{ctx.rank}.h5")

    def _room(self, rows: int) -> None:
        if rows > len(self.counts):
            grown = np.zeros((max(rows, 2 * len(self.counts)), len(self.sizes)), dtype=np.int64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown

    def spikes(self, steps: np.ndarray, gids: np.ndarray) -> None:
        """Take one epoch's local spikes (emission step, gid) in (step, gid) order."""
        if len(gids) == 0:
            return
        pops = np.searchsorted(self.offsets, gids, side="right") - 1
        bins = steps // self.bin_steps - self.bin0
        self._room(int(bins[-1]) + 1)
        np.add.at(self.counts, (bins, pops), 1)
        self.total_counts += np.bincount(pops, minlength=len(self.sizes))
        if self.record_spikes:
            self._steps.append(steps)
            self._gids.append(gids)

    def flush(self, step: int, final: bool = False) -> None:
        """Collective: store buffered spikes, and every rate bin complete at ``step`` (all if ``final``)."""
        if self.part is not None and self._steps:
            self.part.append(np.concatenate(self._steps), np.concatenate(self._gids))
        self._steps.clear()
        self._gids.clear()
        n_done = -(-step // self.bin_steps) if final else step // self.bin_steps
        k = n_done - self.bin0
        self._room(k)
        counts = self.ctx.sum(self.counts[:k].copy()) if k > 0 else None
        if k > 0:
            self.counts = np.concatenate([self.counts[k:], np.zeros_like(self.counts[:k])])
            self.bin0 = n_done
        if self.writer is not None and counts is not None:
            rows = counts / self.sizes[None, :] / (self.bin_steps * self.dt_ms * 1e-3)
            self.writer.append_rates(rows.astype(np.float32), self.bin_steps * self.dt_ms)

    def finish_spikes(self, ranges: np.ndarray) -> None:
        """Collective: sort each rank's spikes by (gid, time) and put them in the run file.

        Parameters
        ----------
        ranges : ndarray, shape (k, 2), int64
            This rank's gid ranges [start, stop).
        """
        if self.part is None:
            if self.writer is not None:
                self.writer.write_spikes(np.zeros(0), np.zeros(0, np.uint64))
            return
        steps, gids = self.part.sorted()
        times = (steps + 1) * self.dt_ms
        if self.ctx.size == 1:
            self.part.file.close()
            shutil.rmtree(self.part.path.parent, ignore_errors=True)
            self.writer.write_spikes(times, gids.astype(np.uint64))
            return
        grp = self.part.file.create_group("by_id")
        grp.create_dataset("timestamps", data=times)
        grp.create_dataset("node_ids", data=gids.astype(np.uint64))
        self.part.file.close()
        # per range: (range start gid, first row, stop row, part length)
        bounds = np.searchsorted(gids, ranges.ravel()).reshape(-1, 2)
        mine = np.column_stack([ranges[:, 0], bounds, np.full(len(ranges), len(gids))]).astype(np.int64)
        gathered = self.ctx.gather_arrays(mine.ravel())
        if self.writer is None:
            return
        rows = []
        for rank, arr in enumerate(gathered):
            for start, first, stop, length in arr.reshape(-1, 4):
                rows.append((int(start), f"{self.part.path.parent.name}/rank{rank}.h5", int(length), int(first),
                             int(stop)))
        rows.sort()
        self.writer.link_spikes([row[1:] for row in rows])


def read_summary(path: str | Path) -> dict:
    """The facts ``dtb inspect`` prints, read from a run file.

    Returns
    -------
    dict
        n_neurons, n_synapses, n_spikes, t_ms, mean_rate_hz, rates_hz (per population),
        build_s, sim_s, rtf, bytes_per_synapse, model, seed, dt_ms, dtb_version, ...

    Raises
    ------
    DataError
        Not a readable dtb run file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"run file {str(path)!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{str(path)!r} is not a readable HDF5 file ({err})") from None
    with f:
        if "summary" not in f or ("network" not in f and "assimilation" not in f):
            raise DataError(f"{str(path)!r} is not a complete dtb run file (no /summary, or neither /network nor "
                            "/assimilation)")
        facts = json.loads(f["summary"][()].decode() if isinstance(f["summary"][()], bytes) else f["summary"][()])
        facts["path"] = str(path)
        return facts
