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
_MEM = re.compile(r"\d+[KMGT]?")
_OPTION = re.compile(r"--[a-z][a-z-]*(=[A-Za-z0-9._+,:=-]+)?")


def _time_fields_in_range(time: str) -> bool:
    """Whether each field after the first of a time limit is in range: minutes and seconds under 60, the hours
    after days under 24 (``99:99:99`` matches the pattern but is no time)."""
    days, _, clock = time.rpartition("-")
    fields = [int(x) for x in clock.split(":")]
    return all(x < 60 for x in fields[1:]) and (not days or fields[0] < 24)


#: bounds of a job: Slurm's own (nodes in a job; tasks, CPUs and GPUs on one node), and the ranks dtb partitions
#: for (simulation.dry_run_ranks)
MAX_NODES = 1_000_000
MAX_PER_NODE = 4096
MAX_RANKS = 10_000_000


def render(*, nodes: int, ntasks_per_node: int, time: str, out: str | Path, config: str | Path | None = None,
           overrides: tuple[str, ...] | list[str] = (), gpus_per_task: int = 0, cpus_per_task: int = 1,
           job_name: str = "dtb", partition: str | None = None, account: str | None = None,
           mpi_library: str | None = None, python: str | None = None, mem: str | None = None,
           setup: tuple[str, ...] | list[str] = (), sbatch: tuple[str, ...] | list[str] = ()) -> str:
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
    mem : str, optional
        Memory per node (``#SBATCH --mem``), e.g. ``"64G"``.
    setup : list of str
        Shell lines run before ``srun`` (``module load openmpi``, ``source venv/bin/activate``), one each.
    sbatch : list of str
        Further ``#SBATCH`` options, each ``--name`` or ``--name=value`` (``--constraint=a100``).

    Returns
    -------
    str
    """
    for name, value, most in (("--nodes", nodes, MAX_NODES), ("--ntasks-per-node", ntasks_per_node, MAX_PER_NODE),
                              ("--cpus-per-task", cpus_per_task, MAX_PER_NODE)):
        if not 1 <= value <= most:
            raise ConfigError(f"{name} {value}: must be >= 1 and <= {most:,}")
    if not 0 <= gpus_per_task <= MAX_PER_NODE:
        raise ConfigError(f"--gpus-per-task {gpus_per_task}: must be >= 0 and <= {MAX_PER_NODE:,}")
    if nodes * ntasks_per_node > MAX_RANKS:
        raise ConfigError(f"--nodes {nodes} x --ntasks-per-node {ntasks_per_node} = {nodes * ntasks_per_node:,} "
                          f"ranks: dtb runs at most {MAX_RANKS:,}")
    if not _TIME.fullmatch(time) or not _time_fields_in_range(time):
        raise ConfigError(f"--time {time!r}: a Slurm time limit, minutes or [days-]hours:minutes[:seconds] "
                          "(e.g. 90, 02:00:00, 1-12:00:00)")
    for name, value in (("--job-name", job_name), ("--partition", partition), ("--account", account)):
        # pasted into #SBATCH lines: a newline or a shell character would change the script
        if value is not None and not _NAME.fullmatch(value):
            raise ConfigError(f"{name} {value!r}: letters, digits and . _ - + only")
    if mpi_library is None:
        from dtb.context import mpi_library as installed

        mpi_library = installed()
    if not Path(out).name or re.search(r"[\x00-\x20\x7f\"'\\]", str(Path(out).resolve())):
        # the log's name, made absolute (the working folder's name too), goes into an #SBATCH line, which Slurm does
        # not parse as a shell would
        raise ConfigError(f"--out {str(Path(out).resolve())!r}: a file path without spaces, quotes, backslashes or "
                          "control characters (the working folder's name included)")
    out = Path(out).resolve()
    args = ([str(Path(config).resolve())] if config else []) + \
        [x for o in overrides for x in ("--set", o)] + \
        ["--set", f"simulation.threads={cpus_per_task}", "--out", str(out)]
    if mem is not None and not _MEM.fullmatch(mem):
        raise ConfigError(f"--mem {mem!r}: a size like 64G, 512M or 1T (Slurm's --mem)")
    for line in setup:
        if "\n" in line or "\r" in line or not line.strip():
            raise ConfigError(f"--setup {line!r}: one non-empty shell line each (give --setup again for more)")
    for option in sbatch:
        if not _OPTION.fullmatch(option):
            raise ConfigError(f"--sbatch {option!r}: an sbatch option as --name or --name=value (letters, digits and "
                              ". _ - + , : = only)")
    extra = [f"#SBATCH --partition={partition}"] if partition else []
    extra += [f"#SBATCH --account={account}"] if account else []
    extra += [f"#SBATCH --mem={mem}"] if mem else []
    extra += [f"#SBATCH {option}" for option in sbatch]
    template = "gpu.sbatch" if gpus_per_task else "cpu.sbatch"
    text = (resources.files("dtb") / "data" / "slurm" / template).read_text()
    return Template(text).substitute(
        job_name=job_name, nodes=nodes, ntasks_per_node=ntasks_per_node, cpus_per_task=cpus_per_task,
        gpus_per_task=gpus_per_task, time=time, log=str(out.with_suffix("")).replace("%", "%%") + ".%j.log",
        extra_directives="\n".join(extra), workdir=shlex.quote(str(Path.cwd())),
        setup="".join(f"{line}\n" for line in setup),
        srun_mpi=srun_mpi_flavour(mpi_library), python=shlex.quote(python or sys.executable),
        run_args=" ".join(shlex.quote(a) for a in args))
