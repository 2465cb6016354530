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
