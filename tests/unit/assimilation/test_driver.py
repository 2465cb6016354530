"""dtb assimilate: the /assimilation group, the metrics, and recovery of known hyperparameters."""

import json

import h5py
import numpy as np
import pytest

from dtb.assimilation.driver import assimilate
from dtb.cli import main
from dtb.config import load_config
from dtb.connectome.connectome import bundled_connectome_path
from dtb.errors import ConfigError

SMALL = ["wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.dt_ms=1.0", "assimilation.members=3",
         "assimilation.trs=12", "assimilation.calibration_trs=2", "assimilation.spinup_ms=200",
         "assimilation.burn_in_trs=1", "assimilation.forecast5_every=2", "validation.trs=6", "validation.forecast_trs=3",
         "recording.progress=false"]
CALIB = 2
HELDOUT = ("heldout_fc_r", "baseline_sc_fc_r", "baseline_log_sc_fc_r", "baseline_unfitted_fc_r", "baseline_group_fc_r",
           "retest_fc_r", "specific", "heldout_forecast_r", "heldout_persistence_r", "heldout_ar1_r",
           "heldout_forecast_mse", "heldout_persistence_mse", "heldout_ar1_mse")


def test_assimilate_writes_a_complete_group(tmp_path, capsys):
    out = tmp_path / "a.h5"
    assert main(["assimilate", "--out", str(out), "--subject", "102311", "--json",
                 *[x for o in SMALL for x in ("--set", o)]]) == 0
    printed = json.loads(capsys.readouterr().out)
    with h5py.File(out) as f:
        g = f["assimilation"]
        r, t, h, c = 94, 12, 3, CALIB
        for name in ("bold_observed", "bold_prior", "bold_posterior", "bold_forecast5", "bold_replay"):
            assert g[name].shape == (r, t), name
        assert g["hyper_mean"].shape == (t, r, h) and g["hyper_sd"].shape == (t, r, h)
        assert list(g["hyper_names"].asstr()[()]) == ["g_ampa", "g_gaba_a", "i_bg"]
        # the calibration window is not assimilated
        for name in ("bold_prior", "bold_posterior", "bold_replay"):
            assert np.isnan(g[name][:, :c]).all() and np.isfinite(g[name][:, c:]).all(), name
        # forecasts are made every second TR from the first assimilated one on, NaN elsewhere
        made = ~np.isnan(g["bold_forecast5"][0])
        assert list(np.flatnonzero(made)) == [7, 9, 11]
        obs = g["bold_observed"][()]
        # the causal scale: the calibration window's s.d. is (obs_hi - obs_lo) / 6, its mean the model's level
        np.testing.assert_allclose(obs[:, :c].std(axis=1), (0.03 - 0.01) / 6, rtol=1e-9)
        mean = g["hyper_mean"][()]
        assert np.isnan(mean[:c]).all()
        # inside the bounds (up to rounding where the ensemble's 3 members all sit on one)
        assert (mean[c:, :, 0] > 0.5 - 1e-9).all() and (mean[c:, :, 0] < 2.0 + 1e-9).all()
        assert (mean[c:, :, 2] > 0.7 - 1e-9).all() and (mean[c:, :, 2] < 1.3 + 1e-9).all()
        assert (g["hyper_sd"][c:] >= 0).all()
        for name in ("tracking_r", "forecast_r", "persistence_r", "forecast5_r", "persistence5_r"):
            assert g[f"metrics/{name}"].shape == (r,)
        assert g.attrs["preprocessing"].startswith("causal, per region: the mean of the first 2 TRs")
        assert f["bold"].shape == (r, t - c) and f["bold"].attrs["tr_ms"] == pytest.approx(720.0)
        spec = f["assimilation/specificity"]
        assert len(spec["subjects"]) == 4 and "102311" not in list(spec["subjects"].asstr()[()])
        v = f["assimilation/validation"]
        assert v.attrs["first_tr"] == t and v.attrs["trs"] == 6 and v.attrs["forecast_trs"] == 3
        for name in ("bold_observed", "bold_twin", "bold_unfitted"):
            assert v[name].shape == (r, 6) and np.isfinite(v[name][()]).all(), name
        assert v["bold_prior"].shape == (r, 3) and np.isfinite(v["bold_prior"][()]).all()
        # the twin's fixed hyperparameters: the posterior mean over the last half of the scored fitted TRs
        np.testing.assert_allclose(v["hyper_twin"][()], mean[-((t - c - 1) // 2):].mean(axis=0))
        assert v["specificity"].attrs["own_r"] == pytest.approx(f["assimilation"].attrs["metrics/heldout_fc_r"])
        summary = json.loads(f["summary"][()])
    assert summary["metrics"] == printed["metrics"]
    assert set(summary["metrics"]) == {"tracking_r", "forecast_r", "persistence_r", "forecast5_r", "persistence5_r",
                                       "replay_fc_r", *HELDOUT}
    assert summary["specificity"]["own_r"] == summary["metrics"]["replay_fc_r"]
    assert summary["heldout_specificity"]["own_r"] == summary["metrics"]["heldout_fc_r"]
    # the tracking figure is near one by construction only with enough members; here it must at least be positive
    assert summary["metrics"]["tracking_r"] > 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "assimilation of subject 102311" in text and "forecast5_r" in text and "specificity" in text
    assert "held out   (TRs 12 to 17" in text and "in-sample" in text
    # the picture: the held-out FC beside the twin's and the unfitted model's, and the fitted gains
    assert main(["plot", str(out), "-o", str(tmp_path / "a.png")]) == 0
    assert capsys.readouterr().out.strip().endswith("heldout_fc, hyper")
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_assimilate_refuses_bad_requests(tmp_path):
    base = load_config(overrides=SMALL)
    with pytest.raises(ConfigError, match="has only 1200 TRs"):
        assimilate(load_config(overrides=SMALL + ["assimilation.trs=5000"]), tmp_path / "x.h5")
    with pytest.raises(ConfigError, match="must lie inside assimilation.i_bg_bounds"):
        assimilate(load_config(overrides=SMALL + ["hyper.i_bg=2"]), tmp_path / "x.h5")
    with pytest.raises(Exception, match="subject '999' not"):
        assimilate(base, tmp_path / "x.h5", subject="999")
    with pytest.raises(ConfigError, match="assimilation.fit"):
        load_config(overrides=["assimilation.fit=g_ampa,g_nope"])
    assert list(tmp_path.iterdir()) == []


def test_replay_size(tmp_path):
    """0 replays a member-sized brain (the same replay as naming that size); a bigger brain is replayed with the
    same hyperparameters, the filter unchanged; a size too small for the regions fails before the filter runs."""
    base = SMALL + ["assimilation.trs=6", "assimilation.forecast5_every=0", "validation.trs=3",
                    "validation.forecast_trs=0"]
    runs = {}
    for n in (0, 2000, 6000):
        summary = assimilate(load_config(overrides=base + [f"validation.n_neurons={n}"]),
                             tmp_path / f"{n}.h5")
        with h5py.File(tmp_path / f"{n}.h5") as f:
            runs[n] = summary, f["assimilation/bold_replay"][()], f["assimilation/hyper_mean"][()]
    assert runs[0][0]["replay_n_neurons"] == 2000 and runs[6000][0]["replay_n_neurons"] == 6000
    np.testing.assert_array_equal(runs[0][1], runs[2000][1])
    np.testing.assert_array_equal(runs[0][2], runs[6000][2])
    assert np.isfinite(runs[6000][1][:, CALIB:]).all() and not np.array_equal(runs[0][1], runs[6000][1])
    with pytest.raises(ConfigError, match="validation.n_neurons: .* too small for 94 regions"):
        assimilate(load_config(overrides=base + ["validation.n_neurons=300"]), tmp_path / "x.h5")
    with pytest.warns(FutureWarning, match="validation.n_neurons"):
        assert load_config(overrides=["assimilation.replay_n_neurons=6000"]).validation.n_neurons == 6000
    assert not (tmp_path / "x.h5").exists()


def test_the_sweep_keeps_the_pair_closest_to_the_fit_window_and_the_filter_runs_with_it(tmp_path, capsys):
    """Members spread over the (coupling, w_i_trace) pairs run free on the fit window; the best pair by mean
    fit-window FC r is kept, and the filter, the replay and the twin are then exactly the assimilation configured
    with that pair, while the unfitted baseline stays the configured model."""
    base = SMALL + ["assimilation.members=4", "validation.forecast_trs=0", "assimilation.forecast5_every=0"]
    sweep = ["assimilation.sweep_coupling=[0.5, 3]", "assimilation.sweep_w_i_trace=[1.5, 2.5]"]
    s = assimilate(load_config(overrides=base + sweep), tmp_path / "s.h5")["sweep"]
    assert s["coupling"] == [0.5, 0.5, 3, 3] and s["w_i_trace"] == [1.5, 2.5, 1.5, 2.5] and s["fit_trs"] == [3, 12]
    assert len(s["member_fc_r"]) == 4 and s["fc_r"] == s["member_fc_r"]  # one member per pair
    assert s["best"] == int(np.argmax(s["fc_r"]))
    kept = [f"wholebrain.coupling={s['coupling'][s['best']]}", f"wholebrain.w_i_trace={s['w_i_trace'][s['best']]}"]
    assimilate(load_config(overrides=base + kept), tmp_path / "k.h5")
    assimilate(load_config(overrides=base), tmp_path / "u.h5")
    with h5py.File(tmp_path / "s.h5") as a, h5py.File(tmp_path / "k.h5") as b, h5py.File(tmp_path / "u.h5") as u:
        for name in ("hyper_mean", "bold_prior", "bold_posterior", "bold_replay", "validation/bold_twin"):
            np.testing.assert_array_equal(a[f"assimilation/{name}"][()], b[f"assimilation/{name}"][()], err_msg=name)
        np.testing.assert_array_equal(a["assimilation/validation/bold_unfitted"][()],
                                      u["assimilation/validation/bold_unfitted"][()])
        g = a["assimilation/sweep"]
        np.testing.assert_array_equal(g["fc_r"][()], s["fc_r"])
        assert g.attrs["best"] == s["best"] and "in-sample" in g.attrs["about"]
        assert a["assimilation"].attrs["metrics/sweep_fc_r"] == s["fc_r"][s["best"]]
        # the run file keeps the configuration as given: the sweep's choice is its own record
        assert "sweep_coupling = [" in a["config"][()].decode()
    assert main(["inspect", str(tmp_path / "s.h5")]) == 0
    assert "sweep      4 pairs" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="4 pairs of global parameters for 3 members"):
        assimilate(load_config(overrides=SMALL + sweep), tmp_path / "x.h5")
    with pytest.raises(ConfigError, match="without repeats"):
        load_config(overrides=["assimilation.sweep_coupling=[1, 1]"])


@pytest.mark.parametrize("baseline", ["model", "member"])
def test_observation_on_the_model_baseline(tmp_path, baseline):
    """obs_baseline = 'model' or 'member': each region's observation keeps its shape and width, centred on the
    model's BOLD ('member' compares each member relative to its own level, the ensemble mean is unchanged)."""
    small = [o for o in SMALL if not o.startswith("assimilation.trs")] + [
        "assimilation.trs=6", "assimilation.replay=false", "assimilation.forecast5_every=0", "validation.trs=3"]
    assimilate(load_config(overrides=small + ["assimilation.obs_baseline=range"]), tmp_path / "range.h5")
    assimilate(load_config(overrides=small + [f"assimilation.obs_baseline={baseline}"]), tmp_path / "model.h5")
    with h5py.File(tmp_path / "range.h5") as a, h5py.File(tmp_path / "model.h5") as b:
        y_range, y_model = a["assimilation/bold_observed"][()], b["assimilation/bold_observed"][()]
        prior = b["assimilation/bold_prior"][()]
        assert "model BOLD at the end of the spin-up" in b["assimilation"].attrs["preprocessing"]
        assert ("each member's BOLD meets" in b["assimilation"].attrs["preprocessing"]) == (baseline == "member")
    # a shift per region, nothing else
    shift = y_model - y_range
    np.testing.assert_allclose(shift - shift[:, :1], 0.0, rtol=0, atol=1e-12)
    # the levels follow the model's, region by region: the first forecast (one TR after the spin-up's
    # steady state) lies much closer to them than to the common range
    level = y_model[:, :CALIB].mean(axis=1)
    assert level.std() > 0
    first = prior[:, CALIB]
    assert np.abs(first - level).mean() < 0.5 * np.abs(first - y_range[:, :CALIB].mean(axis=1)).mean()


def test_the_smoother_revises_only_the_recorded_history(tmp_path):
    """smoother_trs leaves the filter's path bitwise alone and revises the hyperparameters of earlier TRs."""
    small = [o for o in SMALL if not o.startswith("assimilation.trs")] + [
        "assimilation.trs=8", "assimilation.replay=false", "assimilation.forecast5_every=0", "validation.trs=3",
        "validation.forecast_trs=0"]
    assimilate(load_config(overrides=small + ["assimilation.smoother_trs=0"]), tmp_path / "filter.h5")
    assimilate(load_config(overrides=small + ["assimilation.smoother_trs=3"]), tmp_path / "smoother.h5")
    with h5py.File(tmp_path / "filter.h5") as a, h5py.File(tmp_path / "smoother.h5") as b:
        for name in ("bold_prior", "bold_posterior"):
            np.testing.assert_array_equal(a[f"assimilation/{name}"][()], b[f"assimilation/{name}"][()])
        filtered, smoothed = a["assimilation/hyper_mean"][()], b["assimilation/hyper_mean"][()]
    # the last TR has no later observation; every earlier one has at least one
    np.testing.assert_array_equal(smoothed[-1], filtered[-1])
    assert (smoothed != filtered)[CALIB:-1].any(axis=(1, 2)).all()  # every earlier TR is revised


def test_separate_hemodynamics_keep_the_members_own_bold(tmp_path):
    """hemodynamics = 'separate': the filter's corrections go to a tracked copy only.

    With nothing to fit (no spread, no walk) the tracked copy is exactly what 'joint' updates,
    so prior and posterior agree with 'joint'; the members' own BOLD (bold_free) then does not
    depend on the observation noise, while the tracked prior does.
    """
    small = [o for o in SMALL if not o.startswith("assimilation.trs")] + [
        "assimilation.trs=7", "assimilation.replay=false", "assimilation.forecast5_every=0", "validation.trs=3",
        "validation.forecast_trs=0", "assimilation.obs_baseline=range", "assimilation.prior_sd=0", "assimilation.walk_sd=0", "assimilation.local_weight=1",
        "assimilation.inflation=1.1"]
    runs = {}
    for mode in ("joint", "separate"):
        for obs_var in ("1e-6", "1e-4"):
            out = tmp_path / f"{mode}_{obs_var}.h5"
            assimilate(load_config(overrides=small + [f"assimilation.hemodynamics={mode}",
                                                      f"assimilation.obs_var={obs_var}"]), out)
            with h5py.File(out) as f:
                runs[mode, obs_var] = {k: v[()] for k, v in f["assimilation"].items() if k.startswith("bold_")}
    assert "bold_free" not in runs["joint", "1e-6"]
    for obs_var in ("1e-6", "1e-4"):
        for name in ("bold_prior", "bold_posterior"):
            np.testing.assert_allclose(runs["separate", obs_var][name], runs["joint", obs_var][name], rtol=1e-12)
    np.testing.assert_array_equal(runs["separate", "1e-6"]["bold_free"], runs["separate", "1e-4"]["bold_free"])
    assert not np.array_equal(runs["separate", "1e-6"]["bold_prior"], runs["separate", "1e-4"]["bold_prior"])
    # the corrections move the tracked copy away from the members' own BOLD from the second TR on
    free, prior = runs["separate", "1e-6"]["bold_free"], runs["separate", "1e-6"]["bold_prior"]
    assert np.array_equal(free[:, CALIB], prior[:, CALIB])
    assert not np.allclose(free[:, CALIB + 1:], prior[:, CALIB + 1:])


@pytest.mark.parametrize("options", [["assimilation.obs_baseline=range"],
                                     ["assimilation.obs_baseline=model", "assimilation.smoother_trs=4"],
                                     ["assimilation.obs_baseline=member", "assimilation.hemodynamics=separate",
                                      "assimilation.smoother_trs=2"],
                                     ["assimilation.sweep_coupling=[0.5, 2]"]])
def test_a_stopped_assimilation_resumes_bitwise(tmp_path, capsys, options):
    """Checkpointed every 3 TRs and stopped after the first: --resume writes the uninterrupted file's group."""
    small = [o for o in SMALL if not o.startswith("assimilation.trs")] + ["assimilation.trs=8", *options]
    ref = tmp_path / "ref.h5"
    assimilate(load_config(overrides=small), ref)
    out = tmp_path / "a.h5"

    class Stop(Exception):
        pass

    def stop(trs_done):
        raise Stop

    with pytest.raises(Stop):
        assimilate(load_config(overrides=small + ["simulation.checkpoint_ms=2160"]), out, on_checkpoint=stop)
    assert not out.exists() and main(["inspect", str(out) + ".partial"]) == 0
    assert "checkpoint after 3 of 11 TRs" in capsys.readouterr().out
    assert main(["assimilate", "--resume", str(out), "--quiet"]) == 0
    with h5py.File(ref) as a, h5py.File(out) as b:
        assert set(a["assimilation"]) == set(b["assimilation"])
        for name in a["assimilation"]:
            if isinstance(a[f"assimilation/{name}"], h5py.Dataset):
                np.testing.assert_array_equal(a[f"assimilation/{name}"][()], b[f"assimilation/{name}"][()],
                                              err_msg=name)
        assert json.loads(b["summary"][()])["metrics"] == json.loads(a["summary"][()])["metrics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "ref.h5"]


def test_no_figure_before_a_tr_depends_on_it(tmp_path):
    """Causality: a change of the raw BOLD at TR k (after the calibration window) changes no observation,
    forecast or filtered hyperparameter of an earlier TR; a change in the held-out TRs changes nothing the
    fit produced (the twin's hyperparameters and BOLD included)."""
    import shutil

    small = [o for o in SMALL if not o.startswith("assimilation.trs")] + [
        "assimilation.trs=10", "assimilation.replay=false", "assimilation.smoother_trs=2"]
    base = tmp_path / "base.h5"
    shutil.copy(bundled_connectome_path(), base)
    runs = {}
    for k in (None, 6, 12):
        data = base
        if k is not None:
            data = tmp_path / f"tr{k}.h5"
            shutil.copy(base, data)
            with h5py.File(data, "r+") as f:
                f["subjects/102311/bold"][:, k] += 5 * f["subjects/102311/bold"][()].std(axis=1)
        out = tmp_path / f"run{k}.h5"
        assimilate(load_config(overrides=small), out, data=data, subject="102311")
        with h5py.File(out) as f:
            runs[k] = {name: f[f"assimilation/{name}"][()] for name in (
                "bold_observed", "bold_prior", "bold_posterior", "bold_forecast5", "hyper_mean",
                "validation/bold_observed", "validation/bold_prior", "validation/bold_forecast5",
                "validation/hyper_twin", "validation/bold_twin", "validation/bold_unfitted")}
    # the first TR of each record that may depend on TR k: the observation and the analysis at k, the 1-TR
    # forecast at k + 1, the 5-TR forecast at k + 5, the smoothed hyperparameters from k - smoother_trs on;
    # the held-out records count TRs from n_trs; the twin and the unfitted baseline depend on the fit alone
    lag = {"bold_observed": 0, "bold_posterior": 0, "bold_prior": 1, "bold_forecast5": 5, "hyper_mean": -2}
    n_trs = 10
    for k in (6, 12):
        for name, vals in runs[None].items():
            got = runs[k][name]
            if name == "hyper_mean":                    # (TRs, regions, H) -> TRs second, as the others
                got, vals = got.transpose(1, 0, 2), vals.transpose(1, 0, 2)
            if name.startswith("validation/bold_") and name.split("/")[1] in lag:
                cut = k + lag[name.split("/")[1]] - n_trs
            elif name.startswith("validation/"):
                cut = 0 if k < n_trs else vals.shape[1]
            else:
                cut = k + lag[name]
            np.testing.assert_array_equal(got[:, :max(cut, 0)], vals[:, :max(cut, 0)], err_msg=f"{name}, TR {k}")
        obs = "bold_observed" if k < n_trs else "validation/bold_observed"
        assert not np.array_equal(runs[k][obs], runs[None][obs])
    assert not np.array_equal(runs[6]["validation/hyper_twin"], runs[None]["validation/hyper_twin"])
