"""Run files that never lie: faults injected for real (a full disk, a second writer, outputs that are inputs
or not files), and what must hold after each: nothing under the final name unless it is complete, and the
last checkpoint resumable."""

import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from dtb import cli, driver
from dtb.config import load_config
from dtb.errors import ConfigError, DataError, ResourceError, WriteError
from dtb.io.checkpoint import read_checkpoint
from dtb.io.runfile import RunLock, RunWriter
from helpers import Stop, stop_at_checkpoint

SMALL = ["wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.t_ms=1500", "recording.progress=false",
         "recording.flush_ms=50", "recording.bold=true", "bold.tr_ms=100"]


def spikes_and_rates(path):
    with h5py.File(path) as f:
        return [f[k][()] for k in ("spikes/wholebrain/timestamps", "spikes/wholebrain/node_ids",
                                   "rates/population_hz", "bold")]


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (needs root, as CI has): a real full disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk):
    """Write to ``disk`` until it is full; the filler's path."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing it cannot fail on the full disk
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_disk_full_for_a_moment_stops_the_run_and_its_checkpoint_resumes_bitwise(small_disk, tmp_path):
    """``dtb run`` writing to a disk that fills after its first checkpoint and is freed again once the run has
    stopped: the run stops at its next write with one line and exit status 2, nothing appears under the final
    name, and ``--resume`` then gives the uninterrupted run bitwise."""
    overrides = SMALL + ["simulation.t_ms=3000"]
    ref = tmp_path / "ref.h5"
    driver.run(load_config(overrides=overrides), ref)
    out = small_disk / "run.h5"
    job = subprocess.Popen([sys.executable, "-m", "dtb", "run", "--quiet", "--out", str(out),
                            *[x for o in overrides + ["simulation.checkpoint_ms=500"] for x in ("--set", o)]],
                           stderr=subprocess.PIPE, text=True)
    partial = out.with_name("run.h5.partial")
    deadline = time.monotonic() + 120
    while not partial.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    filler = fill(small_disk)
    # freed once the job has met the full disk and ended: a fixed moment would let a slow (loaded) run write
    # nothing while the disk is full, and finish
    try:
        err = job.communicate(timeout=300)[1]
    finally:
        filler.unlink()
    assert job.returncode == 2 and err.count("\n") == 1 and "is the disk full" in err, err[-3000:]
    assert not out.exists() and partial.exists()
    p = subprocess.run([sys.executable, "-m", "dtb", "run", "--resume", str(out), "--quiet"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    for a, b in zip(spikes_and_rates(ref), spikes_and_rates(out)):
        np.testing.assert_array_equal(a, b)


STATE_WRITE = """
import sys
from pathlib import Path
import numpy as np
from dtb.errors import WriteError
from dtb.io.checkpoint import write_rank_state
state = {f"sim/a{i}": np.full(n, 0.5) for i, n in enumerate([1500, 3000, 20, 1, 1, 7, 300, 3000, 1500, 64, 2, 1])}
try:
    write_rank_state(Path(sys.argv[1]), 0, 0, state)
except WriteError as err:
    print(err)
