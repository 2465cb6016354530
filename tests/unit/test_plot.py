"""dtb plot: the figures render (Agg) with the panels the run calls for."""

import json
import shutil

import matplotlib.image
import numpy as np
import pytest

from dtb import cli

RUNS = {
    "wholebrain": ["wholebrain.n_neurons=2000", "wholebrain.in_degree=30", "simulation.t_ms=400",
                   "recording.bold=true", "bold.tr_ms=50"],
    "pd14": ["model=pd14", "pd14.n_scale=0.02", "pd14.k_scale=0.05", "simulation.t_ms=200"],
}


@pytest.mark.parametrize("model,panels", [("wholebrain", "raster, rates, bold, fc"), ("pd14", "raster, rates")])
def test_plot_renders_the_panels(tmp_path, capsys, small_run, model, panels):
    run = tmp_path / "run.h5"
    shutil.copy(small_run(*RUNS[model])[0], run)  # the figure goes beside it
    # the BOLD of a 0.4 s run is all transient: 0.1 s of it is left out for the FC here (10 s by default)
    assert cli.main(["plot", str(run), "--neurons", "300", "--transient-s", "0.1"]) == 0
    fig = tmp_path / "run.png"
    assert capsys.readouterr().out.strip() == f"{fig}: {panels}"
    image = matplotlib.image.imread(fig)
    assert image.shape[1] == 1500 and image.shape[0] == (1710 if model == "wholebrain" else 780)
    assert np.std(image[..., :3]) > 0.05  # not blank
    assert cli.main(["plot", str(run), "-o", str(tmp_path / "fig.svg")]) == 0
    assert (tmp_path / "fig.svg").read_text().startswith("<?xml")


def test_plot_of_a_missing_file_is_one_line(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path / "none.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_compare_with_the_empirical_fc(tmp_path, capsys, small_run):
    """dtb compare: the run's FC after the transient against the recording's, and the SC-FC baseline, computed
    here from the bundled file directly."""
    import h5py

    from dtb.assimilation.metrics import fc_similarity
    from dtb.connectome.connectome import bundled_connectome_path

    run, _ = small_run(*RUNS["wholebrain"])
    assert cli.main(["compare", str(run), "--subject", "102311", "--transient-s", "0.1", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    with h5py.File(bundled_connectome_path()) as f:
        bold = f["subjects/102311/bold"][()]
        sc = f["subjects/102311/sc"][()]
        tr_s = float(f.attrs["tr_s"])
    with h5py.File(run) as f:
        mine = f["bold"][()][:, 2:]  # TR 50 ms: 0.1 s is 2 TRs
    assert facts["skipped_trs"] == 2 and facts["run_trs"] == mine.shape[1] and facts["empirical_trs"] == 1200
    assert facts["fc_r"] == pytest.approx(fc_similarity(np.corrcoef(mine), np.corrcoef(bold)), abs=1e-12)
    assert facts["sc_fc_r"] == pytest.approx(fc_similarity(sc, np.corrcoef(bold)), abs=1e-12)
    assert facts["empirical_tr_s"] == tr_s and facts["subject"] == "102311"
    fig = tmp_path / "cmp.png"
    assert cli.main(["compare", str(run), "--transient-s", "0.1", "-o", str(fig)]) == 0
    out = capsys.readouterr().out
    assert "subject 101309" in out and "baseline SC-FC" in out and fig.exists()  # the run's own subject
    assert cli.main(["compare", str(run)]) == 2  # 0.4 s of BOLD is all within the default 10 s transient
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FC needs at least 3" in err
    both = tmp_path / "both.png"
    assert cli.main(["plot", str(run), "-o", str(both), "--transient-s", "0.1", "--data",
                     str(bundled_connectome_path())]) == 0
    assert capsys.readouterr().out.strip() == f"{both}: raster, rates, bold, fc, empirical_fc, scatter"


def test_a_run_shorter_than_a_tr_has_no_bold_panel_and_no_warning(tmp_path, capsys, small_run):
    import warnings

    run, _ = small_run("wholebrain.n_neurons=2000", "wholebrain.in_degree=30", "simulation.t_ms=30",
                       "recording.bold=true", "bold.tr_ms=50")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["plot", str(run), "-o", str(tmp_path / "short.png")]) == 0
    assert capsys.readouterr().out.strip().endswith(": raster, rates")


def test_rate_heat_map_bins_are_at_least_10_ms(small_run):
    from dtb.io.analysis import open_run
    from dtb.plot import HEAT_BIN_MS, _downsampled

    run, _ = small_run(*RUNS["wholebrain"])
    with open_run(run) as r:
        rates = r.region_rates
        coarse = _downsampled(rates, HEAT_BIN_MS)
        assert rates.attrs["bin_ms"] < HEAT_BIN_MS <= coarse.attrs["bin_ms"]
        k = int(coarse.attrs["bin_ms"] / rates.attrs["bin_ms"])
        assert np.allclose(coarse.values[0], rates.values[:k].mean(axis=0))


@pytest.mark.parametrize("spikes, rates, panels", [(False, True, "raster, rates"), (False, False, "raster"),
                                                   (True, False, "raster")])
def test_a_run_that_recorded_less_plots_what_it_has(tmp_path, capsys, spikes, rates, panels):
    """No spikes stored, or no rates: the figure draws what the run chose to record (an empty raster says the
    spikes were not stored), and open_run reads it, instead of a file that lost them being taken for one."""
    import dtb

    net = dtb.Network(seed=1, dt_ms=0.1)
    e = net.population("E", 80, model="lif_cond")
    net.connect(e, [e], rule="fixed_in_degree", k=8, weight=0.4, delay_ms=1.5)
    net.drive([e], rate_hz=8.0, k=100, weight=0.4)
    out = tmp_path / "r.h5"
    with dtb.Session(net, out=out, backend="cpu") as s:
        s.record(spikes=spikes, rates=rates)
        s.run(50.0)
    with dtb.open_run(out) as run:
        assert (run.n_spikes > 0) == spikes and (run.rates is not None) == rates
        assert run.metadata["n_spikes"] > 0  # it spiked either way
    assert cli.main(["plot", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'r.png'}: {panels}"
