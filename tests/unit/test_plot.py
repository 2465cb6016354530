"""dtb plot: the figures render (Agg) with the panels the run calls for."""

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
    assert cli.main(["plot", str(run), "--neurons", "300"]) == 0
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