"""


@pytest.mark.parametrize("free_kib", [4, 16, 48])
def test_a_rank_state_written_to_a_full_disk_is_one_error(small_disk, free_kib):
    """A checkpoint's rank state (many small datasets) meeting a full disk mid-write: one `WriteError` and no
    half-written file. libhdf5 writing such a file itself crashes with SIGSEGV in this situation."""
    filler = fill(small_disk)
    os.truncate(filler, filler.stat().st_size - free_kib * 1024)
    p = subprocess.run([sys.executable, "-c", STATE_WRITE, str(small_disk)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "is the disk full" in p.stdout, (p.returncode, p.stdout, p.stderr[-2000:])
    assert sorted(x.name for x in small_disk.iterdir()) == ["filler"]


def test_a_file_that_does_not_read_back_whole_is_not_committed(tmp_path):
    w = RunWriter(tmp_path / "r.h5")
    w.write_header(config_toml="", version="x", model="m", seed=1, dt_ms=0.1, spike_population="m",
                   fingerprint="f", backend="cpu")
    f = w._open(w.path)
    f.create_dataset("rates/population_hz", data=np.zeros((3, 2)))
    with pytest.raises(WriteError, match="has 3 rows, the run made 4"):
        w._commit(f, {"n": 1}, w.path, {"rates/population_hz": 4})
    assert not (tmp_path / "r.h5").exists()


def test_one_writer_per_run(tmp_path):
    """A run holding its lock: a second run, resume or overwrite of the same output is refused at once, naming
    the holder; the lock goes with its holder."""
    out = tmp_path / "run.h5"
    lock = RunLock(out)
    lock.acquire()
    try:
        for kw in ({}, {"overwrite": True}):
            with pytest.raises(ResourceError, match=r"is being written by pid \d+ on .* since"):
                driver.run(load_config(overrides=SMALL[:2] + ["simulation.t_ms=10", "recording.progress=false"]), out,
                           **kw)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5.lock"]
        partial = out.with_name("run.h5.partial")  # a run writing its checkpoint: running, not unfinished
        partial.write_bytes(b"")
        with pytest.raises(ResourceError, match=r"is being written by pid \d+ on .* since"):
            driver.run(load_config(overrides=SMALL[:2] + ["simulation.t_ms=10", "recording.progress=false"]), out)
        partial.unlink()
        h5py.File(out, "w").close()  # a finished run being overwritten: --resume names its writer too
        with pytest.raises(ResourceError, match=r"is being written by pid \d+ on .* since"):
            read_checkpoint(out)
        out.unlink()
    finally:
        lock.release()
    assert not lock.path.exists()
    # a real second process while the first runs
    args = [sys.executable, "-m", "dtb", "run", "--quiet", "--out", str(out), "--set", "wholebrain.n_neurons=2000",
            "--set", "wholebrain.in_degree=20", "--set", "simulation.t_ms=3000"]
    first = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not lock.path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(args + ["--overwrite"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and f"is being written by pid {first.pid}" in second.stderr, second.stderr
    finally:
        assert first.wait(timeout=300) == 0, first.stderr.read()
    assert driver.run.__doc__ and h5py.is_hdf5(out) and not lock.path.exists()


def test_a_probe_of_the_lock_does_not_refuse_a_writer(tmp_path):
    """`RunLock.holder` (asked by --resume and by a second run) takes a shared lock for an instant; a writer
    starting at that instant still gets the run."""
    import fcntl
    import threading

    lock = RunLock(tmp_path / "run.h5")
    fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the probe, holding on for 20 ms
    threading.Timer(0.02, os.close, (fd,)).start()
    lock.acquire()
    try:
        assert lock.holder() is not None and "pid" in lock.path.read_text()
    finally:
        lock.release()


def test_an_overwrite_keeps_the_old_run_until_the_new_one_commits(tmp_path):
    out = tmp_path / "run.h5"
    cfg = load_config(overrides=SMALL + ["simulation.checkpoint_ms=500"])
    driver.run(cfg, out)
    before = spikes_and_rates(out)

    other = load_config(overrides=SMALL + ["simulation.checkpoint_ms=500", "simulation.seed=9"])
    with pytest.raises(Stop):
        driver.run(other, out, overwrite=True, on_checkpoint=stop_at_checkpoint)
    for a, b in zip(before, spikes_and_rates(out)):
        np.testing.assert_array_equal(a, b)
    # the stopped overwrite resumes: the new run replaces the old one when it commits, as an uninterrupted one does
    driver.run(other, out, resume=True)
    resumed = spikes_and_rates(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]
    driver.run(other, out, overwrite=True)
    for a, b in zip(resumed, spikes_and_rates(out)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(before[0][:100], resumed[0][:100])


@pytest.mark.parametrize("kind", ["config", "connectome", "device", "fifo", "folder", "empty", "dangling link"])
def test_outputs_are_regular_files_that_are_not_inputs(tmp_path, monkeypatch, capsys, kind):
    from helpers import write_connectome

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text("[simulation]\nt_ms = 10\n[recording]\nprogress = false\n")
    write_connectome(tmp_path / "con.h5", subject="s1")
    args = ["run", str(config), "--set", "wholebrain.connectome=con.h5", "--set", "wholebrain.subject=s1",
            "--set", "wholebrain.n_neurons=400", "--overwrite", "--out"]
    target = {"config": config, "connectome": tmp_path / "con.h5", "device": "/dev/null", "fifo": tmp_path / "fifo",
              "folder": tmp_path / "sub", "empty": "", "dangling link": tmp_path / "link"}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    if kind == "folder":
        target.mkdir()
    if kind == "dangling link":
        os.symlink(tmp_path / "nowhere", target)
        args.remove("--overwrite")
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    assert cli.main(args + [str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dtb: error:" in err, err
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_inputs_must_be_regular_files(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(fifo)  # at once: a FIFO is never opened
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / ("x" * 300))
    with pytest.raises(DataError, match="is not a regular file"):
        driver.run(load_config(overrides=["wholebrain.connectome=/dev/zero"]), tmp_path / "r.h5")


def test_a_plot_never_replaces_its_run_file(tmp_path, capsys, small_run):
    run = tmp_path / "run.png"
    shutil.copy(small_run("wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.t_ms=50")[0], run)
    before = run.read_bytes()
    assert cli.main(["plot", str(run)]) == 2
    assert "would replace the run file it draws" in capsys.readouterr().err
    assert run.read_bytes() == before
    # nor another file that is not a picture (another run under an image name); a picture it replaces
    shutil.copy(run, tmp_path / "run.h5")
    shutil.copy(run, tmp_path / "other.png")
    assert cli.main(["plot", str(tmp_path / "run.h5"), "-o", str(tmp_path / "other.png")]) == 2
    assert "exists and is not a picture" in capsys.readouterr().err
    assert (tmp_path / "other.png").read_bytes() == before
    for _ in range(2):
        assert cli.main(["plot", str(tmp_path / "run.h5"), "-o", str(tmp_path / "fig.png")]) == 0


def test_an_assimilation_checks_every_subject_before_it_runs(tmp_path):
    """The replay's specificity reads every subject of the data file: a malformed one fails the job at once."""
    from dtb.assimilation.driver import assimilate
    from dtb.connectome.connectome import bundled_connectome_path

    data = tmp_path / "data.h5"
    shutil.copy(bundled_connectome_path(), data)
    with h5py.File(data, "r+") as f:
        other = [s for s in f["subjects"] if s != "101309"][0]
        bold = f[f"subjects/{other}/bold"]
        bold[3, 7] = np.nan
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="NaN or inf"):
        assimilate(load_config(overrides=["wholebrain.n_neurons=2000", "assimilation.members=2", "assimilation.trs=5",
                                          "assimilation.calibration_trs=2", "assimilation.burn_in_trs=0",
                                          "recording.progress=false"]), tmp_path / "a.h5", data=data)
    assert time.perf_counter() - t0 < 10 and sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]


