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
from dtb.io.analysis import Run, open_run

MAX_POINTS = 2000
#: populations up to which rates are drawn as lines (one per population) rather than a heat map of regions
MAX_LINES = 16


def _raster(ax, run: Run, n_neurons: int) -> None:
    step = max(1, run.n_neurons // n_neurons)
    t_all, y_all = [], []
    for times, ids in run.spike_blocks():
        keep = ids % step == 0
        t_all.append(times[keep])
        y_all.append(ids[keep])
    times, ids = np.concatenate(t_all), np.concatenate(y_all)
    exc = run.population_excitatory[run.population_of(ids)]
    for mask, colour, label in ((exc, "tab:blue", "excitatory"), (~exc, "tab:red", "inhibitory")):
        ax.scatter(times[mask], ids[mask], s=1.0, c=colour, marker="|", linewidths=0.5, label=label)
    ax.set_xlim(0, run.t_ms)
    ax.set_ylim(-0.5, run.n_neurons)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron id")
    ax.set_title(f"spikes of every {step}th neuron ({len(times):,} of {run.n_spikes:,} spikes)")
    ax.legend(loc="upper right", markerscale=8, fontsize="small")


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

    try:
        fig.savefig(out, dpi=150)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot write the figure {str(out)!r}: {err}") from None
    finally:
        plt.close(fig)


def _downsampled(rates):
    k = max(1, -(-rates.sizes["time"] // MAX_POINTS))
    return rates.coarsen(time=k, boundary="trim").mean() if k > 1 else rates


def plot_run(path: str | Path, out: str | Path, n_neurons: int = 500) -> list[str]:
    """Draw the run file ``path`` into the image ``out`` (format from its suffix: png, pdf, svg).

    Parameters
    ----------
    path : str or Path
        A run file (or an unfinished run's ``.partial`` checkpoint).
    out : str or Path
    n_neurons : int
        About how many neurons the raster shows (every k-th gid).

    Returns
    -------
    list of str
        The panels drawn, in order: 'raster', 'rates', and 'bold', 'fc' when the run has BOLD; for an
        assimilation's run file those of `plot_assimilation`.
    """
    import h5py

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

    from dtb.io.analysis import bold_fc

    with open_run(path) as run:
        bold = run.bold
        panels = ["raster", "rates"] + (["bold"] if bold is not None else [])
        panels += ["fc"] if bold is not None and bold.sizes["time"] >= 3 else []
        heights = {"raster": 3, "rates": 2.2, "bold": 2.2, "fc": 4}
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights[p] for p in panels)),
                                 gridspec_kw=dict(height_ratios=[heights[p] for p in panels]), squeeze=False)
        axes = dict(zip(panels, axes[:, 0]))
        title = f"{run.metadata['model']}: {run.n_neurons:,} neurons, {run.t_ms:g} ms, seed {run.metadata['seed']}"
        fig.suptitle(f"{Path(path).name} - {title}")
        _raster(axes["raster"], run, n_neurons)

        ax = axes["rates"]
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
            rates = _downsampled(rates).compute()
            labels = [str(x) for x in rates[rates.dims[1]].values]
            _heat(fig, ax, rates.values, (0, run.t_ms, 0, len(labels)), labels, "rate (Hz)",
                  f"{rates.dims[1]} rates", cmap="viridis")
            ax.set_xlabel("time (ms)")

        if "bold" in axes:
            ax = axes["bold"]
            values = bold.values
            t_end = float(bold.time[-1]) if bold.sizes["time"] else 0.0
            _heat(fig, ax, values, (0, t_end, 0, len(run.regions)), run.regions, "BOLD (1)",
                  f"BOLD per region (TR {bold.attrs['tr_s']:g} s, {bold.attrs['params']} parameters)", cmap="magma")
            ax.set_xlabel("time (s)")
        if "fc" in axes:
            ax = axes["fc"]
            fc = bold_fc(run)
            _heat(fig, ax, fc.values, None, run.regions, "Pearson r", "functional connectivity of the BOLD signal",
                  cmap="RdBu_r", vmin=-1, vmax=1)
            every = max(1, len(run.regions) // 24)
            ax.set_xticks(np.arange(0, len(run.regions), every))
            ax.set_xticklabels(run.regions[::every], fontsize=5, rotation=90)
        fig.tight_layout()
        _save(fig, out)
    return panels


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
