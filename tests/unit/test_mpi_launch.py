"""Runs tests/mpi under a real mpiexec with 1, 2 and 4 ranks (more ranks than cores is fine)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from dtb.errors import DataError
from dtb.io.runfile import read_summary

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("n_ranks", [1, 2, pytest.param(4, marks=pytest.mark.slow)])
def test_mpi_suite(n_ranks):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    p = subprocess.run([MPIEXEC, "-n", str(n_ranks), sys.executable, "-m", "mpi4py", "-m", "pytest", "--with-mpi",
                        "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "mpi")],
                       capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert " passed" in p.stdout and "skipped" not in p.stdout.splitlines()[-1]


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("args,needle", [
    (["--set", "simulation.dt_ms=0"], "simulation.dt_ms = 0.0: must be a number >= 0.0001"),
    (["--set", "wholebrain.subject=nobody"], "subject 'nobody' not in file"),
    (["--set", "simulation.exchange=two_level", "--set", "simulation.ranks_per_node=3"],
     "simulation.ranks_per_node = 3: must divide the number of ranks (2)"),
])
def test_errors_under_mpiexec_end_every_rank_with_one_line(tmp_path, args, needle):
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "dtb", "run", "--quiet",
                        "--out", str(tmp_path / "x.h5"), *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if line.startswith("dtb: error:")]
    assert len(errors) == 1 and needle in errors[0], p.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_existing_output_under_mpiexec(tmp_path):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"keep me")
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "dtb", "run", "--quiet",
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "exists (use --overwrite" in p.stderr
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("launcher, says", [
    ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, "the launcher started 2 ranks, but MPI sees only"),
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, "PMI_SIZE = 2 in the environment, but no launcher started this process"),
    ({"PMI_SIZE": "abc"}, "PMI_SIZE = 'abc' in the environment is not a launcher's"),
    ({"PMI_SIZE": "1", "PMI_RANK": "0", "PMI_FD": "abc"}, "PMI_FD = 'abc' in the environment is not a launcher's"),
    ({"PMI_SIZE": "1", "PMI_RANK": "0", "PMI_FD": "97"}, "PMI_FD = 97 in the environment is not open"),
    ({"PMI_SIZE": "0", "PMI_RANK": "0"}, "no launcher starts rank 0 of 0"),
    ({"PMI_SIZE": "2", "PMI_RANK": "2"}, "no launcher starts rank 2 of 2"),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "PMI_FD": "97"}, "PMI_FD = 97 in the environment is not open"),
], ids=["other-mpi", "stale-pmi", "junk-size", "junk-fd", "closed-fd", "size-0",
        "rank-past-size", "closed-fd-rank1"])
def test_a_launcher_that_is_not_this_mpis_is_refused(tmp_path, launcher, says):
    """Launcher variables that MPI would misread: another MPI library's launcher (MPI starts this process
    alone; Open MPI's mpirun, whose rank 0 mpi4py also warns about), a shell that kept a launcher's variables,
    values no launcher writes (MPICH would end with pages of internal errors). One line on every such process,
    rank 1's too (it is alone), nothing written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI_", "HYD"))}
    p = subprocess.run([sys.executable, "-m", "dtb", "run", "--quiet", "--set", "wholebrain.n_neurons=2000",
                        "--out", str(tmp_path / "x.h5")], capture_output=True, text=True, timeout=120,
                       env={**env, **launcher})
    assert p.returncode == 2 and says in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["run", "--set", "simulation.t_ms=-5"], ["config", "--set", "simulation.t_ms=-5"],
                                  ["inspect", "missing.h5"]])