def test_sigterm_cleans_up_and_says_so(tmp_path):
    """Slurm's time limit sends SIGTERM: without checkpoints the run leaves nothing behind, with them its last
    checkpoint; one line, exit status 143."""
    for checkpoint_ms, left in ((0, []), (200, ["run.h5.partial", "run.h5.parts"])):
        out = tmp_path / "run.h5"
        job = subprocess.Popen([sys.executable, "-m", "dtb", "run", "--quiet", "--out", str(out), "--overwrite",
                                "--set", "wholebrain.n_neurons=2000", "--set", "simulation.t_ms=20000",
                                "--set", f"simulation.checkpoint_ms={checkpoint_ms}"], stderr=subprocess.PIPE,
                               text=True)
        deadline = time.monotonic() + 120
        want = out.with_name("run.h5.partial") if checkpoint_ms else out.with_name("run.h5.parts")
        while not want.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        job.terminate()
        err = job.communicate(timeout=60)[1]
        assert job.returncode == 143 and err.count("\n") == 1 and "terminated (SIGTERM)" in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_a_sigterm_that_a_finalizer_swallows_still_ends_the_job():
    """The garbage collector runs finalizers anywhere; a SIGTERM handled inside one cannot propagate from it
    (the failure CI met: a weakref callback swallowed it and the run went on to its end). It must be raised
    again in ordinary code."""
    import gc
    import signal

    class SignalledWhileFreed:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside the finalizer
                pass

    seen, hook = [], sys.unraisablehook
    with cli._terminate_on_sigterm():
        with pytest.raises(cli._Terminated):
            obj = SignalledWhileFreed()
            del obj
            seen.append("finalizer done")  # the swallowed exception did not stop this line
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                sum(range(100))
        seen.append("raised again")
    assert seen == ["finalizer done", "raised again"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and sys.unraisablehook is hook
    gc.collect()


def test_a_signal_inside_a_write_is_the_job_ending_not_a_disk_error(tmp_path):
    """SIGTERM can arrive while HDF5 frees an object mid-write; h5py hands the handler's exception to the
    unraisable hook, and the checked write must re-raise it as what it is."""
    from types import SimpleNamespace

    from dtb.io.runfile import checked_write

    def interrupted():
        sys.unraisablehook(SimpleNamespace(exc_value=KeyboardInterrupt(), exc_type=KeyboardInterrupt,
                                           exc_traceback=None, err_msg=None, object=None))

    with pytest.raises(KeyboardInterrupt):
        checked_write(tmp_path / "x.h5", interrupted)

    def failed():
        sys.unraisablehook(SimpleNamespace(exc_value=OSError("Can't write data"), exc_type=OSError,
                                           exc_traceback=None, err_msg=None, object=None))

    with pytest.raises(WriteError, match="Can't write data"):
        checked_write(tmp_path / "x.h5", failed)


def test_a_damaged_checkpoint_or_segment_is_refused_before_anything_runs(tmp_path):
    from dtb.io.checkpoint import read_checkpoint

    out = tmp_path / "run.h5"
    cfg = load_config(overrides=SMALL + ["simulation.checkpoint_ms=500"])

    def stop(step):  # at the second checkpoint
        if step >= 10000:
            raise Stop

    with pytest.raises(Stop):
        driver.run(cfg, out, on_checkpoint=stop)
    partial, parts = out.with_name("run.h5.partial"), out.with_name("run.h5.parts")
    good = partial.read_bytes()
    # a truncated segment: found at resume time, not at the end of the resumed run
    seg = parts / "rank0.seg0.h5"
    seg_bytes = seg.read_bytes()
    seg.write_bytes(seg_bytes[: len(seg_bytes) // 2])
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="rank0.seg0.h5 is (missing or )?damaged"):
        driver.run(cfg, out, resume=True)
    assert time.perf_counter() - t0 < 5
    seg.write_bytes(seg_bytes)
    # bytes flipped in the middle of a segment and of a rank's state, sizes unchanged: found by their digests
    for path, msg in ((seg, "rank0.seg0.h5 is damaged"), (parts / "rank0.state1.h5", "rank0.state1.h5' is damaged")):
        raw = path.read_bytes()
        mid = len(raw) // 2
        path.write_bytes(raw[:mid] + bytes(b ^ 0xFF for b in raw[mid:mid + 64]) + raw[mid + 64:])
        with pytest.raises(DataError, match=msg):
            driver.run(cfg, out, resume=True)
        path.write_bytes(raw)
    # another rank's state under this rank's name (intact, so its digest holds): named as what it is
    from dtb.io.checkpoint import read_rank_state, write_rank_state

    own = parts / "rank0.state1.h5"
    raw = own.read_bytes()
    write_rank_state(tmp_path, 1, 1, read_rank_state(parts, 0, 1))
    shutil.copy(tmp_path / "rank1.state1.h5", own)
    with pytest.raises(DataError, match="rank0.state1.h5' holds rank 1's state of checkpoint 1, not rank 0's"):
        driver.run(cfg, out, resume=True)
    own.write_bytes(raw)
    # whatever a resume reads, edited: the attributes, the arrays, the BOLD so far, the stored config, the digest
    def edit(f, name, fn):
        f[name][...] = fn(f[name][()])

    for damage in (lambda f: f["checkpoint"].attrs.__setitem__("step", -5),
                   lambda f: f["checkpoint"].attrs.__setitem__("step", 0),
                   lambda f: f["checkpoint"].attrs.__delitem__("segments"),
                   lambda f: f["checkpoint"].attrs.__setitem__("n_ranks", 3),
                   lambda f: f["checkpoint"].__delitem__("spike_rows"),
                   lambda f: edit(f, "checkpoint/rate_rows", lambda a: a + 1),
                   lambda f: edit(f, "bold", lambda a: a * 2),
                   lambda f: edit(f, "config", lambda a: a.replace(b"eps = ", b"eps = 1")),
                   lambda f: f["checkpoint"].attrs.__delitem__("sha256")):
        partial.write_bytes(good)
        with h5py.File(partial, "r+") as f:
            damage(f)
        with pytest.raises(DataError, match="the checkpoint is damaged"):
            read_checkpoint(out)
        with pytest.raises(DataError, match="the checkpoint is damaged"):
            driver.run(cfg, out, resume=True)
    partial.write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="is not a readable HDF5 file"):
        driver.run(cfg, out, resume=True)
    partial.write_bytes(good)
    assert driver.run(cfg, out, resume=True)["resumed_at_ms"] == 1000.0


@pytest.mark.parametrize("members, says", [
    (100000, "its 1,786,000,000 connected population pairs need population tables of 106.5 GiB on every rank, "
             "which has about 4.0 GiB; more ranks do not help"),
    # 1e8 neurons: 150.3 GiB, of which every rank pays the 1.3 GiB of the tables and the base
    (1000, r"not enough memory for this assimilation: 100,000,000 neurons and 1e\+10 synapses need at least "
           r"150.3 GiB on each of 1 rank\(s\), which have about 4.0 GiB each; about 55 such ranks would do")])
def test_a_huge_ensemble_is_refused_at_once(tmp_path, monkeypatch, members, says):
    """An ensemble too large for a rank of 4 GiB is refused in well under a second, before its recipe is made or
    partitioned: 1,000 members, which 55 such ranks would hold, and 100,000 members, whose population tables alone
    (18 million populations, their 1.8e9 connected pairs) do not fit however many ranks there are."""
    import dtb.memory
    from dtb.assimilation.driver import assimilate

    monkeypatch.setattr(dtb.memory, "available_bytes", lambda: 4 * 2**30)
    t0 = time.perf_counter()
    with pytest.raises(ResourceError, match=says):
        assimilate(load_config(overrides=[f"assimilation.members={members}", "recording.progress=false"]),
                   tmp_path / "a.h5")
    assert time.perf_counter() - t0 < 5 and list(tmp_path.iterdir()) == []


def test_a_resume_refuses_changed_inputs(tmp_path):
    """The connectome file edited between the kill and the resume (here: longer fibres, the review's
    doubled len_mm): refused before anything runs, by its digest; and a connectome whose network changed."""
    from helpers import write_connectome

    con = write_connectome(tmp_path / "con.h5", n=6)
    cfg = load_config(overrides=[f"wholebrain.connectome={con}", "wholebrain.subject=s1", "wholebrain.n_neurons=600",
                                 "simulation.t_ms=200", "simulation.checkpoint_ms=50", "recording.progress=false"])
    out = tmp_path / "run.h5"

    with pytest.raises(Stop):
        driver.run(cfg, out, on_checkpoint=stop_at_checkpoint)
    with h5py.File(con, "r+") as f:
        f["subjects/s1/waytotal"][0] += 1  # not used by the network: only the digest sees it
    with pytest.raises(DataError, match="changed since the checkpoint"):
        driver.run(cfg, out, resume=True)
    with h5py.File(con, "r+") as f:
        f["subjects/s1/waytotal"][0] -= 1
        f["subjects/s1/len_mm"][...] = 2 * f["subjects/s1/len_mm"][()]
    with pytest.raises((DataError, ConfigError), match="changed since the checkpoint|network differs"):
        driver.run(cfg, out, resume=True)
    with h5py.File(con, "r+") as f:
        f["subjects/s1/len_mm"][...] = f["subjects/s1/len_mm"][()] / 2
    assert driver.run(cfg, out, resume=True)["resumed_at_ms"] == 50.0


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path):
    """A resume refused for a missing checkpoint state changes nothing of the run (the segment that the killed job
    had open included): the state put back, the run resumes."""
    import hashlib

    cfg = load_config(overrides=SMALL[:2] + ["simulation.t_ms=200", "simulation.checkpoint_ms=50",
                                             "recording.progress=false"])
    out = tmp_path / "run.h5"
    with pytest.raises(Stop):
        driver.run(cfg, out, on_checkpoint=stop_at_checkpoint)

    def files():
        return {p.relative_to(tmp_path): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.suffix != ".lock"}

    parts = out.with_name("run.h5.parts")
    with h5py.File(parts / "rank0.seg1.h5", "a") as f:  # what the killed job flushed after its checkpoint
        f["node_ids"].resize((3,))
        f["node_ids"][:] = [1, 2, 3]
    state = next(parts.glob("rank0.state*.h5"))
    kept = state.read_bytes()
    state.unlink()
    before = files()
    with pytest.raises(DataError, match="checkpoint state .* is missing or unreadable"):
        driver.run(cfg, out, resume=True)
    assert files() == before
    state.write_bytes(kept)
    tmp = out.with_name("run.h5.partial.tmp")
    tmp.mkdir()  # in the way of the next checkpoint: refused before the resume simulates anything
    before = files()
    with pytest.raises(ResourceError, match="run.h5.partial.tmp' is a folder"):
        driver.run(cfg, out, resume=True)
    assert files() == before
    tmp.rmdir()
    assert driver.run(cfg, out, resume=True)["resumed_at_ms"] == 50.0


