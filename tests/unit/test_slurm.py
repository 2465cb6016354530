"""sbatch scripts: rendering, and a real job on the machine's Slurm (started by .ci/run)."""

import shutil
import subprocess

import h5py
import numpy as np
import pytest

from dtb import driver
from dtb.config import load_config
from dtb.context import Context
from dtb.errors import ConfigError
from dtb.slurm import render, srun_mpi_flavour


def test_cpu_script(tmp_path):
    s = render(nodes=3, ntasks_per_node=8, time="00:30:00", out=tmp_path / "r.h5", config=None,
               overrides=["model=pd14"], cpus_per_task=4, partition="batch", account="brain",
               mpi_library="MPICH Version: 4.2", python="/opt/py/bin/python")
    for line in ("#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=8", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --time=00:30:00", "#SBATCH --partition=batch", "#SBATCH --account=brain",
                 f"#SBATCH --output={tmp_path}/r.%j.log", "export NUMBA_NUM_THREADS=4"):
        assert line in s
    assert ("srun --mpi=pmi2 /opt/py/bin/python -m mpi4py -m dtb run --set model=pd14 "
            f"--set simulation.threads=4 --out {tmp_path}/r.h5") in s
    assert "gpus" not in s


def test_gpu_script_one_rank_per_gpu(tmp_path):
    s = render(nodes=2, ntasks_per_node=4, gpus_per_task=1, time="01:00:00", out=tmp_path / "r.h5",
               mpi_library="Open MPI v5.0.3")
    assert "#SBATCH --gpus-per-task=1" in s and "--gpu-bind=single:1" in s and "srun --mpi=pmix" in s


def test_flavour_and_errors():
    assert srun_mpi_flavour("MPICH Version: 5.0.2") == "pmi2"
    assert srun_mpi_flavour("Open MPI v4.1.6, package: Open MPI") == "pmix"
    with pytest.raises(ConfigError, match="--nodes 0: must be >= 1"):
        render(nodes=0, ntasks_per_node=1, time="1", out="x.h5", mpi_library="MPICH")


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="no Slurm here (.ci/run installs and starts one)")
def test_real_slurm_job(tmp_path):
    """A rendered 2-task job runs under sbatch --wait and writes the same spikes as one process."""
    overrides = ["wholebrain.n_neurons=3000", "wholebrain.in_degree=40", "simulation.t_ms=100",
                 "recording.progress=false"]
    out = tmp_path / "slurm.h5"
    script = tmp_path / "job.sbatch"
    script.write_text(render(nodes=1, ntasks_per_node=2, time="00:10:00", out=out, overrides=overrides))
    p = subprocess.run(["sbatch", "--wait", str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    logs = "".join(f.read_text() for f in tmp_path.glob("slurm.*.log"))
    assert p.returncode == 0, p.stdout + p.stderr + logs
    ref = tmp_path / "serial.h5"
    driver.run(load_config(overrides=overrides), ref, ctx=Context.serial(threads=1))
    with h5py.File(out) as a, h5py.File(ref) as b:
        assert a["partition"].attrs["n_ranks"] == 2
        for name in ("spikes/wholebrain/timestamps", "spikes/wholebrain/node_ids", "rates/population_hz"):
            np.testing.assert_array_equal(a[name][()], b[name][()])


@pytest.mark.parametrize("option,value", [("time", "tomorrow"), ("time", "01:00:00\necho pwned"),
                                          ("time", "99:99:99"), ("time", "1-24:00"), ("time", "10:60"),
                                          ("job_name", "x\nrm -rf ~"), ("partition", "gpu;reboot"),
                                          ("account", "a b")])
def test_directives_cannot_inject_lines(option, value):
    kwargs = dict(nodes=1, ntasks_per_node=2, time="01:00:00", out="run.h5", mpi_library="MPICH")
    kwargs[option] = value
    with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')}"):
        render(**kwargs)


def test_a_log_in_a_working_folder_whose_name_would_break_the_directive_is_refused(tmp_path, monkeypatch):
    """A relative --out is made absolute for its #SBATCH line: a working folder named with a newline is refused."""
    folder = tmp_path / "a\nb"
    folder.mkdir()
    monkeypatch.chdir(folder)
    with pytest.raises(ConfigError, match="the working folder's name included"):
        render(nodes=1, ntasks_per_node=1, time="1", out="run.h5", mpi_library="MPICH")


def test_memory_setup_lines_and_more_directives(tmp_path):
    s = render(nodes=1, ntasks_per_node=4, time="02:00:00", out=tmp_path / "r.h5", mpi_library="MPICH", mem="64G",
               setup=["module load openmpi/4.1", "source /opt/venv/bin/activate"],
               sbatch=["--constraint=a100", "--exclusive"])
    lines = s.splitlines()
    for line in ("#SBATCH --mem=64G", "#SBATCH --constraint=a100", "#SBATCH --exclusive"):
        assert line in lines
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun"))
    a, b = lines.index("module load openmpi/4.1"), lines.index("source /opt/venv/bin/activate")
    assert lines.index("set -euo pipefail") < a < b < srun
    for kwargs, msg in ((dict(mem="lots"), "--mem"), (dict(setup=["a\nb"]), "--setup"),
                        (dict(sbatch=["--x=1\nrm"]), "--sbatch"), (dict(sbatch=["nodash"]), "--sbatch")):
        with pytest.raises(ConfigError, match=msg):
            render(nodes=1, ntasks_per_node=1, time="1", out="x.h5", mpi_library="MPICH", **kwargs)


def test_cli_writes_the_script_and_refuses_a_script_as_the_run_file(tmp_path, capsys):
    from dtb import cli

    script = tmp_path / "job.sbatch"
    assert cli.main(["slurm", "--nodes", "1", "--ntasks-per-node", "2", "--mem", "8G", "--setup", "module load mpi",
                     "--script", str(script)]) == 0
    assert "#SBATCH --mem=8G" in script.read_text() and "module load mpi" in script.read_text()
    assert cli.main(["slurm", "--nodes", "1", "--ntasks-per-node", "2", "--out", "job.sbatch"]) == 2
    assert "the script goes to --script" in capsys.readouterr().err


def test_cpus_per_task_follow_the_runs_threads(capsys):
    from dtb import cli

    assert cli.main(["slurm", "--nodes", "1", "--ntasks-per-node", "2", "--set", "simulation.threads=6"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --cpus-per-task=6" in text and "simulation.threads=6" in text
    assert cli.main(["slurm", "--nodes", "1", "--ntasks-per-node", "2"]) == 0  # threads = 0: one core per rank
    assert "#SBATCH --cpus-per-task=1" in capsys.readouterr().out
    assert cli.main(["slurm", "--nodes", "1", "--ntasks-per-node", "2", "--set", "simulation.threads=6",
                     "--cpus-per-task", "3"]) == 0
    assert "#SBATCH --cpus-per-task=3" in capsys.readouterr().out