def test_bad_input_under_stale_launcher_variables_is_said(tmp_path, args):
    """A shell that kept a launcher's PMI_RANK=1 and PMI_SIZE=2: no rank 0 will speak, so this process does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI_", "HYD"))}
    p = subprocess.run([sys.executable, "-m", "dtb", *args], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**env, "PMI_RANK": "1", "PMI_SIZE": "2"})
    assert p.returncode == 2 and p.stderr.startswith("dtb: error: ") and p.stderr.count("\n") == 1, p.stderr


def dtb_under_mpiexec(n_ranks, *args):
    return [MPIEXEC, "-n", str(n_ranks), sys.executable, "-m", "mpi4py", "-m", "dtb", *args]


KILL_RUN = ["--quiet", "--set", "wholebrain.n_neurons=2000", "--set", "wholebrain.in_degree=20",
            "--set", "simulation.t_ms=2000", "--set", "recording.bold=true", "--set", "bold.tr_ms=50"]


def rank_pid(rank: int, needle: str) -> int | None:
    """The pid of the MPI rank ``rank`` whose command line contains ``needle``."""
    for proc in Path("/proc").iterdir():
        try:
            if needle in (proc / "cmdline").read_bytes().decode(errors="replace") and \
                    f"PMI_RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, ValueError):
            continue
    return None


def wait_for(predicate, timeout_s):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s")


def killed_job(tmp_path):
    """A 2-rank run whose rank 1 is SIGKILLed after the first checkpoint; returns (out, seconds to end)."""
    out = tmp_path / "run.h5"
    job = subprocess.Popen(dtb_under_mpiexec(2, "run", *KILL_RUN, "--set", "simulation.checkpoint_ms=100",
                                             "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(out.with_name("run.h5.partial").exists, 120)
        os.kill(wait_for(lambda: rank_pid(1, str(out)), 10), signal.SIGKILL)
        killed = time.monotonic()
        job.wait(timeout=30)
        ended_s = time.monotonic() - killed
    finally:
        job.kill()
    assert job.returncode != 0 and not out.exists()
    return out, ended_s


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_a_killed_rank_ends_the_job_and_resume_completes_the_run(tmp_path):
    """SIGKILL one rank after the first checkpoint: the job ends within 30 s, non-zero; the checkpoint opens;
    --resume on 2 ranks finishes the run, bitwise the uninterrupted run of one process."""
    out, ended_s = killed_job(tmp_path)
    assert ended_s < 30
    partial = out.with_name("run.h5.partial")
    facts = read_summary(partial)  # the last checkpoint opens and says how far the run got
    assert 100.0 <= facts["t_ms"] < 2000.0 and facts["n_spikes"] > 0
    with h5py.File(partial) as f:
        assert f["rates/population_hz"].shape[0] == int(facts["t_ms"])
        assert f["spikes/wholebrain/node_ids"].shape[0] == facts["n_spikes"]
    p = subprocess.run(dtb_under_mpiexec(2, "run", "--resume", str(out), "--quiet"), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    ref = tmp_path / "ref.h5"
    subprocess.run([sys.executable, "-m", "dtb", "run", *KILL_RUN, "--out", str(ref)], check=True, timeout=300,
                   capture_output=True)
    with h5py.File(out) as a, h5py.File(ref) as b:
        for name in ("spikes/wholebrain/timestamps", "spikes/wholebrain/node_ids", "rates/population_hz", "bold"):
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
        assert a.attrs["resumed_at_ms"] == facts["t_ms"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ref.h5", "run.h5"]  # self-contained: no parts left


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_an_error_on_one_rank_ends_the_job(tmp_path):
    """Resuming, rank 1 alone cannot read its checkpoint state: the job ends promptly, non-zero, with its message."""
    out, _ = killed_job(tmp_path)
    for state in out.with_name("run.h5.parts").glob("rank1.state*.h5"):
        state.write_bytes(b"not HDF5")
    p = subprocess.run(dtb_under_mpiexec(2, "run", "--resume", str(out), "--quiet"), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0
    assert "rank 1: checkpoint state" in p.stderr and "rank1.state" in p.stderr
    assert not out.exists() and out.with_name("run.h5.partial").exists()


FAULT_ON_RANK_1 = """
import sys
from dtb import cli

def faulty_run(args):  # MPI running, rank 0 waiting in a collective, rank 1 meets a bug
    from dtb.context import Context
    ctx = Context.world()
    if ctx.rank == 1:
        raise RuntimeError("an injected bug on rank 1")
    ctx.barrier()
    return 0

