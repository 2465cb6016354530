"""sbatch scripts for dtb runs, rendered from the templates in ``dtb/data/slurm`` (also ``slurm/templates``)."""

from __future__ import annotations

import re
import shlex
import sys
from importlib import resources
from pathlib import Path
from string import Template

from dtb.errors import ConfigError


def srun_mpi_flavour(library: str) -> str:
    """The ``srun --mpi=`` plugin that starts ranks of the given MPI library.

    MPICH (the ``mpich`` wheel dtb installs), Intel MPI and MVAPICH speak PMI-2;
    Open MPI wants PMIx.
    """
    return "pmix" if "Open MPI" in library else "pmi2"


#: Slurm's time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]
_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}")
_NAME = re.compile(r"[A-Za-z0-9._+-]{1,128}")


def render(*, nodes: int, ntasks_per_node: int, time: str, out: str | Path, config: str | Path | None = None,
           overrides: tuple[str, ...] | list[str] = (), gpus_per_task: int = 0, cpus_per_task: int = 1,
           job_name: str = "dtb", partition: str | None = None, account: str | None = None,
           mpi_library: str | None = None, python: str | None = None) -> str:
    """The sbatch script of one ``dtb run`` over ``nodes * ntasks_per_node`` ranks.

    Parameters
    ----------
    nodes, ntasks_per_node : int
        Ranks = nodes x tasks per node (one rank per GPU with ``gpus_per_task``).
    time : str
        Slurm time limit, e.g. ``"02:00:00"``.
    out : str or Path
        Run file; made absolute, as are ``config`` and the log next to it.
    config, overrides
        What ``dtb run`` gets.
    gpus_per_task, cpus_per_task : int
        GPUs and CPU cores (kernel threads) per rank; ``gpus_per_task`` > 0 picks the GPU template.
    mpi_library : str, optional
        Version string of the MPI library (default: the installed one), for ``srun --mpi``.
    python : str, optional
        Interpreter that runs dtb (default: this one).

    Returns
    -------
    str
    """
    for name, value in (("--nodes", nodes), ("--ntasks-per-node", ntasks_per_node), ("--cpus-per-task", cpus_per_task)):
        if value < 1:
            raise ConfigError(f"{name} {value}: must be >= 1")
    if gpus_per_task < 0:
        raise ConfigError(f"--gpus-per-task {gpus_per_task}: must be >= 0")
    if not _TIME.fullmatch(time):
        raise ConfigError(f"--time {time!r}: a Slurm time limit, minutes or [days-]hours:minutes[:seconds] "
                          "(e.g. 90, 02:00:00, 1-12:00:00)")
    for name, value in (("--job-name", job_name), ("--partition", partition), ("--account", account)):
        # pasted into #SBATCH lines: a newline or a shell character would change the script
        if value is not None and not _NAME.fullmatch(value):
            raise ConfigError(f"{name} {value!r}: letters, digits and . _ - + only")
    if mpi_library is None:
        from dtb.context import mpi_library as installed

        mpi_library = installed()
    out = Path(out).resolve()
    args = ([str(Path(config).resolve())] if config else []) + \
        [x for o in overrides for x in ("--set", o)] + \
        ["--set", f"simulation.threads={cpus_per_task}", "--out", str(out)]
    extra = [f"#SBATCH --partition={partition}"] if partition else []
    extra += [f"#SBATCH --account={account}"] if account else []
    template = "gpu.sbatch" if gpus_per_task else "cpu.sbatch"
    text = (resources.files("dtb") / "data" / "slurm" / template).read_text()
    return Template(text).substitute(
        job_name=job_name, nodes=nodes, ntasks_per_node=ntasks_per_node, cpus_per_task=cpus_per_task,
        gpus_per_task=gpus_per_task, time=time, log=str(out.with_suffix(".%j.log")),
        extra_directives="\n".join(extra), workdir=shlex.quote(str(Path.cwd())),
        srun_mpi=srun_mpi_flavour(mpi_library), python=shlex.quote(python or sys.executable),
        run_args=" ".join(shlex.quote(a) for a in args))