def test_virtual_sources_are_found_beside_the_file_or_named_when_missing(tmp_path, monkeypatch):
    """A checkpoint links its spikes and rates to the segments in <run>.parts: read from any working directory
    (even one holding another run's parts of the same name) it reads its own; without its parts it is an
    error naming them, never zeros. A connectome dataset whose virtual source is missing is refused."""
    from dtb.io.analysis import open_run
    from helpers import write_connectome

    runs = {}
    for seed in (1, 2):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        with pytest.raises(Stop):
            driver.run(load_config(overrides=SMALL + ["simulation.checkpoint_ms=500", f"simulation.seed={seed}"]),
                       d / "run.h5", on_checkpoint=stop_at_checkpoint)
        runs[seed] = d / "run.h5.partial"
    with open_run(runs[1]) as r:
        want = r.spikes.node_ids.compute()
    assert len(want) > 0
    monkeypatch.chdir(runs[2].parent)  # the decoy: seed 2's run.h5.parts in the working directory
    with open_run(runs[1]) as r:
        np.testing.assert_array_equal(r.spikes.node_ids.compute(), want)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(runs[1], alone / "run.h5.partial")
    with pytest.raises(DataError, match=r"stored in other files that are missing: run.h5.parts/rank0.seg0.h5"):
        open_run(alone / "run.h5.partial")
    # an input connectome whose sc is a virtual dataset over a file that is gone
    con = write_connectome(tmp_path / "con.h5")
    with h5py.File(tmp_path / "sc.h5", "w") as f:
        f["sc"] = h5py.File(con)["subjects/s1/sc"][()]
    with h5py.File(con, "r+") as f:
        del f["subjects/s1/sc"]
        layout = h5py.VirtualLayout(shape=(4, 4), dtype=np.float64)
        layout[:] = h5py.VirtualSource("sc.h5", "sc", shape=(4, 4))
        f.create_virtual_dataset("subjects/s1/sc", layout)
    from dtb.connectome.connectome import load_connectome

    assert load_connectome(con, "s1").sc.sum() > 0
    (tmp_path / "sc.h5").unlink()
    with pytest.raises(DataError, match="missing: sc.h5"):
        load_connectome(con, "s1")