cli._run = faulty_run
sys.exit(cli.main(["run"]))
"""


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_any_exception_on_one_rank_ends_a_plain_mpiexec_job(tmp_path):
    """Under a plain ``mpiexec -n 2`` (no ``-m mpi4py``, as the console script runs), an exception that is no
    DTBError on one rank ends the whole job promptly, with its traceback, instead of leaving rank 0 waiting."""
    t0 = time.monotonic()
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c", FAULT_ON_RANK_1], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "an injected bug on rank 1" in p.stderr, p.stderr[-2000:]
    assert time.monotonic() - t0 < 30


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_a_checkpoint_state_without_its_data_is_refused(tmp_path):
    """Rank 1's checkpoint state lacks a dataset: the resume under the console script ends the job with that
    rank's one-line error, instead of silently continuing from the initial state."""
    out, _ = killed_job(tmp_path)
    for state in out.with_name("run.h5.parts").glob("rank1.state*.h5"):
        with h5py.File(state, "r+") as f:
            del f["sim/v"]
    console = str(Path(sys.executable).with_name("dtb"))
    p = subprocess.run([MPIEXEC, "-n", "2", console, "run", "--resume", str(out), "--quiet"], capture_output=True,
                       text=True, timeout=60)
    # the state's digest finds it first (the engine's own check stands behind it)
    assert p.returncode != 0 and "rank 1: checkpoint state" in p.stderr and "is damaged" in p.stderr, p.stderr[-2000:]
    assert not out.exists()


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("stitch", ["copy", "virtual"])
def test_sonata_readers_read_a_many_rank_file_as_dtb_does(tmp_path, stitch):
    """libsonata (the reference reader) and bmtk read the spikes of a 2-rank run file, self-contained or with
    virtual datasets over the ranks' files, exactly as dtb's reader and the one-rank file have them."""
    libsonata = pytest.importorskip("libsonata")
    pytest.importorskip("bmtk")  # read in a child process: bmtk starts MPI in the process that imports it
    import numpy as np

    from dtb.io.analysis import open_run

    args = ["--quiet", "--set", "wholebrain.n_neurons=2000", "--set", "wholebrain.in_degree=20",
            "--set", "simulation.t_ms=100", "--set", f"recording.stitch={stitch}"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    assert subprocess.run([sys.executable, "-m", "dtb", "run", *args, "--out", str(one)], timeout=300).returncode == 0
    p = subprocess.run(dtb_under_mpiexec(2, "run", *args, "--out", str(two)), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("simulation ") == 1, p.stdout  # every rank has the summary; one prints it
    keys = []
    for path in (one, two):
        with open_run(path) as run:
            mine = (run.spikes.node_ids.compute().astype(np.int64), run.spikes.times_ms.compute())
        pop = libsonata.SpikeReader(str(path))["wholebrain"]
        assert pop.sorting == "by_id"
        ref = np.array(pop.get(), dtype=[("node", np.int64), ("t", np.float64)])
        npz = tmp_path / f"{path.stem}_bmtk.npz"
        read = ("import sys, numpy as np; from bmtk.utils.reports.spike_trains import SpikeTrains; "
                "df = SpikeTrains.from_sonata(sys.argv[1]).to_dataframe(population='wholebrain'); "
                "np.savez(sys.argv[2], ids=df['node_ids'].to_numpy(), t=df['timestamps'].to_numpy())")
        assert subprocess.run([sys.executable, "-c", read, str(path), str(npz)], timeout=300).returncode == 0
        bmtk = np.load(npz)
        for ids, times in ((ref["node"], ref["t"]), (bmtk["ids"], bmtk["t"])):
            order, want = np.lexsort((times, ids)), np.lexsort((mine[1], mine[0]))
            np.testing.assert_array_equal(ids[order], mine[0][want])
            np.testing.assert_array_equal(times[order], mine[1][want])
        keys.append(mine)
        with open_run(path) as run:  # the digests cover what the file stores itself, and name what it does not
            virtual = run.verify()["virtual"]
        assert virtual == (["spikes/wholebrain/node_ids", "spikes/wholebrain/timestamps"]
                           if path == two and stitch == "virtual" else [])
    for a, b in zip(*keys):  # the two files hold the same spikes (rank invariance, through every reader)
        np.testing.assert_array_equal(np.sort(a), np.sort(b))
    if stitch == "virtual":  # a part changed after the run, or gone, is found by the run file's digests
        part = sorted(two.with_name("two.h5.parts").iterdir())[0]
        with h5py.File(part, "r+") as f:
            ids = [k for k in _datasets(f) if k.endswith("node_ids")][0]
            f[ids][0] = f[ids][0] + 1
        with pytest.raises(DataError, match="node_ids differs from what was written"), open_run(two) as run:
            run.verify()
        part.unlink()
        with pytest.raises(DataError, match=part.name), open_run(two) as run:
            run.verify()


def _datasets(f) -> list[str]:
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_an_overwrite_keeps_an_old_virtual_run_readable_until_it_commits(tmp_path):
    """A 2-rank run stitched as virtual datasets over its ranks' sorted files in run.h5.parts; an --overwrite of
    it (another seed) killed after its first checkpoint, and one that fails: the old file still reads its own
    spikes. A completed overwrite reads the new spikes, and only its own sorted files are left in the folder."""
    out = tmp_path / "run.h5"
    args = KILL_RUN + ["--set", "recording.stitch=virtual", "--set", "simulation.checkpoint_ms=100", "--out", str(out)]
    assert subprocess.run(dtb_under_mpiexec(2, "run", *args), capture_output=True, timeout=300).returncode == 0

    def spikes():
        with h5py.File(out) as f:
            return f["spikes/wholebrain/node_ids"][()], f["spikes/wholebrain/timestamps"][()]

    old = spikes()
    assert len(old[0]) > 0
    parts = out.with_name("run.h5.parts")
    old_files = sorted(p.name for p in parts.iterdir())
    # killed after its first checkpoint: nothing of the old run is touched
    job = subprocess.Popen(dtb_under_mpiexec(2, "run", *args, "--overwrite", "--set", "simulation.seed=7"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(out.with_name("run.h5.partial").exists, 120)
        os.kill(wait_for(lambda: rank_pid(1, str(out)), 10), signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        job.kill()
    for a, b in zip(old, spikes()):
        np.testing.assert_array_equal(a, b)
    # one without checkpoints that is stopped (SIGTERM to rank 0, which cleans up what it wrote): the old run's
    # sorted files stay
    out.with_name("run.h5.partial").unlink()
    for p in parts.iterdir():
        if p.name not in old_files:
            p.unlink()  # the killed run's segments
    job = subprocess.Popen(dtb_under_mpiexec(2, "run", *args, "--overwrite", "--set", "simulation.seed=7",
                                             "--set", "simulation.checkpoint_ms=0"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for((parts / "rank0.seg0.h5").exists, 120)
        os.kill(wait_for(lambda: rank_pid(0, str(out)), 10), signal.SIGTERM)
        err = job.communicate(timeout=30)[1]
    finally:
        job.kill()
    assert job.returncode != 0 and "terminated (SIGTERM)" in err, err[-2000:]
    assert not (parts / "rank0.seg0.h5").exists()  # rank 0 removed its own
    for a, b in zip(old, spikes()):
        np.testing.assert_array_equal(a, b)
    assert set(old_files) <= {p.name for p in parts.iterdir()}
    # a completed overwrite: the new spikes, and no file of the old run left
    p = subprocess.run(dtb_under_mpiexec(2, "run", *args, "--overwrite", "--set", "simulation.seed=7"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    new = spikes()
    assert not np.array_equal(new[1][: min(len(new[1]), len(old[1]))], old[1][: min(len(new[1]), len(old[1]))])
    left = sorted(p.name for p in parts.iterdir())
    assert len(left) == 2 and not set(left) & set(old_files), left


ROOT_WRITE_FAILS = """
import sys
import dtb
from dtb.errors import DTBError, WriteError
from dtb.io import runfile

where, out = sys.argv[1], sys.argv[2]
ctx = dtb.Context.world()
if ctx.rank == 0:  # rank 0 alone writes the run file: its write fails while the other ranks wait for it
    def fail(*args, **kwargs):
        raise WriteError("an injected write failure on rank 0")
    setattr(runfile.RunWriter, where, fail)
net = dtb.wholebrain(n_neurons=2000, in_degree=20)
s = dtb.Session(net, out=out, ctx=ctx, checkpoint_ms=20.0, progress=False)
try:
    with s:
        s.run(40.0)
except DTBError as err:
    print(f"rank {ctx.rank} raised {type(err).__name__}: {err}", flush=True)
    sys.exit(3)
print(f"rank {ctx.rank} finished", flush=True)
"""


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("where", ["write_checkpoint", "finish"])
def test_a_failed_write_on_rank_0_ends_every_rank_of_a_python_api_job(tmp_path, where):
    """Under the Python API and a plain ``mpiexec`` (nothing aborts the job for it), a write that fails on rank 0
    alone raises on every rank, the others naming rank 0, instead of leaving them waiting in a collective; the
    run file never appears."""
    out = tmp_path / "run.h5"
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c", ROOT_WRITE_FAILS, where, str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0, p.stdout + p.stderr[-2000:]
    assert "rank 0 raised WriteError: an injected write failure on rank 0" in p.stdout, p.stdout + p.stderr[-2000:]
    assert "rank 1 raised DTBError: rank 0 failed: an injected write failure on rank 0" in p.stdout
    assert not out.exists() and not (tmp_path / "run.h5.lock").exists()


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("rank, sig, said", [(1, signal.SIGTERM, "dtb: terminated (SIGTERM)"),
                                             (0, signal.SIGINT, "dtb: interrupted")])
def test_a_signal_to_one_rank_ends_a_plain_mpiexec_job(tmp_path, rank, sig, said):
    """The console script under a plain ``mpiexec`` (no ``-m mpi4py``): SIGTERM or SIGINT to one rank ends every
    rank promptly with its message, instead of leaving the others waiting for it; the checkpoint stays."""
    out = tmp_path / "run.h5"
    console = str(Path(sys.executable).with_name("dtb"))
    job = subprocess.Popen([MPIEXEC, "-n", "2", console, "run", *KILL_RUN, "--set", "simulation.t_ms=20000",
                            "--set", "simulation.checkpoint_ms=100", "--out", str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out.with_name("run.h5.partial").exists, 120)
        os.kill(wait_for(lambda: rank_pid(rank, str(out)), 10), sig)
        t0 = time.monotonic()
        _, err = job.communicate(timeout=60)
        assert time.monotonic() - t0 < 30
    finally:
        job.kill()
    assert job.returncode != 0 and said in err, err[-2000:]
    assert not out.exists() and read_summary(out.with_name("run.h5.partial"))["t_ms"] >= 100.0


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_a_signal_to_one_rank_of_a_run_without_checkpoints_leaves_nothing(tmp_path):
    """SIGTERM to rank 1 alone, no checkpoints: rank 0, held in a collective, is ended by rank 1's abort before
    it can clean up, so rank 1 removes the run's parts and its lock: nothing of the run is left."""
    out = tmp_path / "run.h5"
    console = str(Path(sys.executable).with_name("dtb"))
    job = subprocess.Popen([MPIEXEC, "-n", "2", console, "run", *KILL_RUN, "--set", "simulation.t_ms=20000",
                            "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(out.with_name("run.h5.parts").glob("rank1.seg0.h5")), 120)
        time.sleep(0.5)  # simulating
        os.kill(wait_for(lambda: rank_pid(1, str(out)), 10), signal.SIGTERM)
        _, err = job.communicate(timeout=60)
    finally:
        job.kill()
    assert job.returncode != 0 and "dtb: terminated (SIGTERM)" in err, err[-2000:]
    assert list(tmp_path.iterdir()) == []
