"""``dtb plot``: one figure of a run: raster, rates, BOLD and its FC; of an assimilation, the twin judged on
held-out TRs.

Reads through `dtb.io.analysis`, so spikes stream (only the sampled neurons' spikes
are kept) and long rate series are averaged down to at most ``MAX_POINTS`` bins.
Uses matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dtb.errors import DataError
from dtb.io.analysis import TRANSIENT_S, Run, bold_fc, compare_fc, open_run

MAX_POINTS = 2000
#: the rate heat map's bins are at least this wide (ms): 1 ms bins of a few hundred neurons are mostly noise
HEAT_BIN_MS = 10.0
#: populations up to which rates are drawn as lines (one per population) rather than a heat map of regions
MAX_LINES = 16


def _raster(ax, run: Run, n_neurons: int) -> None:
    step = max(1, run.n_neurons // n_neurons)
    t_all, y_all = [], []
    for times, ids in run.spike_blocks():
        keep = ids % step == 0
        t_all.append(times[keep])
        y_all.append(ids[keep])
    times = np.concatenate(t_all) if t_all else np.zeros(0)
    ids = np.concatenate(y_all) if y_all else np.zeros(0, dtype=np.int64)
    exc = run.population_excitatory[run.population_of(ids)]
    for mask, colour, label in ((exc, "tab:blue", "excitatory"), (~exc, "tab:red", "inhibitory")):
        ax.scatter(times[mask], ids[mask], s=1.0, c=colour, marker="|", linewidths=0.5, label=label)
    ax.set_xlim(0, run.t_ms)
    ax.set_ylim(-0.5, run.n_neurons)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron id")
    if run.n_spikes == 0 and run.metadata.get("n_spikes", 0) > 0:
        ax.set_title(f"no spikes stored (the run recorded none of its {run.metadata['n_spikes']:,} spikes)")
    else:
        ax.set_title(f"spikes of every {step}th neuron ({len(times):,} of {run.n_spikes:,} spikes)")
    if len(times):
        ax.legend(loc="upper right", markerscale=8, fontsize="small")


def _rates(fig, ax, run: Run) -> None:
    """Population rates as lines (up to `MAX_LINES` populations), else a heat map of the regions' rates."""
    if len(run.populations) <= MAX_LINES:
        rates = _downsampled(run.rates).compute()
        for name in run.populations:
            ax.plot(rates.time, rates.sel(population=name), lw=0.8, label=name)
        ax.set_xlim(0, run.t_ms)
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("rate (Hz)")
        ax.set_title(f"population rates ({rates.attrs['bin_ms']:g} ms bins)")
        ax.legend(fontsize="x-small", ncol=4, loc="upper right")
    else:
        rates = run.region_rates if run.region_rates is not None else run.rates
        rates = _downsampled(rates, HEAT_BIN_MS).compute()
        labels = [str(x) for x in rates[rates.dims[1]].values]
        values = rates.values
        # the 99th percentile, so that a few bins of synchronous bursts do not set the scale of all
        vmax = float(np.percentile(values, 99)) if values.size else None
        bin_ms = rates.attrs["bin_ms"]
        _heat(fig, ax, values, (0, run.t_ms, 0, len(labels)), labels, "rate (Hz)",
              f"{rates.dims[1]} rates ({bin_ms:g} ms bins; colour scale to the 99th percentile)",
              cmap="viridis", vmin=0, vmax=vmax or None)
        ax.set_xlabel("time (ms)")


def _heat(fig, ax, values: np.ndarray, extent, labels: list[str], label: str, title: str, **kw) -> None:
    im = ax.imshow(values.T, aspect="auto", origin="lower", interpolation="nearest", extent=extent, **kw)
    every = max(1, len(labels) // 24)
    ax.set_yticks(np.arange(0, len(labels), every) + 0.5 if extent else np.arange(0, len(labels), every))
    ax.set_yticklabels(labels[::every], fontsize=5)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=label, pad=0.01)


def _save(fig, out) -> None:
    """Write ``fig`` to ``out`` (one line if that fails) and free it."""
    import matplotlib.pyplot as plt

    from dtb.io.runfile import write_replacing

    kind = Path(out).suffix[1:].lower() or "png"
    try:
        # written beside it and renamed: a failed write (a full disk) leaves no half picture under its name
        write_replacing(out, lambda tmp: fig.savefig(tmp, dpi=150, format=kind), "writing the figure")
    except ValueError as err:  # a format matplotlib does not write
        raise DataError(f"cannot write the figure {str(out)!r}: {err}") from None
    finally:
        plt.close(fig)


