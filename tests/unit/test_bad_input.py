"""Malformed input, table-driven: one line naming the problem, exit status 2, no run file left behind.

Each row is a command line run through ``dtb.cli.main`` in this process (test_cli.py and
test_mpi_launch.py check the same contract through real processes and mpiexec).
"""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import write_connectome
from dtb import cli

N = 4


def sc_with(i, j, value):
    sc = np.full((N, N), 5.0)
    np.fill_diagonal(sc, 0.0)
    sc[i, j] = value
    return sc


def setup_connectome(**changes):
    return lambda d: write_connectome(d / "c.h5", **changes)


def setup_truncated(d):
    write_connectome(d / "c.h5")
    data = (d / "c.h5").read_bytes()
    (d / "c.h5").write_bytes(data[: len(data) // 2])


def setup_text(name, text):
    return lambda d: (d / name).write_text(text)


def setup_both(*setups):
    def make(d):
        for setup in setups:
            setup(d)
    return make


def setup_h5(build):
    """A connectome file c.h5 made by ``build(f)`` from a valid one."""
    def make(d):
        write_connectome(d / "c.h5")
        with h5py.File(d / "c.h5", "r+") as f:
            build(f)
    return make


def _subjects_as_dataset(f):
    del f["subjects"]
    f["subjects"] = np.zeros(3)


def _subject_as_dataset(f):
    del f["subjects/s1"]
    f["subjects/s1"] = np.zeros(3)


def _dangling_external(f):
    del f["subjects/s1/sc"]
    f["subjects/s1/sc"] = h5py.ExternalLink("nowhere.h5", "/sc")


def _soft_loop(f):
    del f["subjects/s1/sc"]
    f["subjects/s1/sc"] = h5py.SoftLink("/subjects/s1/loop")
    f["subjects/s1/loop"] = h5py.SoftLink("/subjects/s1/sc")


def _duplicate_labels(f):
    del f["labels"]
    f["labels"] = np.array([b"R0", b"R1", b"R0", b"R3"])


def _complex_sc(f):
    sc = f["subjects/s1/sc"][()]
    del f["subjects/s1/sc"]
    f["subjects/s1/sc"] = sc.astype(np.complex128) + 1j


def _planted_parts_link(d):
    (d / "victim").mkdir()
    (d / "victim" / "rank0.seg0.h5").write_bytes(b"someone else's")
    (d / "out.h5.parts").symlink_to(d / "victim")


def _planted_parts_file(d):
    (d / "out.h5.parts").mkdir()
    (d / "out.h5.parts" / "notes.txt").write_text("mine")


def _labels_2d(f):
    labels = f["labels"][()]
    del f["labels"]
    f["labels"] = labels[:, None]


def _labels_not_utf8(f):
    del f["labels"]
    f["labels"] = np.array([b"R0", b"\xc4\xff", b"R2", b"R3"])


def _control_label(f):
    f["labels"][1] = b"R\x01"  # the labels are 2-byte strings, where a NUL would end the name


def _float_labels(f):
    del f["labels"]
    f["labels"] = np.arange(N) + 0.5


def setup_mat(blob):
    return lambda d: (d / "w.mat").write_bytes(blob)


def setup_truncated_mat73(d):
    with h5py.File(d / "w.mat", "w") as f:
        f["connectivity"] = np.ones((4, 4))
    data = (d / "w.mat").read_bytes()
    (d / "w.mat").write_bytes(data[: len(data) // 2])


def setup_tvb_zip(patch):
    """A TVB zip whose every file header is patched by ``patch(bytearray, offset of a header's flags)``: the
    general-purpose flags sit 6 bytes into a local header and 8 into a central one, the method 2 bytes after."""
    def make(d):
        import zipfile

        n = 4
        with zipfile.ZipFile(d / "tvb.zip", "w") as z:
            z.writestr("weights.txt", "\n".join(" ".join("1" for _ in range(n)) for _ in range(n)))
            z.writestr("tract_lengths.txt", "\n".join(" ".join("20" for _ in range(n)) for _ in range(n)))
        raw = bytearray((d / "tvb.zip").read_bytes())
        for magic, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            i = raw.find(magic)
            while i >= 0:
                patch(raw, i + at)
                i = raw.find(magic, i + 4)
        (d / "tvb.zip").write_bytes(bytes(raw))
    return make


def _encrypted(raw, flags):
    raw[flags] |= 1


def _unknown_method(raw, flags):
    raw[flags + 2] = 99


def setup_two_tvb_sets(d):
    import zipfile

    with zipfile.ZipFile(d / "tvb.zip", "w") as z:
        for folder in ("a", "b"):
            z.writestr(f"{folder}/weights.txt", "0 1\n1 0\n")
            z.writestr(f"{folder}/tract_lengths.txt", "0 20\n20 0\n")


def setup_damaged_compressed_mat(d):
    import scipy.io

    scipy.io.savemat(d / "w.mat", dict(connectivity=np.arange(400.0).reshape(20, 20)), do_compression=True)
    raw = bytearray((d / "w.mat").read_bytes())
    raw[-10] ^= 0xFF
    (d / "w.mat").write_bytes(bytes(raw))


def setup_huge_empty_h5(d):
    """A connectome whose sc is a 200,000 x 200,000 chunked dataset never written: a few kB on disk, 320 GB read."""
    write_connectome(d / "c.h5")
    with h5py.File(d / "c.h5", "r+") as f:
        del f["subjects/s1/sc"]
        f["subjects/s1"].create_dataset("sc", shape=(200_000, 200_000), dtype="f8", chunks=(100, 100))


def setup_huge_empty_mat73(d):
    with h5py.File(d / "w.mat", "w") as f:
        f.create_dataset("connectivity", shape=(200_000, 200_000), dtype="f8", chunks=(100, 100))


def setup_tvb_areas(areas):
    """A TVB zip of 2 regions with ``areas`` as its areas.txt."""
    def make(d):
        from helpers import write_tvb_zip

        write_tvb_zip(d / "tvb.zip", areas)
    return make


def setup_bold_tr(tr_s):
    """The bundled data file as b.h5, its repetition time ``tr_s``."""
    def make(d):
        from dtb.connectome.connectome import bundled_connectome_path

        shutil.copy(bundled_connectome_path(), d / "b.h5")
        with h5py.File(d / "b.h5", "r+") as f:
            f.attrs["tr_s"] = tr_s
    return make


def setup_bad_summary(d):
    with h5py.File(d / "r.h5", "w") as f:
        pops = f.create_group("network/populations")
        pops["name"] = [b"E"]
        for key, value in (("size", 1), ("first_gid", 0), ("region", 0), ("excitatory", True)):
            pops[key] = [value]
        f.attrs["t_ms"] = 10.0
        f["network/regions"] = [b"R"]
        f.attrs["schema_version"] = 1
        f["summary"] = "not json {"


def setup_unfinished_run(d):
    """What a killed run leaves: a checkpoint file and its parts folder."""
    (d / "out.h5.partial").write_bytes(b"checkpoint")
    (d / "out.h5.parts").mkdir()


RUN = ["run", "--quiet", "--out", "out.h5"]
BIG = "1" + "0" * 400  # an integer too large for a float
WITH_CONNECTOME = RUN + ["--set", 'wholebrain.connectome="c.h5"', "--set", "wholebrain.subject=s1"]
BUNDLED = str(Path(cli.__file__).parent / "data" / "hcp_aal2.h5")

CASES = {
    # configuration
    "unknown key": (RUN + ["--set", "simulation.bogus=1"], "unknown key 'simulation.bogus'", None),
    "unknown section": (RUN + ["--set", "network.size=1"], "unknown key 'network.size'", None),
    "wrong type (number)": (RUN + ["--set", "simulation.t_ms=abc"], "simulation.t_ms = 'abc': must be a number",
                            None),
    "wrong type (bool)": (RUN + ["--set", "recording.spikes=3"], "recording.spikes = 3: must be true or false", None),
    "negative time": (RUN + ["--set", "simulation.t_ms=-5"], "simulation.t_ms = -5.0: must be a number > 0", None),
    "zero time": (RUN + ["--set", "simulation.t_ms=0"], "simulation.t_ms = 0.0: must be a number > 0", None),
    "zero time step": (RUN + ["--set", "simulation.dt_ms=0"], "simulation.dt_ms = 0.0: must be a number >= 0.0001", None),
    "dt not dividing the delays": (RUN + ["--set", "simulation.dt_ms=0.3"],
                                   "wholebrain.local_delay_ms = 1: must be a positive multiple of simulation.dt_ms = 0.3",
                                   None),
    "time not a whole number of steps": (RUN + ["--set", "simulation.t_ms=100.05"],
                                         "simulation.t_ms = 100.05: must be a positive multiple", None),
    "bad backend": (RUN + ["--set", "simulation.backend=tpu"], "simulation.backend = 'tpu': must be one of", None),
    "bad choice": (RUN + ["--set", "simulation.partition=random"], "simulation.partition = 'random'", None),
    "negative seed": (RUN + ["--set", "simulation.seed=-1"], "simulation.seed = -1: must be an integer >= 0", None),
    "inconsistent keys": (RUN + ["--set", "wholebrain.k_local_e=0.7", "--set", "wholebrain.k_local_i=0.5"],
                          "k_local_e + wholebrain.k_local_i = 1.2: must be <= 1", None),
    "TR not whole ms": (RUN + ["--set", "recording.bold=true", "--set", "bold.tr_ms=0.5"],
                        "bold.tr_ms = 0.5: must be a positive multiple of simulation.dt_ms = 1", None),
    "--set without value": (RUN + ["--set", "simulation.t_ms"], "expected section.key=value", None),
    "config not TOML": (["run", "bad.toml", "--quiet", "--out", "out.h5"], "is not valid TOML",
                        setup_text("bad.toml", "[simulation\nt_ms = 1")),
    "config file missing": (["run", "nope.toml", "--quiet", "--out", "out.h5"],
                            "config file 'nope.toml' does not exist", None),
    "unknown key in a file": (["run", "typo.toml", "--quiet", "--out", "out.h5"], "typo.toml: unknown key",
                              setup_text("typo.toml", "[simulaton]\nt_ms = 10\n")),
    # connectome files
    "missing dataset": (WITH_CONNECTOME, "missing dataset '/subjects/s1/len_mm'", setup_connectome(len_mm=None)),
    "wrong shape": (WITH_CONNECTOME, "sc has shape (3, 3), expected (4, 4)",
                    setup_connectome(sc=np.ones((3, 3)))),
    "NaN": (WITH_CONNECTOME, "sc contains NaN", setup_connectome(sc=sc_with(0, 1, np.nan))),
    "negative sizes": (WITH_CONNECTOME, "nvoxel has negative values",
                       setup_connectome(nvoxel=np.array([100, -3, 100, 100]))),
    "empty region": (WITH_CONNECTOME, "region 'R1' is empty", setup_connectome(nvoxel=np.array([100, 0, 100, 100]))),
    "subject not present": (RUN + ["--set", 'wholebrain.connectome="c.h5"', "--set", "wholebrain.subject=s9"],
                            "subject 's9' not in file (has: s1)", setup_connectome()),
    "truncated HDF5": (WITH_CONNECTOME, "is not a readable HDF5 file", setup_truncated),
    "not HDF5": (WITH_CONNECTOME, "is not a readable HDF5 file", setup_text("c.h5", "sc,len\n1,2\n")),
    "connectome missing": (WITH_CONNECTOME, "c.h5' does not exist", None),
    # outputs and resources
    "output exists": (RUN, "output 'out.h5' exists (use --overwrite", setup_text("out.h5", "keep")),
    "output folder missing": (["run", "--quiet", "--out", "no/such/dir/out.h5"],
                              "output folder 'no/such/dir' does not exist", None),
    "unfinished run in the way": (RUN, "holds the checkpoint of an unfinished run", setup_unfinished_run),
    "too large for memory": (RUN + ["--set", "wholebrain.n_neurons=1e9", "--set", "wholebrain.in_degree=1000"],
                             "not enough memory for this run: rank 0 of 1 needs about", None),
    # other commands
    "resume without checkpoint": (["run", "--resume", "out.h5"], "no checkpoint to resume", None),
    "inspect a non-run file": (["inspect", "c.h5"], "is not a complete dtb run file", setup_connectome()),
    "plot a text file": (["plot", "notes.h5"], "is not a readable HDF5 file", setup_text("notes.h5", "hello")),
    "assimilate unknown subject": (["assimilate", "--subject", "999", "--quiet", "--out", "out.h5"],
                                   "subject '999' not in", None),
    "assimilate one member": (["assimilate", "--members", "1", "--quiet", "--out", "out.h5"],
                              "assimilation.members = 1: must be an integer >= 2", None),
    # structure and content of inputs (issue 17)
    "subjects as a dataset": (WITH_CONNECTOME, "subject 's1' not in file", setup_h5(_subjects_as_dataset)),
    "a subject as a dataset": (WITH_CONNECTOME, "'/subjects/s1' is not a group", setup_h5(_subject_as_dataset)),
    "dangling external link": (WITH_CONNECTOME, "missing dataset '/subjects/s1/sc'", setup_h5(_dangling_external)),
    "soft-link loop": (WITH_CONNECTOME, "cannot read subject 's1'", setup_h5(_soft_loop)),
    "fractional nvoxel": (WITH_CONNECTOME, "nvoxel is not a whole number of voxels",
                          setup_connectome(nvoxel=np.array([100, 0.4, 100, 100]))),
    "duplicate labels": (WITH_CONNECTOME, "names region 'R0' twice", setup_h5(_duplicate_labels)),
    "complex sc": (WITH_CONNECTOME, "'/subjects/s1/sc' is not numeric", setup_h5(_complex_sc)),
    "config is a folder": (["run", "sub", "--out", "out.h5"], "is not a regular file", lambda d: (d / "sub").mkdir()),
    "config name too long": (["run", "x" * 300, "--out", "out.h5"], "cannot be read", None),
    "config path with a NUL": (["run", "a\0b.toml", "--out", "out.h5"], "cannot be read", None),
    "output name too long": (RUN[:2] + ["--out", "y" * 300 + ".h5"], "is not a usable path", None),
    "an empty output path": (RUN[:2] + ["--out", ""], "the output path is empty", None),
    # the name fits, but not its checkpoint's temporary file beside it (".partial.tmp")
    "output name too long for its companions": (RUN[:2] + ["--out", "y" * 248 + ".h5"], "is not a usable path",
                                                None),
    "output naming a folder": (RUN[:2] + ["--out", "newdir/"], "names a folder", None),
    "a --set value of two keys": (RUN + ["--set", 'wholebrain.subject="a"\nmodel="pd14"'],
                                  "the value must be one TOML value", None),
    "a bare --set value with a newline": (RUN + ["--set", "wholebrain.subject=a\nb"], "may not hold control", None),
    "resume given the config": (["run", "--resume", "c.toml", "out.h5"], "--resume 'c.toml': not a run file",
                                lambda d: (d / "c.toml").write_text("[simulation]\nt_ms = 10.0\n")),
    "output a loop of links": (RUN[:2] + ["--out", "out.h5", "--overwrite"], "is not a usable path",
                               lambda d: (d / "out.h5").symlink_to(d / "out.h5")),
    "a folder at the checkpoint's place": (RUN[:2] + ["--out", "out.h5", "--overwrite"],
                                           "out.h5.partial' is not a regular file",
                                           lambda d: (d / "out.h5.partial").mkdir()),
    # the run would write its segments into, and clear, another folder
    "parts a link to another folder": (RUN[:2] + ["--out", "out.h5", "--overwrite"],
                                       "out.h5.parts' is a symbolic link", _planted_parts_link),
    # a run clears <out>.parts and removes <out>.lock: never of someone's own files of those names
    "someone's files in the parts folder": (RUN[:2] + ["--out", "out.h5", "--overwrite"],
                                            "holds files that no dtb run wrote (notes.txt)", _planted_parts_file),
    "someone's file at the lock": (RUN[:2] + ["--out", "out.h5", "--overwrite"], "is not a dtb lock",
                                   lambda d: (d / "out.h5.lock").write_text("my notes\n")),
    "a link at the checkpoint's place": (RUN, "out.h5.partial' is a symbolic link",
                                         lambda d: (d / "out.h5.partial").symlink_to(d / "out.h5.partial")),
    "labels of two dimensions": (WITH_CONNECTOME, "'/labels' has shape (4, 1)", setup_h5(_labels_2d)),
    "a tiny time step": (RUN + ["--set", "simulation.dt_ms=1e-320"], "must be a number >= 0.0001", None),
    "a tiny conduction velocity": (RUN + ["--set", "wholebrain.conduction_velocity_m_s=1e-320"],
                                   "must be a number >= 0.01", None),
    "a tiny e_fraction": (RUN + ["--set", "wholebrain.e_fraction=1e-320"], "must be a number >= 0.001", None),
    "a tiny k_scale": (RUN + ["--set", "model=pd14", "--set", "pd14.k_scale=1e-320"], "must be a number >= 0.0001",
                       None),
    "a tiny observation variance": (["assimilate", "--quiet", "--out", "out.h5", "--set",
                                     "assimilation.obs_var=1e-320"], "must be a number >= 1e-30", None),
    "a local delay under one step": (RUN + ["--set", "wholebrain.local_delay_ms=1e-12"], "positive multiple", None),
    "inspect a foreign summary": (["inspect", "r.h5"], "its /summary is not dtb's JSON", setup_bad_summary),
    "slurm script in a missing folder": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "-o",
                                          "missing/dir/job.sbatch"], "output folder 'missing/dir' does not exist",
                                         None),
    "partition rate nan": (["partition", "--ranks", "4", "--rate-hz", "nan"], "--rate-hz = nan", None),
    "partition rate negative": (["partition", "--ranks", "4", "--rate-hz", "-5"], "--rate-hz = -5", None),
    "config path empty": (["run", ""], "the config path is empty", None),
    "partition rate subnormal": (["partition", "--ranks", "4", "--rate-hz", "1e-320"],
                                 "--rate-hz = 1e-320: below the smallest normal float", None),
    "connectome show velocity subnormal": (["connectome", "show", BUNDLED, "--velocity-m-s", "1e-320"],
                                           "--velocity-m-s = 1e-320: below the smallest normal float", None),
    "connectome show velocity past the config's": (["connectome", "show", BUNDLED, "--velocity-m-s",
                                                    "5000"],
                                                   "--velocity-m-s = 5000.0: must be a number >= 0.01 and <= 1000",
                                                   None),
    "averaging more TRs than were fitted": (["assimilate", "--quiet", "--out", "out.h5", "--set",
                                             "validation.average_trs=100000"], "validation.average_trs = 100000",
                                            None),
    "partition rate zero": (["partition", "--ranks", "4", "--rate-hz", "0"], "--rate-hz 0: at 0 Hz there is no traffic",
                            None),
    "partition strategy empty": (["partition", "--ranks", "4", "--strategy", ""], "partition strategy ''", None),
    "slurm script path empty": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "--script", ""],
                                "the output path is empty", None),
    "an HDF5 error is one line": (WITH_CONNECTOME, "is not a readable HDF5 file", setup_truncated),
    "connectome symlink loop": (RUN + ["--set", 'wholebrain.connectome="loop.h5"'], "not a usable path",
                                lambda d: (d / "loop.h5").symlink_to(d / "loop.h5")),
    "connectome name too long": (RUN + ["--set", f'wholebrain.connectome="{"c" * 5000}"'], "not a usable path", None),
    "labels not UTF-8": (WITH_CONNECTOME, "'/labels' is not UTF-8 text", setup_h5(_labels_not_utf8)),
    "resume a FIFO": (["run", "--resume", "out.h5"], "is not a regular file: not a checkpoint",
                      lambda d: __import__("os").mkfifo(d / "out.h5.partial")),
    "config symlink loop": (["run", "loop.toml", "--out", "out.h5"], "cannot be read",
                            lambda d: (d / "loop.toml").symlink_to(d / "loop.toml")),
    "per-region file not text": (RUN + ["--set", 'wholebrain.bg_mu_mv_ms="mu.csv"'], "cannot read",
                                 lambda d: (d / "mu.csv").write_bytes(b"\xc4\xff\x00")),
    "per-region file with nan": (RUN + ["--set", 'wholebrain.bg_mu_mv_ms="mu.csv"'],
                                 "region 'Precentral_L') = nan: must be a number",
                                 setup_text("mu.csv", "region,mu\nPrecentral_L,nan\n")),
    "per-region file is a folder": (RUN + ["--set", 'hyper.i_bg="mu"'], "is not a regular file",
                                    lambda d: (d / "mu").mkdir()),
    "per-region file empty": (RUN + ["--set", 'wholebrain.w_e_trace="we.csv"'], "we.csv: no 'label,value' rows",
                              setup_text("we.csv", "")),
    "per-region file of one semicolon line": (RUN + ["--set", 'wholebrain.w_e_trace="we.csv"'],
                                              "no 'label,value' rows (comma-separated",
                                              setup_text("we.csv", "Precentral_L;0.5\n")),
    "per-region file giving a region twice": (RUN + ["--set", 'wholebrain.w_e_trace="we.csv"'],
                                              "line 2 gives region 'Precentral_L' twice",
                                              setup_text("we.csv", "Precentral_L,0.5\nPrecentral_L,0.6\n")),
    # a fresh attack (issue 17): numbers too large for a float, infinities, damaged foreign files, odd outputs
    "an integer too large for a float": (RUN + ["--set", f"simulation.t_ms={BIG}"], "must be a number", None),
    "an integer of 5,000 digits": (RUN + ["--set", "simulation.dt_ms=1" + "0" * 5000], "must be a number", None),
    "a per-region list with a huge integer": (RUN + ["--set", f"wholebrain.w_e_trace=[1, {BIG}]"],
                                              "must be a number", None),
    "a sweep with a huge integer": (["assimilate", "--quiet", "--out", "out.h5", "--set",
                                     f"assimilation.sweep_coupling=[{BIG}]"], "assimilation.sweep_coupling", None),
    "a stimulus with a huge integer": (["run", "s.toml", "--out", "out.h5"], "must be finite numbers",
                                       setup_text("s.toml", "[[stimulus]]\npopulations = ['R0']\namplitude = "
                                                  f"{BIG}\nstart_ms = 0\nstop_ms = 5\n")),
    "a stimulus without end": (["run", "s.toml", "--out", "out.h5"], "must be finite numbers",
                               setup_text("s.toml", "[[stimulus]]\npopulations = ['R0']\namplitude = 1.0\n"
                                          "start_ms = 0\nstop_ms = inf\n")),
    "partition with a huge node": (["partition", "--ranks", "4", "--ranks-per-node", BIG], "--ranks-per-node", None),
    "fibre lengths of a denormal": (WITH_CONNECTOME, "len_mm has values below 2.23e-308 at index (0, 0): not a "
                                    "measured value", setup_connectome(len_mm=np.full((N, N), 1e-320))),
    "fibre lengths under a micrometre": (WITH_CONNECTOME, "len_mm is below 0.001 mm (1 um) where sc > 0 at index "
                                         "(0, 1)", setup_connectome(len_mm=np.full((N, N), 1e-5))),
    "labels that are fractions": (WITH_CONNECTOME, "'/labels' holds float64 values: region names are text or "
                                  "integers", setup_h5(_float_labels)),
    "a CSV weight with Python's digit grouping": (
        RUN + ["--set", 'wholebrain.connectome="w.csv"', "--set", 'wholebrain.lengths_file="w.csv"'],
        "w.csv: not a matrix of numbers (could not convert string to float: '1_000')",
        setup_text("w.csv", "0,1_000,1\n1,0,1\n1,1,0\n")),
    "a CSV whose first row has one bad cell": (
        RUN + ["--set", 'wholebrain.connectome="w.csv"', "--set", 'wholebrain.lengths_file="w.csv"'],
        "w.csv: not a matrix of numbers (could not convert string to float: '0x1')",
        setup_text("w.csv", "0,0x1,2\n1,0,3\n2,3,0\n")),  # not a header row over a 2-region matrix
    "a complex connectivity in a .mat": (RUN + ["--set", 'wholebrain.connectome="w.mat"'],
                                         "its 'connectivity' is a complex128 array of shape (4, 4), not a square "
                                         "matrix of real numbers",
                                         lambda d: __import__("scipy.io").io.savemat(
                                             d / "w.mat", dict(connectivity=np.ones((4, 4)) * 1j,
                                                               other=np.ones((4, 4))))),
    "a damaged compressed .mat": (RUN + ["--set", 'wholebrain.connectome="w.mat"'], "is not a readable MATLAB file",
                                  setup_damaged_compressed_mat),
    "a sizes file naming a region twice": (WITH_CONNECTOME + ["--set", 'wholebrain.sizes_file="s.csv"'],
                                           "s.csv' gives region 'R0' twice",
                                           setup_both(setup_connectome(), setup_text("s.csv", "R0,1\nR0,2\nR1,2\n"
                                                                                     "R2,2\nR3,2\n"))),
    "a denormal region size": (WITH_CONNECTOME, "size has values below 2.23e-308 at index 1: not a measured "
                               "value", setup_connectome(nvoxel=None, size=np.array([1.0, 1e-320, 1.0, 1.0]))),
    "a TVB zip of two connectivities": (RUN + ["--set", 'wholebrain.connectome="tvb.zip"'],
                                        "holds a/weights.txt and b/weights.txt: one connectivity per zip",
                                        setup_two_tvb_sets),
    "fibre lengths too long": (WITH_CONNECTOME, "len_mm has values over 10000",
                               setup_connectome(len_mm=np.full((N, N), 1e300))),
    "sizes too large": (WITH_CONNECTOME, "nvoxel has values over 1e+15",
                        setup_connectome(nvoxel=np.array([100, 1e300, 100, 100]))),
    "a NUL in a label": (WITH_CONNECTOME, "holds a control character", setup_h5(_control_label)),
    "an empty .mat": (RUN + ["--set", 'wholebrain.connectome="w.mat"'], "is not a readable MATLAB file",
                      setup_mat(b"")),
    "a text .mat": (RUN + ["--set", 'wholebrain.connectome="w.mat"'], "is not a readable MATLAB file",
                    setup_mat(b"MATLAB 5.0 MAT-file, but not really\n" * 10)),
    "a truncated v7.3 .mat": (RUN + ["--set", 'wholebrain.connectome="w.mat"'], "w.mat", setup_truncated_mat73),
    "an encrypted TVB zip": (RUN + ["--set", 'wholebrain.connectome="tvb.zip"'], "cannot read the zip",
                             setup_tvb_zip(_encrypted)),
    "a TVB zip of an unknown compression": (RUN + ["--set", 'wholebrain.connectome="tvb.zip"'],
                                            "cannot read the zip", setup_tvb_zip(_unknown_method)),
    "import under subject '.'": (["connectome", "import", "c.h5", "--subject", "s1", "-o", "x.h5"], None, None),
    "a tiny BOLD efficacy": (RUN + ["--set", "bold.eps=1e-320"], "bold.eps = 1e-320: below the smallest normal float",
                             None),
    "a subnormal time constant": (RUN + ["--set", "wholebrain.bg_tau_ms=1e-320"],
                                  "wholebrain.bg_tau_ms = 1e-320: below the smallest normal float", None),
    "a subnormal duration shown": (["config", "--set", "simulation.t_ms=1e-320"],
                                   "simulation.t_ms = 1e-320: below the smallest normal float", None),
    "TOML nested 5,000 deep": (["config", "deep.toml"], "is not valid TOML: maximum recursion depth",
                               setup_text("deep.toml", "a = " + "[" * 5000 + "]" * 5000)),
    "inspect a FIFO": (["inspect", "r.h5"], "is not a regular file", lambda d: __import__("os").mkfifo(d / "r.h5")),
    "plot a FIFO": (["plot", "r.h5", "-o", "r.png"], "is not a regular file",
                    lambda d: __import__("os").mkfifo(d / "r.h5")),
    "compare a FIFO": (["compare", "r.h5"], "is not a regular file", lambda d: __import__("os").mkfifo(d / "r.h5")),
    "a picture onto a device": (["plot", "r.h5", "-o", "/dev/full"], "is not a regular file", None),
    "a picture with no name": (["plot", "r.h5", "-o", ""], "the output path is empty", None),
    "a picture onto the data": (["plot", "r.h5", "--data", "d.png", "-o", "d.png"], "is an input",
                                setup_text("d.png", "data")),
    "slurm over an existing script": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "--script", "job.sbatch"],
                                      "exists (use --overwrite", setup_text("job.sbatch", "keep")),
    "slurm script onto its config": (["slurm", "run.toml", "--nodes", "1", "--ntasks-per-node", "1", "--script",
                                      "run.toml", "--overwrite"], "is an input", setup_text("run.toml", "")),
    "slurm script onto a FIFO": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "--script", "fifo"],
                                 "is not a regular file", lambda d: __import__("os").mkfifo(d / "fifo")),
    "slurm --out with a newline": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "--out",
                                    "r.h5\n#SBATCH --x\necho hi"], "a file path without spaces", None),
    "slurm --out with a space": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "--out", "a b.h5"],
                                 "a file path without spaces", None),
    "slurm --out empty": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "--out", ""],
                          "a file path without spaces", None),
    "slurm --out a folder": (["slurm", "--nodes", "1", "--ntasks-per-node", "1", "--out", "/"],
                             "a file path without spaces", None),
    "slurm on a million and one nodes": (["slurm", "--nodes", "1000001", "--ntasks-per-node", "1"],
                                         "--nodes 1000001: must be >= 1 and <= 1,000,000", None),
    "slurm with 5,000 tasks a node": (["slurm", "--nodes", "1", "--ntasks-per-node", "5000"],
                                      "--ntasks-per-node 5000: must be >= 1 and <= 4,096", None),
    # values the model cannot use, and resources (issue 17, round 3)
    "more inputs than neurons": (RUN + ["--set", "wholebrain.n_neurons=1000", "--set", "wholebrain.in_degree=2000"],
                                 "wholebrain.in_degree = 2,000 exceeds wholebrain.n_neurons = 1,000", None),
    "a microcircuit without a layer": (RUN + ["--set", "model=pd14", "--set", "pd14.n_scale=1e-4"],
                                       "pd14.n_scale = 0.0001 leaves L5E without a neuron: 0.00047 or more", None),
    "records larger than the disk": (RUN + ["--set", "wholebrain.n_neurons=2000", "--set", "wholebrain.in_degree=10",
                                            "--set", "simulation.t_ms=1e9", "--set", "recording.rate_bin_ms=0.1"],
                                     "not enough disk for this run: its rates and state records need about", None),
    "weights with a column of region numbers": (["connectome", "show", "w.csv"],
                                                "shape (2, 3), expected a square one (regions x regions) (if its "
                                                "first column holds region numbers",
                                                setup_text("w.csv", "1,0,2\n2,2,0\n")),
    "weights without a number": (["connectome", "show", "w.csv"], "w.csv: no numbers in the file",
                                 setup_text("w.csv", "a,b\n")),
    # input formats (review of the readers)
    "a CSV label with its quote left open": (["connectome", "show", "w.csv"],
                                             "w.csv: the line '\"Q0,Q1' is not CSV (unexpected end of data)",
                                             setup_text("w.csv", '"Q0,Q1\n0,1\n1,0\n')),
    "a CSV weight of Arabic-Indic digits": (
        ["connectome", "show", "w.csv", "--lengths", "w.csv"],
        "w.csv: not a matrix of numbers (could not convert string to float: '\u0661')",
        setup_text("w.csv", "0,\u0661,1\n1,0,1\n1,1,0\n")),
    "a sizes file of Arabic-Indic digits": (WITH_CONNECTOME + ["--set", 'wholebrain.sizes_file="s.csv"'],
                                            "s.csv': '\u0662' (entry 2) is not a number",
                                            setup_both(setup_connectome(), setup_text("s.csv", "1\n\u0662\n3\n4\n"))),
    "a per-region file of Arabic-Indic digits": (RUN + ["--set", 'wholebrain.w_e_trace="we.csv"'],
                                                 "we.csv: line 2: '\u0660.5' is not a number",
                                                 setup_text("we.csv", "region,w\nPrecentral_L,\u0660.5\n")),
    "a DSI Studio name of numbers": (["connectome", "show", "w.mat", "--lengths", "w.mat"],
                                     "its 'name' is an array of float64: must be text (the region names)",
                                     lambda d: __import__("scipy.io").io.savemat(
                                         d / "w.mat", dict(connectivity=sc_with(0, 1, 5.0),
                                                           name=np.array([1.5, 2, 3, 4])))),
    "a DSI Studio name of a struct": (["connectome", "show", "w.mat", "--lengths", "w.mat"],
                                      "its 'name' is a struct: must be text",
                                      lambda d: __import__("scipy.io").io.savemat(
                                          d / "w.mat", dict(connectivity=sc_with(0, 1, 5.0), name=dict(a=1.0)))),
    "TVB areas of a matrix": (["connectome", "show", "tvb.zip"],
                              "tvb.zip:areas.txt: holds 2 rows of 2 values, expected one area per line",
                              setup_tvb_areas("1 2\n3 4\n")),
    "TVB areas of one row": (["connectome", "show", "tvb.zip"],
                             "tvb.zip:areas.txt: holds 1 rows of 2 values, expected one area per line",
                             setup_tvb_areas("10 20\n")),
    "a huge empty chunked HDF5 dataset": (WITH_CONNECTOME, "c.h5: '/subjects/s1/sc' has shape (200000, 200000): "
                                          "too large for an input (at most 268,435,456 cells)", setup_huge_empty_h5),
    "a huge empty chunked v7.3 .mat": (["connectome", "show", "w.mat"], "w.mat': 'connectivity' has shape "
                                       "(200000, 200000): too large for an input", setup_huge_empty_mat73),
    "a subnormal BOLD TR": (["assimilate", "--data", "b.h5", "--quiet", "--out", "out.h5"],
                            "root attribute 'tr_s' = 1e-320 s is no fMRI repetition time (at least 0.01 s)",
                            setup_bold_tr(1e-320)),
    "a BOLD TR in milliseconds": (["assimilate", "--data", "b.h5", "--quiet", "--out", "out.h5"],
                                  "root attribute 'tr_s' = 720 s is no fMRI repetition time (at most 30 s)",
                                  setup_bold_tr(720.0)),
    "a renamed key given under both names": (["config", "both.toml"], "both.toml: both wholebrain.w_e and "
                                             "wholebrain.w_e_trace are given: wholebrain.w_e is the deprecated "
                                             "name of wholebrain.w_e_trace",
                                             setup_text("both.toml", "[wholebrain]\nw_e = 0.5\nw_e_trace = 0.6\n")),
    "a renamed key --set under both names": (["config", "--set", "wholebrain.w_e_trace=0.6", "--set",
                                              "wholebrain.w_e=0.5"],
                                             "--set: both wholebrain.w_e and wholebrain.w_e_trace are given", None),
}
CASES["import under subject '.'"] = (["connectome", "import", "c.h5", "--subject", ".", "-o", "x.h5"],
                                     "subject '.'", setup_connectome())


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, monkeypatch, capsys, name):
    argv, needle, setup = CASES[name]
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        setup(tmp_path)
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dtb: error: ") and "Traceback" not in err, err
    assert needle in err, err
    after = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    assert after == before  # nothing written, nothing removed