def test_a_read_only_output_folder_is_one_line(small_disk, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert cli.main(["run", "--quiet", "--out", str(small_disk / "run.h5"), "--set", "wholebrain.n_neurons=4000",
                     "--set", "simulation.t_ms=10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot create the run's lock" in err and "Read-only file system" in err, err
    assert err.rstrip().endswith("choose an output in a folder you can write"), err  # not "remove it"


def test_every_file_a_run_reads_is_an_input(tmp_path, capsys):
    """A per-region values file and each file of a TVB folder may not be the output (--overwrite would destroy
    it); a per-region file changed between a kill and the resume is refused by its digest."""
    values = tmp_path / "we.csv"
    values.write_text("".join(f"R{i},{1.0 + 0.1 * i}\n" for i in range(4)))
    from helpers import write_connectome

    con = write_connectome(tmp_path / "con.h5")
    base = ["--quiet", "--set", f"wholebrain.connectome={con}", "--set", "wholebrain.subject=s1",
            "--set", "wholebrain.n_neurons=400", "--set", f'wholebrain.w_e_trace="{values}"']
    before = values.read_bytes()
    assert cli.main(["run", *base, "--out", str(values), "--overwrite"]) == 2
    assert "is an input of this run" in capsys.readouterr().err and values.read_bytes() == before
    tvb = tmp_path / "tvb"
    tvb.mkdir()
    (tvb / "weights.txt").write_text("0 1 1\n1 0 1\n1 1 0\n")
    (tvb / "tract_lengths.txt").write_text("0 20 20\n20 0 20\n20 20 0\n")
    kept = (tvb / "weights.txt").read_bytes()
    assert cli.main(["connectome", "import", str(tvb), "-o", str(tvb / "weights.txt"), "--overwrite"]) == 2
    assert "is an input of this run" in capsys.readouterr().err and (tvb / "weights.txt").read_bytes() == kept
    gains = tmp_path / "g_ampa.csv"
    gains.write_text("".join(f"R{i},1.0\n" for i in range(4)))
    cfg = load_config(overrides=[f"wholebrain.connectome={con}", "wholebrain.subject=s1", "wholebrain.n_neurons=400",
                                 f'wholebrain.w_e_trace="{values}"', f'hyper.g_ampa="{gains}"', "simulation.t_ms=200",
                                 "simulation.checkpoint_ms=50", "recording.progress=false"])

    out = tmp_path / "run.h5"
    with pytest.raises(Stop):
        driver.run(cfg, out, on_checkpoint=stop_at_checkpoint)
    # the same values written otherwise (only the digest sees it), and a changed gain
    for path, change in ((values, lambda text: text.replace("R0,1.0", "R0,1.00")),
                         (gains, lambda text: text.replace("R0,1.0", "R0,2.0"))):
        kept = path.read_text()
        path.write_text(change(kept))
        with pytest.raises(DataError, match="changed since the checkpoint"):
            driver.run(cfg, out, resume=True)
        path.write_text(kept)
    assert driver.run(cfg, out, resume=True)["resumed_at_ms"] == 50.0


@pytest.mark.parametrize("planted", ["lock link", "tmp link", "partial tmp link", "lock fifo", "tmp folder"])
def test_no_write_follows_what_is_planted_beside_the_run(tmp_path, planted):
    """A symbolic link at <out>.lock, <out>.tmp or <out>.partial.tmp pointing at a precious file is never
    written through; a FIFO as the lock and a folder at .tmp are one-line refusals."""
    precious = tmp_path / "precious"
    precious.write_bytes(b"keep")
    out = tmp_path / "run.h5"
    at = {"lock link": "run.h5.lock", "tmp link": "run.h5.tmp", "partial tmp link": "run.h5.partial.tmp",
          "lock fifo": "run.h5.lock", "tmp folder": "run.h5.tmp"}[planted]
    if "link" in planted:
        (tmp_path / at).symlink_to(precious)
    elif "fifo" in planted:
        os.mkfifo(tmp_path / at)
    else:
        (tmp_path / at).mkdir()
    cfg = load_config(overrides=SMALL + ["simulation.t_ms=200", "simulation.checkpoint_ms=100"])
    if planted in ("tmp link", "partial tmp link"):
        driver.run(cfg, out)  # the link is replaced, not followed
        assert h5py.is_hdf5(out)
    else:
        with pytest.raises(ResourceError, match="remove it"):
            driver.run(cfg, out)
        assert not out.exists()
    assert precious.read_bytes() == b"keep"


def test_a_run_file_that_dtb_did_not_write_is_one_line(tmp_path, capsys, small_run):
    """inspect, plot and compare on a run file damaged in structure (a dataset missing or of another shape, an
    attribute that is no number, a /summary that is a group): one line and status 2, never a traceback."""
    good = small_run("wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.t_ms=3000",
                     "recording.bold=true", "bold.tr_ms=100")[0]

    def drop(name):
        return lambda f: f.__delitem__(name)

    def attr(name, value, where="/"):
        return lambda f: f[where].attrs.__setitem__(name, value)

    def summary_group(f):
        del f["summary"]
        f.create_group("summary")

    def reshape(name):
        def change(f):
            data = f[name][()]
            del f[name]
            f[name] = data[:-1]
        return change

    def nested_summary(f):
        del f["summary"]
        f["summary"] = "[" * 100_000 + "]" * 100_000

    def loop(f):
        del f["config"]
        f["config"] = h5py.SoftLink("/config")

    damages = [drop("network/populations/size"), drop("network/regions"), drop("spikes"), drop("bold"),
               drop("rates/population_hz"), attr("t_ms", "soon"), attr("t_ms", np.nan), attr("tr_ms", 0.0, "bold"),
               attr("tr_ms", np.nan, "bold"), attr("spike_population", "nobody"), summary_group,
               reshape("network/populations/first_gid"), reshape("network/populations/region"),
               attr("schema_version", 0), attr("schema_version", -1), attr("schema_version", "1"),
               attr("dt_ms", 0.0), attr("tr_ms", -720.0, "bold"), attr("bin_ms", 0.0, "rates/population_hz"),
               drop("config"), loop, nested_summary, lambda f: f["bold"].attrs.__delitem__("params")]
    for i, damage in enumerate(damages):
        run = tmp_path / f"run{i}.h5"
        shutil.copy(good, run)
        with h5py.File(run, "r+") as f:
            damage(f)
        for argv in (["inspect", str(run)], ["plot", str(run), "-o", str(tmp_path / "p.png")],
                     ["compare", str(run)]):
            status = cli.main(argv)
            err = capsys.readouterr().err
            assert status in (0, 2) and "Traceback" not in err, (i, argv, err)
            assert status == 0 or (err.count("\n") == 1 and err.startswith("dtb: error: ")), (i, argv, err)


def test_open_run_reads_a_damaged_file_as_one_error(tmp_path, small_run):
    """Every view of `open_run` on a file damaged in structure is a DataError (never a KeyError or a
    RecursionError), and values damaged in place (a NaN or negative rate, a NaN BOLD, a spike after the end or of a
    neuron that is not there) are found as they are read."""
    from dtb.io.analysis import open_run

    good = small_run("wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.t_ms=3000",
                     "recording.bold=true", "bold.tr_ms=100")[0]

    def value(name, row, v):
        def change(f):
            data = f[name][row]
            data[0] = v
            f[name][row] = data
        return change

    damages = {"no config": lambda f: f.__delitem__("config"),
               "no bin_ms": lambda f: f["rates/population_hz"].attrs.__delitem__("bin_ms"),
               "no params": lambda f: f["bold"].attrs.__delitem__("params"),
               "NaN rate": value("rates/population_hz", 7, np.nan),
               "negative rate": value("rates/region_hz", 3, -1.0),
               "NaN BOLD": value("bold", 2, np.nan),
               "late spike": value("spikes/wholebrain/timestamps", slice(5, 6), 1e9),
               "spike of a neuron past the last": value("spikes/wholebrain/node_ids", slice(9, 10), 2000)}
    views = {"config": lambda r: r.config, "rates": lambda r: r.rates.values,
             "region_rates": lambda r: r.region_rates.values, "bold": lambda r: r.bold.values,
             "state": lambda r: r.state, "spike times": lambda r: r.spikes.times_ms.compute(),
             "spikes": lambda r: r.spikes.node_ids.compute()}
    for what, damage in damages.items():
        run = tmp_path / "run.h5"
        shutil.copy(good, run)
        with h5py.File(run, "r+") as f:
            damage(f)
        failed = []
        try:
            r = open_run(run)
        except DataError:
            continue
        with r:
            for view, read in views.items():
                try:
                    read(r)
                except DataError as err:
                    assert str(run) in str(err) and "\n" not in str(err)
                    failed.append(view)
        assert failed, what
        if what in ("NaN rate", "negative rate", "NaN BOLD", "late spike", "spike of a neuron past the last"):
            assert failed == [{"NaN rate": "rates", "negative rate": "region_rates", "NaN BOLD": "bold",
                               "late spike": "spike times", "spike of a neuron past the last": "spikes"}[what]], what


def test_rates_and_bold_that_do_not_fit_the_runs_time_are_refused_on_open(tmp_path, small_run):
    """A finished run of 3000 ms has a rates row per 1 ms bin and a BOLD column per 100 ms TR: another bin_ms or
    tr_ms, or a table cut short, is refused when the file is opened."""
    from dtb.io.analysis import open_run

    good = small_run("wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.t_ms=3000",
                     "recording.bold=true", "bold.tr_ms=100")[0]

    def cut(f):
        data, attrs = f["rates/region_hz"][:10], dict(f["rates/region_hz"].attrs)
        del f["rates/region_hz"]
        f["rates/region_hz"] = data
        f["rates/region_hz"].attrs.update(attrs)

    for edit, needle in ((lambda f: f["rates/population_hz"].attrs.__setitem__("bin_ms", 2.0),
                          "/rates/population_hz holds 3,000 rows, but 3000 ms in steps of 2 ms make 1,500"),
                         (lambda f: f["bold"].attrs.__setitem__("tr_ms", 200.0), "/bold holds 30 TRs, but"),
                         (cut, "/rates/region_hz holds 10 rows")):
        run = tmp_path / "run.h5"
        shutil.copy(good, run)
        with h5py.File(run, "r+") as f:
            edit(f)
        with pytest.raises(DataError, match=needle):
            open_run(run)


def test_a_finished_run_file_carries_digests_that_find_a_flipped_byte(tmp_path, capsys, small_run):
    """`dtb inspect --verify` reads every dataset against the sha256 stored at finish: the file as written
    passes; one byte flipped on disk (under HDF5, as bit rot would), a dataset removed, an attribute changed (the
    root's seed, the network's synapse count) or a group added, is one line naming what differs."""
    from dtb.io.analysis import open_run

    good = small_run("wholebrain.n_neurons=2000", "wholebrain.in_degree=20", "simulation.t_ms=3000",
                     "recording.bold=true", "bold.tr_ms=100")[0]
    assert cli.main(["inspect", "--verify", str(good)]) == 0
    out = capsys.readouterr().out
    assert "match their sha256" in out and "not covered" not in out
    with open_run(good) as r:
        checked = r.verify()
    assert checked["datasets"] >= 15 and checked["virtual"] == [] and checked["bytes"] > 0

    def flip(name):
        def change(path):
            with h5py.File(path) as f:
                ds = f[name]
                at = ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()
            with open(path, "r+b") as raw:
                raw.seek(at + 3)
                byte = raw.read(1)
                raw.seek(at + 3)
                raw.write(bytes([byte[0] ^ 0x10]))
        return change

    def h5(edit):
        def change(path):
            with h5py.File(path, "r+") as f:
                edit(f)
        return change

    layout = "its layout (groups and attributes) differs"
    damages = {"/spikes/wholebrain/timestamps": flip("spikes/wholebrain/timestamps"),
               "/rates/population_hz": flip("rates/population_hz"), "/bold": flip("bold"),
               "removed": h5(lambda f: f.__delitem__("partition/ranks")),
               layout: h5(lambda f: f.attrs.__setitem__("seed", 2)),
               layout + " ": h5(lambda f: f["network"].attrs.__setitem__("n_synapses", 5)),
               layout + "  ": h5(lambda f: f.create_group("extra"))}
    for what, damage in damages.items():
        run = tmp_path / "run.h5"
        shutil.copy(good, run)
        damage(run)
        assert cli.main(["inspect", "--verify", str(run)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and what.strip() in err and "damaged" in err, (what, err)
    # a checkpoint carries no digests (its own sha256 is checked on resume): said so
    partial = tmp_path / "run.h5.partial"
    shutil.copy(good, partial)
    with h5py.File(partial, "r+") as f:
        del f["digests"]
    assert cli.main(["inspect", "--verify", str(partial)]) == 2
    assert "no /digests" in capsys.readouterr().err


def test_a_compressed_bomb_in_a_tvb_zip_is_refused_unpacking(tmp_path, monkeypatch):
    """A TVB file that decompresses beyond the limit is refused as it unpacks, not first unpacked whole."""
    import bz2
    import zipfile

    from dtb.connectome import formats

    monkeypatch.setattr(formats, "MAX_UNPACKED_BYTES", 1 << 20)
    with zipfile.ZipFile(tmp_path / "tvb.zip", "w") as z:
        z.writestr("weights.txt.bz2", bz2.compress(b"0 " * (4 << 20)))
    with pytest.raises(DataError, match="unpacks to more than"):
        formats.read_foreign(tmp_path / "tvb.zip")


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    """A MemoryError (the preflight turned off, or a need it could not foresee) is one line and status 2."""
    def exhausted(args):
        raise MemoryError

    monkeypatch.setattr(cli, "_inspect", exhausted)
    assert cli.main(["inspect", "x.h5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory" in err
