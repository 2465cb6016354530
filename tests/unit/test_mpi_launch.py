"""Runs tests/mpi under a real mpiexec with 1, 2 and 4 ranks (more ranks than cores is fine)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("n_ranks", [1, 2, 4])
def test_mpi_suite(n_ranks):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    p = subprocess.run([MPIEXEC, "-n", str(n_ranks), sys.executable, "-m", "mpi4py", "-m", "pytest", "--with-mpi",
                        "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "mpi")],
                       capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert " passed" in p.stdout and "skipped" not in p.stdout.splitlines()[-1]


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("args,needle", [
    (["--set", "simulation.dt_ms=0"], "simulation.dt_ms = 0.0: must be a number > 0"),
    (["--set", "wholebrain.subject=nobody"], "subject 'nobody' not in file"),
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


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_an_exception_on_one_rank_ends_the_job(tmp_path):
    """Rank 1 alone cannot create its spike part: the job ends promptly, non-zero, with rank 1's message."""
    out = tmp_path / "run.h5"
    (tmp_path / "run.h5.parts" / "rank1.h5").mkdir(parents=True)  # a folder where rank 1's file must go
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "dtb", "run", "--quiet",
                        "--set", "wholebrain.n_neurons=2000", "--set", "simulation.t_ms=2000", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "rank1.h5" in p.stderr
    assert not out.exists()