@pytest.mark.parametrize("argv, needle", [
    (["partition", "--ranks", "nan"], "dtb partition: argument --ranks: invalid int value: 'nan'"),
    (["partition"], "dtb partition: the following arguments are required: --ranks"),
    (["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    (["connectome", "import"], "dtb connectome import: the following arguments are required"),
])
def test_a_usage_error_is_one_line_too(capsys, argv, needle):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("dtb: error: ") and needle in err, err
    assert "--help)" in err


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--debug", "run", "--quiet", "--set", "simulation.t_ms=0"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch, capsys):
    """A config's connectome path is relative to the config's folder, stored absolute, and reported."""
    (tmp_path / "study").mkdir()
    shutil.copy(cli.__file__.replace("cli.py", "data/hcp_aal2.h5"), tmp_path / "study" / "subject.h5")
    (tmp_path / "study" / "run.toml").write_text('[wholebrain]\nconnectome = "subject.h5"\nn_neurons = 4000\n'
                                                  'in_degree = 20\n[simulation]\nt_ms = 20\n')
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "study/run.toml", "--quiet", "--out", "r.h5"]) == 0
    out = capsys.readouterr().out
    assert f"connectome {tmp_path / 'study' / 'subject.h5'}" in out
    with h5py.File(tmp_path / "r.h5") as f:
        assert f'connectome = "{tmp_path / "study" / "subject.h5"}"' in f["config"][()].decode()