def _downsampled(rates, min_bin_ms: float = 0.0):
    """Rates averaged down to at most `MAX_POINTS` bins of at least ``min_bin_ms``."""
    k = max(1, -(-rates.sizes["time"] // MAX_POINTS), int(np.ceil(min_bin_ms / rates.attrs["bin_ms"] - 1e-9)))
    k = min(k, max(1, rates.sizes["time"]))
    if k == 1:
        return rates
    out = rates.coarsen(time=k, boundary="trim").mean()
    out.attrs = {**rates.attrs, "bin_ms": rates.attrs["bin_ms"] * k}
    return out


def plot_run(path: str | Path, out: str | Path, n_neurons: int = 500, data: str | Path | None = None,
             subject: str | None = None, transient_s: float = TRANSIENT_S) -> list[str]:
    """Draw the run file ``path`` into the image ``out`` (format from its suffix: png, pdf, svg).

    Parameters
    ----------
    path : str or Path
        A run file (or an unfinished run's ``.partial`` checkpoint).
    out : str or Path
    n_neurons : int
        About how many neurons the raster shows (every k-th gid).
    data, subject : optional
        A recorded BOLD to compare the run's FC with (`dtb.io.analysis.compare_fc`): adds the empirical FC and a
        scatter of the two.
    transient_s : float
        Seconds of BOLD left out of the FC (the rise from rest).

    Returns
    -------
    list of str
        The panels drawn, in order: 'raster', 'rates' when the run recorded them, 'bold' when it has a TR of
        BOLD, 'fc' when it has 3 TRs after the transient, 'empirical_fc' and 'scatter' with ``data``; for an
        assimilation's run file those of `plot_assimilation`.
    """
    import h5py

    from dtb.io.hdf5 import check_input_file

    check_input_file(Path(path), "run file")  # a FIFO is refused, never opened
    try:
        with h5py.File(path, "r") as f:
            assimilation = "assimilation" in f
    except OSError:
        assimilation = False  # open_run says what is wrong with the file
    if assimilation:
        return plot_assimilation(path, out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open_run(path) as run:
        bold = run.bold
        cmp = compare_fc(run, data, subject, transient_s) if data is not None else None
        n_trs = bold.sizes["time"] if bold is not None else 0
        skip = int(np.ceil(transient_s / bold.attrs["tr_s"] - 1e-9)) if bold is not None else 0
        rows = ["raster"] + (["rates"] if run.rates is not None else []) + (["bold"] if n_trs else []) + \
            (["fc"] if n_trs - skip >= 3 else [])
        heights = {"raster": 3, "rates": 2.2, "bold": 2.2, "fc": 4}
        fig = plt.figure(figsize=(10 if cmp is None else 14, sum(heights[r] for r in rows)))
        grid = fig.add_gridspec(len(rows), 3, height_ratios=[heights[r] for r in rows])
        axes = {r: fig.add_subplot(grid[i, :] if r != "fc" or cmp is None else grid[i, 0]) for i, r in enumerate(rows)}
        title = f"{run.metadata['model']}: {run.n_neurons:,} neurons, {run.t_ms:g} ms, seed {run.metadata['seed']}"
        fig.suptitle(f"{Path(path).name} - {title}")
        _raster(axes["raster"], run, n_neurons)

        if "rates" in axes:
            _rates(fig, axes["rates"], run)

        if "bold" in axes:
            ax = axes["bold"]
            _heat(fig, ax, bold.values, (0, float(bold.time[-1]), 0, len(run.regions)), run.regions, "BOLD (1)",
                  f"BOLD per region (TR {bold.attrs['tr_s']:g} s, {bold.attrs['params']} parameters)", cmap="magma")
            ax.set_xlabel("time (s)")
        if "fc" in axes:
            fc = bold_fc(run, skip_trs=skip).values
            _fc_image(axes["fc"], fc, run.regions, f"BOLD FC of the run (TRs {skip} to {n_trs - 1}: the first "
                                                  f"{transient_s:g} s left out)")
            if cmp is not None:
                _compare_panels(fig.add_subplot(grid[rows.index("fc"), 1]),
                                fig.add_subplot(grid[rows.index("fc"), 2]), cmp, run.regions)
        panels = rows + (["empirical_fc", "scatter"] if cmp is not None and "fc" in rows else [])
        fig.tight_layout()
        _save(fig, out)
    return panels


def plot_compare(cmp: dict, regions: list[str], out: str | Path, title: str) -> list[str]:
    """Draw `dtb.io.analysis.compare_fc`'s result: the run's FC, the empirical FC, and a scatter of the two.

    Returns
    -------
    list of str
        ['fc', 'empirical_fc', 'scatter'].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    fig.suptitle(title)
    _fc_image(axes[0], cmp["fc_run"], regions, f"BOLD FC of the run ({cmp['run_trs']} TRs after "
                                               f"{cmp['skipped_trs']} left out)")
    _compare_panels(axes[1], axes[2], cmp, regions)
    fig.tight_layout()
    _save(fig, out)
    return ["fc", "empirical_fc", "scatter"]


def _fc_image(ax, fc: np.ndarray, regions: list[str], title: str) -> None:
    ax.imshow(fc, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    every = max(1, len(regions) // 24)
    ticks = np.arange(0, len(regions), every)
    ax.set_xticks(ticks)
    ax.set_xticklabels(regions[::every], fontsize=5, rotation=90)
    ax.set_yticks(ticks)
    ax.set_yticklabels(regions[::every], fontsize=5)
    ax.set_title(title, fontsize="small")


def _compare_panels(ax_fc, ax_scatter, cmp: dict, regions: list[str]) -> None:
    _fc_image(ax_fc, cmp["fc_empirical"], regions,
              f"empirical FC, subject {cmp['subject']} ({cmp['empirical_trs']} TRs)")
    iu = np.triu_indices(len(regions), 1)
    ax_scatter.scatter(cmp["fc_empirical"][iu], cmp["fc_run"][iu], s=2, alpha=0.4)
    ax_scatter.plot([-1, 1], [-1, 1], lw=0.5, c="grey")
    ax_scatter.set_xlim(-1, 1)
    ax_scatter.set_ylim(-1, 1)
    ax_scatter.set_xlabel("empirical FC (r)")
    ax_scatter.set_ylabel("run FC (r)")
    base = f"; SC-FC baseline r = {cmp['sc_fc_r']:.3f}" if cmp["sc_fc_r"] is not None else ""
    ax_scatter.set_title(f"r = {cmp['fc_r']:.3f} over {len(iu[0]):,} region pairs{base}", fontsize="small")


def plot_assimilation(path: str | Path, out: str | Path) -> list[str]:
    """Draw an assimilation's run file: the held-out FC beside the fitted twin's and the unfitted model's (each
    titled with its similarity to the held-out one), and the fitted hyperparameters over the assimilated TRs.

    Returns
    -------
    list of str
        The panels drawn: 'heldout_fc' (when the run held TRs out) and 'hyper'.
    """
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dtb.assimilation.metrics import fc_similarity, functional_connectivity

    with h5py.File(path, "r") as f:
        g = f["assimilation"]
        names = list(g["hyper_names"].asstr()[()])
        hyper = g["hyper_mean"][()]                                  # (T, R, H)
        subject, calib = g.attrs["subject"], int(g.attrs.get("calibration_trs", 0))
        val = g.get("validation")
        fcs = None
        if val is not None:
            held = functional_connectivity(val["bold_observed"][()])
            fcs = [("held-out recording", held, None)] + [
                (what, fc, fc_similarity(fc, held)) for what, fc in
                (("fitted twin", functional_connectivity(val["bold_twin"][()])),
                 ("unfitted model", functional_connectivity(val["bold_unfitted"][()])))]
            first_tr, n_val = int(val.attrs["first_tr"]), int(val.attrs["trs"])
    panels = (["heldout_fc"] if fcs else []) + ["hyper"]
    fig = plt.figure(figsize=(13, 8.5 if fcs else 4))
    grid = fig.add_gridspec(2 if fcs else 1, 3, height_ratios=[1.3, 1] if fcs else [1])
    fig.suptitle(f"{Path(path).name} - assimilation of subject {subject}")
    if fcs:
        for k, (what, fc, r) in enumerate(fcs):
            ax = fig.add_subplot(grid[0, k])
            im = ax.imshow(fc, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"FC, {what}" + (f"\nr = {r:.3f} with the held-out FC" if r is not None else
                                          f"\nTRs {first_tr} to {first_tr + n_val - 1}, unseen by the fit"),
                         fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=fig.axes, label="Pearson r", shrink=0.5, location="right")
    ax = fig.add_subplot(grid[-1, :])
    trs = np.arange(hyper.shape[0])
    for h, name in enumerate(names):
        ax.plot(trs[calib:], np.nanmean(hyper[calib:, :, h], axis=1), label=f"{name} (mean over regions)")
    ax.set_xlabel("TR")
    ax.set_ylabel("gain")
    ax.set_title(f"posterior-mean hyperparameters (TRs 0 to {calib - 1}: calibration window, not assimilated)",
                 fontsize="small")
    ax.legend(fontsize="small")
    _save(fig, out)
    return panels
