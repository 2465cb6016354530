"""Recording on every rank: spikes and population rates into segment files.

Each rank appends its spikes (and rank 0 the population rates, summed over ranks)
to its current *segment*, ``<run>.parts/rank<r>.seg<k>.h5``. A checkpoint closes
segment ``k`` and opens ``k + 1``, so every segment a checkpoint names is a closed
file that no later write can damage. At the end each rank sorts its spikes by
(gid, time); `dtb.io.runfile.RunWriter` turns the segments into the run file.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import h5py
import numpy as np

from dtb.context import Context
from dtb.errors import WriteError
from dtb.io.runfile import checked_write, close_checked, file_digest


def segment_name(rank: int, k: int) -> str:
    return f"rank{rank}.seg{k}.h5"


#: a rank's spikes sorted by gid at the end of a many-rank run: ``rank<r>.spikes-<token>.h5`` (``rank<r>.h5`` in earlier
#: versions), the token new for each run, so that a new run never writes into the files an old one's spikes point to
_SORTED = re.compile(r"rank\d+(\.spikes-[0-9a-f]+)?\.h5")


def is_sorted_file(name: str) -> bool:
    """Whether a file of ``<run>.parts`` is a rank's sorted spikes (a finished run's, with ``stitch`` 'virtual')."""
    return bool(_SORTED.fullmatch(name))


class RowSources:
    """Rank 0's rows of one dataset (population rates, or a recorded state variable), spread over its
    segment files.

    Parameters
    ----------
    folder : Path
        The run's parts folder.
    rows : list of int
        Rows in each of rank 0's segments, in order.
    n_populations : int
        Columns (populations, or recorded neurons).
    bin_ms : float
        Time between rows (ms).
    dataset : str
        The dataset's name in the segment files.
    dtype : numpy dtype
    """

    def __init__(self, folder: Path, rows: list[int], n_populations: int, bin_ms: float, dataset: str = "rates",
                 dtype=np.float32):
        self.folder = folder
        self.rows = list(rows)
        self.n_populations = n_populations
        self.bin_ms = bin_ms
        self.dataset = dataset
        self.dtype = dtype

    @property
    def n_rows(self) -> int:
        return int(sum(self.rows))

    def link(self, f: h5py.File, name: str = "rates/population_hz") -> h5py.Dataset:
        """``f[name]`` as a virtual dataset over the segments (names relative to ``f``'s folder)."""
        shape = (self.n_rows, self.n_populations)
        if self.n_rows == 0:
            ds = f.create_dataset(name, shape=shape, dtype=self.dtype)
        else:
            layout = h5py.VirtualLayout(shape=shape, dtype=self.dtype)
            at = 0
            for k, n in enumerate(self.rows):
                if n:
                    source = h5py.VirtualSource(f"{self.folder.name}/{segment_name(0, k)}", self.dataset,
                                                shape=(n, self.n_populations))
                    layout[at:at + n] = source
                    at += n
            ds = f.create_virtual_dataset(name, layout)
        if self.dataset == "rates":
            ds.attrs.update(dict(bin_ms=self.bin_ms, units="Hz"))
        return ds

    def blocks(self, max_rows: int):
        """Yield the rate rows in order, at most ``max_rows`` at a time (float32, (rows, n_populations))."""
        for k, n in enumerate(self.rows):
            if not n:
                continue
            with h5py.File(self.folder / segment_name(0, k), "r") as f:
                for a in range(0, n, max_rows):
                    yield f[self.dataset][a:min(n, a + max_rows)]


class StateProbe:
    """Samples one state variable of some neurons every few steps; rank 0 gathers the samples at each flush.

    Parameters
    ----------
    name : str
        A key of ``VARIABLES[neuron_model]``.
    gids : ndarray, int64
        The recorded neurons (all ranks' together), increasing.
    every_steps : int
    recipe : Recipe
    net : LocalNetwork
        This rank's part: it samples the recorded neurons it holds.
    """

    #: name -> (state array, row of it or None, units), per model
    VARIABLES = {
        "lif_cond": {"v_mv": ("v", None, "mV"), "i_bg_mv_ms": ("i_bg", None, "mV/ms"), "j_ampa": ("j", 0, "1"),
                     "j_nmda": ("j", 1, "1"), "j_gaba_a": ("j", 2, "1"), "j_gaba_b": ("j", 3, "1")},
        "iaf_psc_exp": {"v_mv": ("v", None, "mV"), "i_ex_pa": ("i_ex", None, "pA"), "i_in_pa": ("i_in", None, "pA")},
    }

    def __init__(self, name: str, gids: np.ndarray, every_steps: int, recipe, net):
        self.check_variable(name, recipe.neuron_model)
        self.name, self.every_steps = name, every_steps
        self.key, self.row, self.units = self.VARIABLES[recipe.neuron_model][name]
        self.gids = np.asarray(gids, dtype=np.int64)
        self.n_total = len(self.gids)
        pos = np.searchsorted(net.gids, self.gids)
        pos = np.minimum(pos, max(net.n_local - 1, 0))
        here = (net.n_local > 0) & (net.gids[pos] == self.gids) if net.n_local else np.zeros(len(gids), bool)
        self.lids = pos[here]
        self.local_gids = self.gids[here]
        self.offset = 0.0 if recipe.neuron_model == "lif_cond" or name != "v_mv" else \
            np.array([p.neuron.e_l_mv for p in recipe.populations])[net.pop[self.lids]]
        self.samples: list[np.ndarray] = []
        self._order, self._placed = None, False
        self._lids_dev = None

    @classmethod
    def check_variable(cls, name: str, neuron_model: str) -> None:
        if name not in cls.VARIABLES[neuron_model]:
            from dtb.errors import ConfigError

            raise ConfigError(f"recording.state: {neuron_model} neurons have no variable {name!r} (they have "
                              f"{', '.join(cls.VARIABLES[neuron_model])})")

    def sample(self, engine, step: int) -> None:
        """Take the variable's current values of the local recorded neurons (``step``: the time is step * dt)."""
        if self._lids_dev is None:
            self._lids_dev = engine.xp.asarray(self.lids)
        a = engine.state[self.key]
        a = a[self.row] if self.row is not None else a
        self.samples.append(engine.to_host(a[self._lids_dev]) + self.offset)

    def gather(self, ctx) -> np.ndarray | None:
        """Collective: the samples since the last call of every rank, on rank 0, shape (samples, n_total)
        in gid order (None elsewhere)."""
        k = len(self.samples)
        mine = np.stack(self.samples).T.ravel() if k and len(self.lids) else np.zeros(0)
        self.samples.clear()
        parts = ctx.gather_arrays(mine)
        if not self._placed:  # every rank's first call: where each rank's columns go
            gids = ctx.gather_arrays(self.local_gids)
            self._order = np.argsort(np.concatenate(gids)) if gids is not None else None
            self._placed = True
        if parts is None or k == 0:
            return None if parts is None else np.zeros((0, self.n_total))
        cols = np.concatenate([p.reshape(-1, k) for p in parts if p.size])
        return np.ascontiguousarray(cols[self._order].T)


class SortedSpikes:
    """A rank's spikes sorted by (gid, time), produced block by block (`Recorder.sorted_spikes`).

    Parameters
    ----------
    total : int
    blocks : callable
        Returns a fresh iterator of (times_ms float64, node_ids uint64) blocks.
    """

    def __init__(self, total: int, blocks):
        self.total = total
        self.blocks = blocks

    def write(self, group: h5py.Group) -> tuple[np.ndarray, np.ndarray]:
        """Write ``timestamps`` and ``node_ids`` into ``group``; return (distinct gids, their spike counts)."""
        chunks = (min(self.total, 1 << 16),) if self.total else None
        ts = group.create_dataset("timestamps", shape=(self.total,), dtype=np.float64, chunks=chunks)
        ts.attrs["units"] = "ms"
        ids = group.create_dataset("node_ids", shape=(self.total,), dtype=np.uint64, chunks=chunks)
        at, gids, counts = 0, [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for t, i in self.blocks():
            ts[at:at + len(t)] = t
            ids[at:at + len(t)] = i
            at += len(t)
            g, c = np.unique(i.astype(np.int64), return_counts=True)
            gids.append(g)
            counts.append(c)
        assert at == self.total, (at, self.total)
        return np.concatenate(gids), np.concatenate(counts)


class Recorder:
    """Records one rank's spikes and the population rates of all ranks.

    Parameters
    ----------
    ctx : Context
    folder : Path
        The run's parts folder (``<run>.parts``); every rank creates it if missing.
    offsets : ndarray, shape (n_pop + 1,), int64
        Population gid offsets.
    dt_ms : float
    bin_steps : int
        Rate bin width in steps.
    spikes_of : list of int, or bool
        Populations whose spikes are stored (True: all, False: none).
    segment : int
        First segment to write: 0, or one past a checkpoint's last (see `restore`).
    rates : bool
        Store the population rates (their counts are kept either way, for the summary).
    probes : list of StateProbe
        State variables to record (gathered on rank 0 at each flush).

    Attributes
    ----------
    segment : int
        Index of the segment being written.
    spike_rows : list of int
        Spikes in each of this rank's closed segments.
    rate_rows : list of int
        Rate rows in each of rank 0's closed segments (rank 0 only).
    """

    def __init__(self, ctx: Context, folder: Path, offsets: np.ndarray, dt_ms: float, bin_steps: int,
                 spikes_of=True, segment: int = 0, rates: bool = True, probes=()):
        self.ctx = ctx
        self.folder = folder
        self.offsets = offsets
        self.sizes = np.diff(offsets)
        self.dt_ms = dt_ms
        self.bin_steps = bin_steps
        n_pop = len(self.sizes)
        chosen = list(range(n_pop)) if spikes_of is True else [] if spikes_of is False else list(spikes_of)
        self.spike_pops = np.zeros(n_pop, dtype=bool)
        self.spike_pops[chosen] = True
        self.record_spikes = bool(chosen)
        self.rates = rates
        self.probes = list(probes)
        self.state_rows: dict[str, list[int]] = {p.name: [] for p in self.probes}
        self.segment_digests: list[str] = []  # sha256 of this rank's closed segments
        self._steps: list[np.ndarray] = []
        self._gids: list[np.ndarray] = []
        self.bin0 = 0  # first bin still in memory
        self.counts = np.zeros((16, len(self.sizes)), dtype=np.int64)
        self.total_counts = np.zeros(len(self.sizes), dtype=np.int64)  # this rank's
        self.segment = segment
        self.spike_rows: list[int] = []
        self.rate_rows: list[int] = []
        checked_write(folder, lambda: folder.mkdir(exist_ok=True), "creating")  # every rank: none waits for another
        self.file = None  # until `start`: a resume that is refused leaves the segments as they were

    def start(self) -> None:
        """Open the first segment to write (``segment``; after `restore` when resuming)."""
        self.file = self._open_segment()

    def _open_segment(self) -> h5py.File:
        path = self.folder / segment_name(self.ctx.rank, self.segment)
        f = checked_write(path, lambda: h5py.File(path, "w"), "creating")
        for name, dtype in (("timestamps", np.float64), ("node_ids", np.uint64)):
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 16,))
        f["timestamps"].attrs["units"] = "ms"
        if self.ctx.is_root:
            n_pop = len(self.sizes)
            f.create_dataset("rates", shape=(0, n_pop), maxshape=(None, n_pop), dtype=np.float32,
                             chunks=(max(1, (1 << 16) // max(n_pop, 1)), n_pop))
            for p in self.probes:
                w = p.n_total
                f.create_dataset(f"state/{p.name}", shape=(0, w), maxshape=(None, w), dtype=np.float64,
                                 chunks=(max(1, (1 << 15) // max(w, 1)), w))
        return f

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
            keep = self.spike_pops[pops]
            self._steps.append(steps[keep])
            self._gids.append(gids[keep])

    @staticmethod
    def _append(ds: h5py.Dataset, rows: np.ndarray) -> None:
        n0 = ds.shape[0]
        ds.resize((n0 + len(rows),) + ds.shape[1:])
        ds[n0:] = rows

    def flush(self, step: int, final: bool = False) -> None:
        """Collective: store buffered spikes, and every rate bin complete at ``step`` (all if ``final``).

        A failed write on any rank (a full disk) raises a `WriteError` on every rank, here and at once:
        the segment is flushed explicitly, since h5py ignores errors when it closes a file.
        """
        # the collectives first, alike on every rank whatever its writes do
        states = [(p.name, p.gather(self.ctx)) for p in self.probes]
        n_done = -(-step // self.bin_steps) if final else step // self.bin_steps
        k = n_done - self.bin0
        rates = None
        if k > 0:
            self._room(k)
            counts = self.ctx.sum(self.counts[:k].copy())
            self.counts = np.concatenate([self.counts[k:], np.zeros_like(self.counts[:k])])
            self.bin0 = n_done
            if self.ctx.is_root:
                rates = (counts / self.sizes[None, :] / (self.bin_steps * self.dt_ms * 1e-3)).astype(np.float32)
        steps, gids = self._steps, self._gids
        self._steps, self._gids = [], []

        def write():
            f = self.file
            if steps:
                # a spike of step t is stamped at the end of its step, (t + 1) dt
                self._append(f["timestamps"], (np.concatenate(steps) + 1) * self.dt_ms)
                self._append(f["node_ids"], np.concatenate(gids).astype(np.uint64))
            for name, rows in states:
                if rows is not None and len(rows):
                    self._append(f[f"state/{name}"], rows)
            if rates is not None:
                self._append(f["rates"], rates)
            f.flush()

        self.ctx.everywhere(lambda: checked_write(self.file.filename, write), WriteError)

    def state(self) -> dict:
        """What a resumed run needs (after a `flush`): unfinished rate bins and spike totals."""
        return {"recorder/counts": self.counts, "recorder/total_counts": self.total_counts,
                "recorder/bin0": np.int64(self.bin0),
                "recorder/segment_sha256": np.array(self.segment_digests, dtype="S64")}

    def restore(self, state: dict, spike_rows: list[int], rate_rows: list[int],
                state_rows: dict | None = None) -> None:
        """Continue from a checkpoint: its `state`, and the lengths of its closed segments (this rank's spikes,
        rank 0's rate and state rows)."""
        self.counts = np.array(state["recorder/counts"])
        self.total_counts = np.array(state["recorder/total_counts"])
        self.bin0 = int(state["recorder/bin0"])
        self.spike_rows, self.rate_rows = list(spike_rows), list(rate_rows)
        self.segment_digests = [d.decode() for d in np.atleast_1d(state.get("recorder/segment_sha256", []))]
        for name, rows in (state_rows or {}).items():
            self.state_rows[name] = list(rows)

    def close(self) -> None:
        """Close the current segment (after a `flush`); it joins the closed ones."""
        self.spike_rows.append(self.file["node_ids"].shape[0])
        if self.ctx.is_root:
            self.rate_rows.append(self.file["rates"].shape[0])
            for p in self.probes:
                self.state_rows[p.name].append(self.file[f"state/{p.name}"].shape[0])
        path = Path(self.file.filename)
        close_checked(self.file, path)
        self.segment_digests.append(file_digest(path))
        self.segment += 1

    def check_segments(self, spike_rows, rate_rows, digests) -> str | None:
        """Whether this rank's closed segments hold what a checkpoint says (their sha256 ``digests``, spikes, and
        rank 0's rate rows); a description of the first that does not, or None. Reads every segment."""
        for k in range(self.segment):
            path = self.folder / segment_name(self.ctx.rank, k)
            if k < len(digests) and path.is_file() and file_digest(path) != digests[k]:
                return f"{path.name} is damaged (its content does not match the checkpoint's digest)"
            try:
                with h5py.File(path, "r") as f:
                    n = f["node_ids"].shape[0]
                    if n != spike_rows[k] or f["timestamps"].shape[0] != n:
                        return f"{path.name} holds {n} spikes, the checkpoint names {int(spike_rows[k])}"
                    if n:
                        f["node_ids"][n - 1], f["timestamps"][n - 1]
                    if self.ctx.is_root and f["rates"].shape[0] != rate_rows[k]:
                        return f"{path.name} holds {f['rates'].shape[0]} rate rows, the checkpoint names {rate_rows[k]}"
            except (OSError, KeyError) as err:
                return f"{path} is missing or damaged ({' '.join(str(err).split())[:200]})"
        return None

    def discard(self) -> None:
        """After a failure: close the open segment without checks (it is not named by any checkpoint), so that
        this process can open its name again (HDF5 would share the broken file's state otherwise)."""
        if self.file is not None and self.file.id.valid:
            import gc
            import sys

            # closing retries the writes that failed, and h5py reports each failure again from its
            # deallocators: the run already failed for that reason, once is enough
            hooks = sys.unraisablehook, sys.excepthook
            sys.unraisablehook, sys.excepthook = (lambda unraisable: None), (lambda *exc: None)
            try:
                self.file.close()
                gc.collect()
            except Exception:
                pass
            finally:
                sys.unraisablehook, sys.excepthook = hooks
        self.file = None

    def next_segment(self) -> None:
        """Close the current segment (after a `flush`) and start the next."""
        self.close()
        self.file = self._open_segment()

    def spike_table(self) -> np.ndarray | None:
        """Collective: spikes per (rank, closed segment), shape (n_ranks, n_segments), on rank 0 (None elsewhere)."""
        gathered = self.ctx.gather_arrays(np.asarray(self.spike_rows, dtype=np.int64))
        return None if gathered is None else np.array(gathered, dtype=np.int64).reshape(self.ctx.size, -1)

    def spike_sources(self, table: np.ndarray) -> list[tuple[str, int]]:
        """(path relative to the run file's folder, spikes) of every closed segment, segment by segment."""
        return [(f"{self.folder.name}/{segment_name(r, k)}", int(table[r, k]))
                for k in range(table.shape[1]) for r in range(table.shape[0])]

    def rate_sources(self, bin_ms: float) -> RowSources:
        """Rank 0: the closed segments' rate rows."""
        return RowSources(self.folder, self.rate_rows, len(self.sizes), bin_ms)

    def state_sources(self) -> list[tuple["StateProbe", RowSources]]:
        """Rank 0: each probe with its closed segments' rows."""
        return [(p, RowSources(self.folder, self.state_rows[p.name], p.n_total, p.every_steps * self.dt_ms,
                                dataset=f"state/{p.name}", dtype=np.float64)) for p in self.probes]

    def _segment_blocks(self, block: int):
        """This rank's closed segments' spikes, in recorded order, as (times_ms, node_ids) blocks."""
        for k in range(self.segment):
            with h5py.File(self.folder / segment_name(self.ctx.rank, k), "r") as f:
                n = f["node_ids"].shape[0]
                for a in range(0, n, block):
                    yield f["timestamps"][a:a + block], f["node_ids"][a:a + block]

    def sorted_spikes(self, gids: np.ndarray, max_spikes: int):
        """This rank's spikes sorted by (gid, time), in blocks of whole neurons, holding at most about
        ``max_spikes`` spikes in memory at a time.

        When all of them fit, one read and one sort. Otherwise a first pass counts each local
        neuron's spikes, and then each window of neurons whose spikes fit is read from every
        segment (the segments are read once per window), sorted and handed on.

        Parameters
        ----------
        gids : ndarray, shape (n_local,), int64
            The local gids, increasing.
        max_spikes : int

        Yields
        ------
        times_ms : ndarray, float64
        node_ids : ndarray, uint64
        """
        if not self.record_spikes:
            return
        total = int(sum(self.spike_rows))
        block = max(1, min(max_spikes, 1 << 20))
        if total <= max_spikes:
            windows = [(0, len(gids))]
        else:
            counts = np.zeros(len(gids), dtype=np.int64)
            for _, ids in self._segment_blocks(block):
                counts += np.bincount(np.searchsorted(gids, ids.astype(np.int64)), minlength=len(gids))
            cum = np.concatenate([[0], np.cumsum(counts)])
            windows, a = [], 0
            while a < len(gids):
                # the largest window from a whose spikes fit (at least one neuron)
                b = max(a + 1, int(np.searchsorted(cum, cum[a] + max_spikes, side="right")) - 1)
                windows.append((a, b))
                a = b
        for a, b in windows:
            lo, hi = int(gids[a]), int(gids[b - 1]) + 1
            times, ids = [np.zeros(0)], [np.zeros(0, np.uint64)]
            for t, i in self._segment_blocks(block):
                keep = (i >= lo) & (i < hi) if len(windows) > 1 else slice(None)
                times.append(t[keep])
                ids.append(i[keep])
            times, ids = np.concatenate(times), np.concatenate(ids)
            order = np.lexsort((times, ids))
            yield times[order], ids[order]

    def finish_spikes(self, ranges: np.ndarray, gids: np.ndarray, max_spikes: int | None = None):
        """Collective, after `close`: sort each rank's spikes by (gid, time), in bounded memory.

        Parameters
        ----------
        ranges : ndarray, shape (k, 2), int64
            This rank's gid ranges [start, stop).
        gids : ndarray, shape (n_local,), int64
            This rank's gids, increasing.
        max_spikes : int, optional
            Spikes sorted in memory at a time (`sorted_spikes`); default from the memory this
            rank may use (40 bytes per spike, a quarter of its share).

        Returns
        -------
        SortedSpikes, or list of (relative path, length, first, stop), or None
            On rank 0, what `RunWriter.finish` stores: a one-rank run's sorted spikes, or the
            gid-ordered row ranges of the ranks' sorted files ``rank<r>.spikes-<token>.h5``; None on other ranks.
        """
        if max_spikes is None:
            from dtb.context import available_bytes, ranks_per_node

            max_spikes = max(1 << 20, available_bytes() // ranks_per_node(self.ctx.size) // 160)
        spikes = SortedSpikes(int(sum(self.spike_rows)) if self.record_spikes else 0,
                              lambda: self.sorted_spikes(gids, max_spikes))
        if self.ctx.size == 1:
            return spikes
        token = self.ctx.bcast(secrets.token_hex(4) if self.ctx.is_root else None)
        sorted_file = self.folder / f"rank{self.ctx.rank}.spikes-{token}.h5"

        def write():
            with h5py.File(sorted_file, "w") as f:
                counts = spikes.write(f)
                f.flush()  # raises on a failed write, which closing would ignore
            return counts

        per_gid = self.ctx.everywhere(lambda: checked_write(sorted_file, write), WriteError)
        # per range: (range start gid, first row, stop row, part length)
        first = np.searchsorted(per_gid[0], ranges.ravel()).reshape(-1, 2)
        rows = np.concatenate([[0], np.cumsum(per_gid[1])])[first]
        mine = np.column_stack([ranges[:, 0], rows, np.full(len(ranges), spikes.total)]).astype(np.int64)
        gathered = self.ctx.gather_arrays(mine.ravel())
        if gathered is None:
            return None
        rows = sorted((int(start), f"{self.folder.name}/rank{rank}.spikes-{token}.h5", int(length), int(first),
                       int(stop))
                      for rank, arr in enumerate(gathered) for start, first, stop, length in arr.reshape(-1, 4))
        return [row[1:] for row in rows]

    def remove_segments(self, keep: list[str]) -> None:
        """Rank 0, once the final file is in place: delete everything in the folder but the files ``keep`` names
        (the sorted files the run file's spikes point to; those of an earlier run it replaced go too)."""
        for p in self.folder.glob("*"):
            if f"{self.folder.name}/{p.name}" not in keep:
                p.unlink(missing_ok=True)