def test_gpu_preflight_names_the_gpu_limit():
    """The GPU backend's preflight (a device with 1 GiB free, faked: no GPU here)."""
    from dtb.config import load_config
    from dtb.errors import ResourceError
    from dtb.memory import preflight
    from dtb.model.registry import network_from_config
    from dtb.partition import partition

    recipe = network_from_config(load_config(overrides=["wholebrain.n_neurons=1e7",
                                                        "wholebrain.in_degree=1000"])).recipe()
    with pytest.raises(ResourceError, match=r"not enough GPU memory for this run: rank 0 of 2 needs about 29\.8 "
                                            r"GiB on its GPU .* 1\.0 GiB free; about 118 ranks"):
        preflight(recipe, partition(recipe, 2, "contiguous"), device_free=2**30)


def test_the_bundled_connectome_is_never_an_output(tmp_path, capsys):
    from dtb.connectome.connectome import bundled_connectome_path

    data = bundled_connectome_path()
    before = data.read_bytes()
    assert cli.main(["run", "--quiet", "--overwrite", "--out", str(data)]) == 2
    assert "is an input of this run" in capsys.readouterr().err
    link = tmp_path / "link.h5"
    link.symlink_to(data)
    assert cli.main(["run", "--quiet", "--overwrite", "--out", str(link)]) == 2
    assert data.read_bytes() == before
