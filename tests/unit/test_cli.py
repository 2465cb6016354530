"""The dtb command as a user runs it."""

import json
import subprocess
import sys

import pytest


def dtb(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dtb", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_run_and_inspect(tmp_path):
    out = tmp_path / "r.h5"
    p = dtb("run", "--set", "model=pd14", "--set", "pd14.n_scale=0.02", "--set", "pd14.k_scale=0.1",
            "--set", "simulation.t_ms=100", "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    for word in ("1,544 neurons", "synapses", "bytes/synapse", "build", "real-time factor", "L23E", "rates"):
        assert word in p.stdout
    j = dtb("inspect", str(out), "--json")
    assert j.returncode == 0
    facts = json.loads(j.stdout)
    assert facts["n_neurons"] == 1544 and facts["t_ms"] == 100.0
    assert set(facts["rates_hz"]) == {"L23E", "L23I", "L4E", "L4I", "L5E", "L5I", "L6E", "L6I"}
    human = dtb("inspect", str(out))
    assert "real-time factor" in human.stdout


def test_config_file_and_printing(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "pd14"\n[pd14]\nn_scale = 0.5\n')
    p = dtb("config", str(cfg), "--set", "simulation.seed=4")
    assert p.returncode == 0
    assert 'model = "pd14"' in p.stdout and "n_scale = 0.5" in p.stdout and "seed = 4" in p.stdout
    keys = dtb("config", "--keys")
    assert "`wholebrain.in_degree`" in keys.stdout


@pytest.mark.parametrize("args,needle", [
    (["run", "--set", "simulation.dt_ms=0"], "simulation.dt_ms = 0.0: must be a number >= 0.0001 and <= 1"),
    (["run", "--set", "simulation.bogus=1"], "unknown key 'simulation.bogus'"),
    (["run", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["run", "--set", "wholebrain.subject=999"], "subject '999' not in file"),
    (["run", "--set", "wholebrain.connectome=nope.h5"], "does not exist"),
    (["inspect", "nothing.h5"], "run file 'nothing.h5' does not exist"),
])
def test_errors_are_one_line_exit_2(tmp_path, args, needle):
    p = dtb(*args, cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dtb: error: ") and needle in lines[0], p.stderr
    assert not any(tmp_path.glob("*.h5")) and not any(tmp_path.glob("*.partial"))


def test_debug_shows_traceback(tmp_path):
    p = dtb("--debug", "run", "--set", "simulation.dt_ms=0", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" in p.stderr


def test_importing_dtb_never_imports_cupy():
    code = ("import sys, dtb, dtb.cli, dtb.driver, dtb.io, dtb.plot, dtb.kernels.gpu, dtb.assimilation.driver; "
            "sys.exit('cupy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_version_and_a_closed_pipe():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "dtb", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("dtb ")
    import dtb

    assert p.stdout.split()[1] == dtb.__version__
    # `dtb config --keys | head -1` where the reader is gone before dtb writes: no traceback, status 141
    import os

    r, w = os.pipe()
    os.close(r)
    p = subprocess.run([sys.executable, "-m", "dtb", "config", "--keys"], stdout=w, stderr=subprocess.PIPE, text=True)
    os.close(w)
    assert p.returncode == 141 and p.stderr == "", p.stderr


def _dtb(*args, env=None, **kwargs):
    import os

    return subprocess.run([sys.executable, "-m", "dtb", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})), **kwargs)


def test_a_full_output_is_one_line_not_a_traceback():
    """``dtb config --keys > /dev/full``: the output cannot be written; one line says so, exit 2."""
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "dtb", "config", "--keys"], stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=120)
    assert p.returncode == 2 and p.stderr == "dtb: error: cannot write the output (No space left on device)\n"


def test_a_closed_output_discards_what_is_printed():
    p = subprocess.run(f"{sys.executable} -m dtb config --keys >&-", shell=True, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stderr == ""


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_a_bad_numba_thread_count_is_one_line(value):
    p = _dtb("config", env={"NUMBA_NUM_THREADS": value})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"dtb: error: NUMBA_NUM_THREADS='{value}': must be a whole number > 0")


def test_labels_the_terminal_cannot_encode_are_escaped(tmp_path):
    import h5py
    import numpy as np

    path = tmp_path / "c.h5"
    sc = np.ones((3, 3)) - np.eye(3)
    with h5py.File(path, "w") as f:
        f["labels"] = np.array(["Ünïcødé".encode(), b"B", b"C"])
        f["subjects/s1/sc"] = sc
        f["subjects/s1/len_mm"] = sc * 50.0
        f["subjects/s1/nvoxel"] = np.array([100, 200, 300])
    p = _dtb("connectome", "show", str(path), "--subject", "s1", env={"PYTHONIOENCODING": "ascii"})
    assert p.returncode == 0 and "\\xdcn\\xefc\\xf8d\\xe9" in p.stdout and "Traceback" not in p.stderr, p.stderr


def _damage(name):
    import h5py
    import numpy as np

    def apply(path):
        with h5py.File(path, "a") as f:
            if name == "newer schema":
                f.attrs["schema_version"] = 99
            elif name == "no schema":
                del f.attrs["schema_version"]
            elif name == "t_ms nan":
                f.attrs["t_ms"] = np.nan
            elif name == "spike population renamed":
                f.attrs["spike_population"] = "nope"
            elif name == "no t_ms":
                del f.attrs["t_ms"]
            elif name == "no population sizes":
                del f["network/populations/size"]
            elif name in ("no spikes", "no rates"):
                del f[name.split()[1]]
            elif name == "rates flat":
                rates = f["rates/population_hz"][()]
                del f["rates/population_hz"]
                f["rates/population_hz"] = rates.ravel()
            elif name == "bold of other regions":
                del f["bold"]
                f["bold"] = np.zeros((10, 3))
            elif name == "node ids as text":
                n = f["spikes/wholebrain/node_ids"].shape[0]
                del f["spikes/wholebrain/node_ids"]
                f["spikes/wholebrain/node_ids"] = np.array([b"x"] * n)
            elif name == "spikes in a missing file":
                n = f["spikes/wholebrain/timestamps"].shape[0]
                del f["spikes/wholebrain/timestamps"]
                layout = h5py.VirtualLayout(shape=(n,), dtype="f8")
                layout[:] = h5py.VirtualSource("gone.h5", "t", shape=(n,))
                f["spikes/wholebrain"].create_virtual_dataset("timestamps", layout)
    return apply


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r.h5"
    p = _dtb("run", "--quiet", "--out", str(out), "--set", "wholebrain.n_neurons=2000", "--set", "simulation.t_ms=50",
             "--set", "recording.bold=true", "--set", "bold.tr_ms=10")
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.parametrize("damage, needle", [
    ("newer schema", "schema version 99: written by a newer dtb"), ("no schema", "has no schema_version"),
    ("t_ms nan", "its t_ms (nan) is not a positive time"),
    ("rates flat", "/rates/population_hz is not a table of 188 populations"),
    ("bold of other regions", "/bold is not a table of 94 regions"),
    ("node ids as text", "is not one time (float) and one node id (integer) per spike"),
    ("spikes in a missing file", "stored in other files that are missing: gone.h5"),
    ("no spikes", "lacks /spikes, which the run recorded: the file is damaged"),
    ("no rates", "lacks /rates, which the run recorded: the file is damaged"),
    ("spike population renamed", "its spike_population ('nope') names no group of /spikes"),
    ("no t_ms", "a simulation's run file without its t_ms"),
    ("no population sizes", "/network/populations tables are missing or of other lengths"),
])
@pytest.mark.parametrize("command", ["inspect", "plot"])
def test_a_run_file_whose_parts_disagree_is_refused(small_run, tmp_path, damage, needle, command):
    """Damaged after it was written: inspect and plot say what is wrong in one line instead of showing it."""
    import shutil

    path = tmp_path / "r.h5"
    shutil.copy(small_run, path)
    _damage(damage)(path)
    p = _dtb(command, str(path), *(["-o", str(tmp_path / "r.png")] if command == "plot" else []))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("field, value", [("node_ids", 10**6), ("timestamps", float("nan")), ("timestamps", -1.0)])
def test_spikes_damaged_in_place_are_refused_as_they_stream(small_run, tmp_path, field, value):
    """A value no structure check sees (no data is read there) is caught where the spikes are read."""
    import shutil

    import h5py

    path = tmp_path / "r.h5"
    shutil.copy(small_run, path)
    with h5py.File(path, "a") as f:
        f[f"spikes/wholebrain/{field}"][0] = value
    p = _dtb("plot", str(path), "-o", str(tmp_path / "r.png"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "the file is damaged" in p.stderr, p.stderr
    assert not (tmp_path / "r.png").exists()
