"""Checkpoint and resume: a stopped run, resumed, writes bitwise the run it would have written."""

import h5py
import numpy as np
import pytest

from dtb import cli, driver
from dtb.config import load_config
from dtb.errors import ConfigError, DataError, ResourceError
from dtb.io.checkpoint import read_checkpoint
from dtb.io.runfile import get_sorting, read_summary
from helpers import write_connectome

BASE = {
    "wholebrain": ["wholebrain.n_neurons=2000", "wholebrain.in_degree=30", "simulation.t_ms=300",
                   "recording.bold=true", "bold.tr_ms=40"],
    "pd14": ["model=pd14", "pd14.n_scale=0.02", "pd14.k_scale=0.05", "simulation.t_ms=200"],
}
COMMON = ["recording.progress=false", "recording.flush_ms=25"]
DATASETS = ("timestamps", "node_ids")


class Stop(Exception):
    """Stands in for a crash right after a checkpoint."""


def stop_after(step_limit):
    def hook(step):
        if step >= step_limit:
            raise Stop

    return hook


def stopped_run(tmp_path, model, checkpoint_ms="70", stop_step=1400):
    cfg = load_config(overrides=BASE[model] + COMMON + [f"simulation.checkpoint_ms={checkpoint_ms}"])
    out = tmp_path / "run.h5"
    with pytest.raises(Stop):
        driver.run(cfg, out, on_checkpoint=stop_after(stop_step))
    return cfg, out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs without checkpoints."""
    out = {}
    for model in BASE:
        path = tmp_path_factory.mktemp("ref") / f"{model}.h5"
        driver.run(load_config(overrides=BASE[model] + COMMON), path)
        out[model] = path
    return out


def assert_same_run(a_path, b_path, model):
    with h5py.File(a_path) as a, h5py.File(b_path) as b:
        names = [f"spikes/{model}/{n}" for n in DATASETS] + ["rates/population_hz", "rates/region_hz"]
        names += ["bold"] if "bold" in a else []
        for name in names:
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
        assert len(a[f"spikes/{model}/node_ids"]) > 100


@pytest.mark.parametrize("model", sorted(BASE))
def test_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path, reference, model):
    cfg, out = stopped_run(tmp_path, model)
    assert not out.exists()
    summary = driver.run(cfg, out, resume=True)
    assert summary["resumed_at_ms"] == 140.0
    assert_same_run(reference[model], out, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no checkpoint, segments or temporaries left


def test_the_checkpoint_is_a_readable_run_file_of_the_run_so_far(tmp_path, reference):
    _, out = stopped_run(tmp_path, "wholebrain")
    partial = out.with_name("run.h5.partial")
    facts = read_summary(partial)
    assert facts["t_ms"] == 140.0 and facts["unfinished"]
    with h5py.File(partial) as p, h5py.File(reference["wholebrain"]) as r:
        t_ref, ids_ref = r["spikes/wholebrain/timestamps"][()], r["spikes/wholebrain/node_ids"][()]
        early = t_ref <= 140.0
        t, ids = p["spikes/wholebrain/timestamps"][()], p["spikes/wholebrain/node_ids"][()]
        assert get_sorting(p["spikes/wholebrain"]) == "none"
        order = np.lexsort((t, ids))
        np.testing.assert_array_equal(t[order], t_ref[early])
        np.testing.assert_array_equal(ids[order], ids_ref[early])
        assert facts["n_spikes"] == int(early.sum())
        np.testing.assert_array_equal(p["rates/population_hz"][()], r["rates/population_hz"][:140])
        np.testing.assert_array_equal(p["bold"][()], r["bold"][:, :3])  # TRs ending at 40, 80, 120 ms
        assert p["checkpoint"].attrs["step"] == 1400 and p["checkpoint"].attrs["segments"] == 2


def test_a_kill_while_writing_the_next_checkpoint_leaves_the_last_one_usable(tmp_path, reference):
    cfg, out = stopped_run(tmp_path, "wholebrain")
    parts = out.with_name("run.h5.parts")
    # what a kill in the middle of the next checkpoint leaves: a torn temporary, a half segment, a half state
    out.with_name("run.h5.partial.tmp").write_bytes(b"\x89HDF\r\n torn")
    (parts / "rank0.seg2.h5").write_bytes(b"torn")
    (parts / "rank0.state2.h5").write_bytes(b"torn")
    driver.run(cfg, out, resume=True)
    assert_same_run(reference["wholebrain"], out, "wholebrain")


def test_resume_refuses_a_changed_network(tmp_path):
    cfg, out = stopped_run(tmp_path, "wholebrain")
    for change, needle in (("wholebrain.n_neurons=2100", "wholebrain.n_neurons = 2100"),
                           ("simulation.seed=5", "simulation.seed = 5"),
                           ("recording.bold=false", "recording.bold = False")):
        other = load_config(overrides=BASE["wholebrain"] + COMMON + ["simulation.checkpoint_ms=70", change])
        with pytest.raises(ConfigError, match="changes the run: " + needle):
            driver.run(other, out, resume=True)
    shorter = load_config(overrides=BASE["wholebrain"] + COMMON + ["simulation.t_ms=100"])
    with pytest.raises(ConfigError, match="before the checkpoint"):
        driver.run(shorter, out, resume=True)
    assert out.with_name("run.h5.partial").exists()  # refusals leave the checkpoint alone


def test_resume_on_another_number_of_ranks_is_refused_before_mpi_starts(tmp_path, monkeypatch):
    """A job of 2 ranks (as its launcher says) resuming a 1-rank checkpoint: one error, before MPI starts."""
    import dtb.session

    cfg, out = stopped_run(tmp_path, "wholebrain")
    monkeypatch.setattr(dtb.session, "launcher_size", lambda: 2)
    with pytest.raises(ResourceError, match=r"written by 1 rank\(s\); resume it on as many \(this job has 2\)"):
        driver.run(cfg, out, resume=True)
    assert out.with_name("run.h5.partial").exists()


def test_a_stopped_run_blocks_a_fresh_start_without_overwrite(tmp_path):
    cfg, out = stopped_run(tmp_path, "wholebrain")
    with pytest.raises(ResourceError, match="--resume"):
        driver.run(cfg, out)
    driver.run(cfg, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_nothing_to_resume(tmp_path):
    with pytest.raises(DataError, match="no checkpoint to resume"):
        read_checkpoint(tmp_path / "never.h5")
    with h5py.File(tmp_path / "done.h5", "w") as f:
        f["summary"] = "{}"
    with pytest.raises(ResourceError, match="finished run"):
        read_checkpoint(tmp_path / "done.h5")
    with pytest.raises(DataError, match="not a run file"):  # a connectome given as the run
        read_checkpoint(write_connectome(tmp_path / "c.h5"))
    (tmp_path / "run.toml").write_text("[simulation]\nt_ms = 10.0\n")  # a config given as the run
    with pytest.raises(DataError, match="not a run file"):
        read_checkpoint(tmp_path / "run.toml")


def test_cli_resume_uses_the_stored_config_and_may_extend_the_run(tmp_path, capsys):
    _, out = stopped_run(tmp_path, "pd14")
    assert cli.main(["run", "--resume", str(out.with_name("run.h5.partial")), "--quiet",
                     "--set", "simulation.t_ms=250"]) == 0
    assert "250 ms" in capsys.readouterr().out
    facts = read_summary(out)
    assert facts["t_ms"] == 250.0 and facts["resumed_at_ms"] == 140.0
    with h5py.File(out) as f:
        assert f["rates/population_hz"].shape[0] == 250
