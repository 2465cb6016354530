"""Connectomes in the formats people have: TVB's demo connectivities (the tvb-data package), MRtrix3's
upper-triangular CSV, DSI Studio's .mat, NumPy, labelled CSV; directed coupling, regions without input."""

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from helpers import write_connectome
from dtb.cli import main
from dtb.connectome.connectome import load_connectome, summarize
from dtb.connectome.wholebrain import wholebrain_recipe
from dtb.errors import DataError

tvb_data = pytest.importorskip("tvb_data")
TVB = Path(tvb_data.__file__).parent / "connectivity"
DEMOS = {"connectivity_66": 66, "connectivity_68": 68, "connectivity_76": 76, "connectivity_96": 96,
         "connectivity_192": 192, "paupau": 4}


def _load(*args, **kwargs):
    """load_connectome and the warnings it gave (as strings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        con = load_connectome(*args, **kwargs)
    return con, [str(w.message) for w in caught]


def _tvb_text(zip_name: str) -> dict:
    with zipfile.ZipFile(TVB / f"{zip_name}.zip") as z:
        return {Path(n).name: z.read(n) for n in z.namelist() if not n.endswith("/")}


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_every_tvb_demo_connectivity_loads_as_tvb_reads_it(name):
    con, _ = _load(TVB / f"{name}.zip")
    n = DEMOS[name]
    assert con.n_regions == n and con.subject == name
    files = _tvb_text(name)
    weights = next(v for k, v in files.items() if k.startswith("weights"))
    if not weights.startswith(b"BZ"):  # the plain-text ones: the matrix is the file's, rows = targets (TVB's)
        assert np.array_equal(con.sc, np.loadtxt(weights.decode().splitlines()))
    centres = next(v for k, v in files.items() if k.startswith("centres"))
    if not centres.startswith(b"BZ"):
        assert con.labels == [ln.split()[0] for ln in centres.decode().splitlines() if ln.strip()]
    off = (con.sc > 0) & ~np.eye(n, dtype=bool)
    assert np.all(con.nvoxel > 0) and np.all(con.len_mm[off] > 0)
    recipe = wholebrain_recipe(con, n_neurons=50 * n, in_degree=20)
    assert len(recipe.populations) == 2 * n


def test_directed_and_isolated_tvb_regions():
    """connectivity_76 is asymmetric and has two regions (the corpus callosum) that receive nothing."""
    con, warned = _load(TVB / "connectivity_76.zip")
    assert not np.allclose(con.sc, con.sc.T)
    assert con.without_input == ["rCC", "lCC"]
    assert any("without long-range input get local input only: rCC, lCC" in w for w in warned)
    assert any("area 0 in areas.txt" in w for w in warned)  # TVB gives the callosum no cortical area
    recipe = wholebrain_recipe(con, n_neurons=76 * 40, in_degree=21, k_local_e=4 / 7, k_local_i=1 / 7)
    into = {p.target: [] for p in recipe.projections}
    for p in recipe.projections:
        into[p.target].append(p.indegree)
    cc = con.labels.index("rCC")
    assert sum(into[2 * cc]) == 12 + 3  # local only
    assert sum(into[0]) == 21
    # directed: the sources of region i's long-range input are the non-zero entries of row i
    r = con.labels.index("rA1")
    lr = [p for p in recipe.projections if p.target == 2 * r and len(p.sources) > 1][0]
    assert np.array_equal(lr.sources // 2, np.flatnonzero((con.sc[r] > 0) & (np.arange(76) != r)))


def test_tvb_folder_and_compressed_files_read_as_the_zip(tmp_path):
    for name in ("connectivity_68", "connectivity_76"):  # 68's files are .txt.bz2
        with zipfile.ZipFile(TVB / f"{name}.zip") as z:
            z.extractall(tmp_path / name)
        folder = tmp_path / name
        inner = [p for p in folder.iterdir() if p.is_dir()]
        folder = inner[0] if inner else folder  # 76 keeps its files in a subfolder of the zip
        a, _ = _load(TVB / f"{name}.zip")
        b, _ = _load(folder)
        assert a.labels == b.labels and np.array_equal(a.sc, b.sc) and np.array_equal(a.len_mm, b.len_mm)


def test_files_too_large_for_a_connectome_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """A TVB folder's other files are never read (a 2 GiB one of notes beside it changes nothing); its own files,
    a text matrix or a .npy array beyond the limits are refused from their sizes (limits made small here)."""
    from dtb.connectome import formats

    with zipfile.ZipFile(TVB / "connectivity_76.zip") as z:
        z.extractall(tmp_path / "tvb")
    folder = next((p for p in (tmp_path / "tvb").iterdir() if p.is_dir()), tmp_path / "tvb")
    with open(folder / "notes.bin", "wb") as f:
        f.truncate(2**31)  # sparse: no disk used, but 2 GiB to read
    con, _ = _load(folder)
    assert con.n_regions == 76
    monkeypatch.setattr(formats, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(DataError, match="its TVB files hold more than"):
        load_connectome(folder)
    sc, ln = _full(10)
    np.savetxt(tmp_path / "w.csv", sc, delimiter=",")  # 2,500 bytes
    with pytest.raises(DataError, match="too large for a connectome's text"):
        load_connectome(tmp_path / "w.csv", lengths=tmp_path / "w.csv")
    monkeypatch.setattr(formats, "MAX_DENSE_CELLS", 35)
    np.save(tmp_path / "w.npy", sc)
    with pytest.raises(DataError, match=r"holds an array of shape \(10, 10\): too large for a connectome"):
        load_connectome(tmp_path / "w.npy", lengths=tmp_path / "w.npy")


def _full(n=6, seed=3):
    rng = np.random.default_rng(seed)
    sc = np.triu(rng.integers(1, 500, (n, n)).astype(float), 1)
    ln = np.triu(rng.uniform(10, 150, (n, n)), 1)
    return sc + sc.T, ln + ln.T


def test_mrtrix3_upper_triangular_csv(tmp_path):
    sc, ln = _full()
    np.savetxt(tmp_path / "connectome.csv", np.triu(sc), delimiter=",", fmt="%g")
    np.savetxt(tmp_path / "lengths.csv", np.triu(ln), delimiter=",", fmt="%.17g")
    (tmp_path / "lut.txt").write_text("# FreeSurfer LUT\n" + "".join(f"{i + 1} ctx-{i} 25 100 40 0\n" for i in range(6)))
    con, warned = _load(tmp_path / "connectome.csv", lengths=tmp_path / "lengths.csv", labels=tmp_path / "lut.txt")
    assert np.array_equal(con.sc, sc) and np.allclose(con.len_mm, ln, rtol=1e-15)
    assert con.labels == [f"ctx-{i}" for i in range(6)] and con.subject == "connectome"
    assert any("same number of neurons" in w for w in warned) and np.all(con.nvoxel == 1)
    # whitespace-separated (tck2connectome's other output), sc_rows irrelevant for a mirrored matrix
    np.savetxt(tmp_path / "connectome.txt", np.triu(sc), fmt="%g")
    np.savetxt(tmp_path / "lengths.txt", np.triu(ln), fmt="%.17g")
    con2, _ = _load(tmp_path / "connectome.txt", lengths=tmp_path / "lengths.txt", sc_rows="sources")
    assert np.array_equal(con2.sc, sc) and con2.labels[0] == "R000"


def test_a_sparse_mat_matrix_reads_as_the_dense_one(tmp_path):
    """MATLAB's ``sparse``: scipy reads it as a sparse matrix, which must not be taken for 'no matrix'."""
    import scipy.sparse

    sc, ln = _full()
    scipy.io.savemat(tmp_path / "sc.mat", dict(connectivity=scipy.sparse.csc_matrix(sc)))
    scipy.io.savemat(tmp_path / "len.mat", dict(connectivity=scipy.sparse.csc_matrix(ln)))
    con, _ = _load(tmp_path / "sc.mat", lengths=tmp_path / "len.mat")
    assert np.array_equal(con.sc, sc) and np.array_equal(con.len_mm, ln)


def test_dsi_studio_mat(tmp_path):
    sc, ln = _full()
    names = "\n".join(f"AAL_{i}" for i in range(6)).encode() + b"\n"
    scipy.io.savemat(tmp_path / "dti.count.pass.connectivity.mat",
                     dict(connectivity=sc, name=np.frombuffer(names, np.uint8)[None], atlas="aal"))
    scipy.io.savemat(tmp_path / "dti.mean_length.pass.connectivity.mat", dict(connectivity=ln))
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("label,voxels\n" + "".join(f"AAL_{i},{100 + i}\n" for i in reversed(range(6))))
    con, _ = _load(tmp_path / "dti.count.pass.connectivity.mat",
                   lengths=tmp_path / "dti.mean_length.pass.connectivity.mat", sizes=sizes)
    assert con.labels == [f"AAL_{i}" for i in range(6)] and con.subject == "dti"
    assert np.array_equal(con.sc, sc) and np.array_equal(con.len_mm, ln)
    assert np.array_equal(con.nvoxel, 100 + np.arange(6))
    # and it runs with one command
    out = tmp_path / "dsi_run.h5"
    mat = tmp_path / "dti.count.pass.connectivity.mat"
    assert main(["run", "--quiet", "--out", str(out), "--set", f"wholebrain.connectome={mat}",
                 "--set", f"wholebrain.lengths_file={tmp_path / 'dti.mean_length.pass.connectivity.mat'}",
                 "--set", f"wholebrain.sizes_file={sizes}", "--set", "wholebrain.n_neurons=600",
                 "--set", "wholebrain.in_degree=20", "--set", "simulation.t_ms=20"]) == 0
    with h5py.File(out) as f:
        assert [r.decode() for r in f["network/regions"][()]] == con.labels


def test_directed_npy_and_the_row_convention(tmp_path):
    sc, ln = _full()
    sc[0, 1] = 0.0  # 1 -> 0 absent, 0 -> 1 present: directed
    np.save(tmp_path / "w.npy", sc)
    np.save(tmp_path / "l.npy", ln)
    as_targets, _ = _load(tmp_path / "w.npy", lengths=tmp_path / "l.npy")
    as_sources, _ = _load(tmp_path / "w.npy", lengths=tmp_path / "l.npy", sc_rows="sources")
    assert np.array_equal(as_targets.sc, sc) and np.array_equal(as_sources.sc, sc.T)
    assert summarize(as_targets)["symmetric"] is False
    p = as_targets.long_range_probabilities("row")
    assert p[0, 1] == 0 and p[1, 0] > 0


def test_labelled_csv_header_and_column(tmp_path):
    sc, ln = _full(4)
    labels = ["A", "B", "C", "D"]
    rows = [",".join(["", *labels])] + [",".join([lab, *map(str, r)]) for lab, r in zip(labels, sc)]
    (tmp_path / "w.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "w.tsv").write_text("\n".join(r.replace(",", "\t") for r in rows) + "\n")
    np.savetxt(tmp_path / "l.csv", ln, delimiter=",")
    # a spreadsheet in a locale with a decimal comma writes semicolons between cells
    (tmp_path / "w.semi.csv").write_text("\n".join(r.replace(",", ";") for r in rows) + "\n")
    for name in ("w.csv", "w.tsv", "w.semi.csv"):
        con, _ = _load(tmp_path / name, lengths=tmp_path / "l.csv")
        assert con.labels == labels and np.array_equal(con.sc, sc)


def _quoted(cell) -> str:
    return '"' + str(cell).replace('"', '""') + '"'


def test_quoted_cells_read_as_a_spreadsheet_writes_them(tmp_path):
    """CSV quoting ("Left, anterior"; "" for a quote inside quotes) in matrices, labels, sizes and per-region files;
    a quoted number is a number."""
    from dtb.model.registry import read_table

    sc, ln = _full(4)
    sc[0, 1] = sc[1, 0] = 0.5
    labels = ["Left, anterior", 'Q"1', "Q2", "Q3"]
    rows = [",".join(map(_quoted, labels))] + [",".join(map(_quoted, r)) for r in sc]
    (tmp_path / "w.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "w.semi.csv").write_text("\n".join(r.replace(",", ";") for r in rows[1:]) + "\n")
    np.savetxt(tmp_path / "l.csv", ln, delimiter=",")
    (tmp_path / "sizes.csv").write_text('"label","size"\n' + "".join(f"{_quoted(lab)},{_quoted(10 + i)}\n"
                                                                      for i, lab in enumerate(labels)))
    con, _ = _load(tmp_path / "w.csv", lengths=tmp_path / "l.csv", sizes=tmp_path / "sizes.csv")
    assert con.labels == labels and np.array_equal(con.sc, sc) and con.sc[0, 1] == 0.5
    assert np.array_equal(con.nvoxel, [10, 11, 12, 13])
    # a labels file: one quoted name per line, or a lookup table with quoted names
    (tmp_path / "names.txt").write_text("".join(_quoted(lab) + "\n" for lab in labels))
    (tmp_path / "lut.txt").write_text("".join(f"{i + 1} {_quoted(lab)} 25 100 40 0\n" for i, lab in enumerate(labels)))
    for names in ("names.txt", "lut.txt"):
        con, _ = _load(tmp_path / "w.semi.csv", lengths=tmp_path / "l.csv", labels=tmp_path / names)
        assert con.labels == labels and np.array_equal(con.sc, sc)
    (tmp_path / "we.csv").write_text('"region","w"\n"Left, anterior","0.5"\n"Q""1",2\n')
    assert read_table(str(tmp_path / "we.csv"), "wholebrain.w_e_trace") == {"Left, anterior": 0.5, 'Q"1': 2.0}


def test_tvb_areas_one_per_line_read_and_other_shapes_refused(tmp_path):
    from helpers import write_tvb_zip

    def tvb(areas):
        return write_tvb_zip(tmp_path / "tvb.zip", areas)

    assert np.array_equal(_load(tvb("10\n20\n"))[0].nvoxel, [10, 20])
    for areas in ("1 2\n3 4\n", "10 20\n", "1 2 3 4\n"):  # a matrix, a row, four values for two regions
        with pytest.raises(DataError, match="areas.txt: holds .* expected one area per line"):
            load_connectome(tvb(areas))


def test_a_dsi_studio_name_that_is_not_text_is_refused(tmp_path):
    sc, ln = _full(4)
    for name, needle in ((np.array([1.5, 2, 3, 4]), "is an array of float64"), (dict(a=1.0), "is a struct"),
                         (np.array([1.0, "b", "c", "d"], dtype=object), "is a cell array of non-text cells")):
        scipy.io.savemat(tmp_path / "w.mat", dict(connectivity=sc, name=name))
        with pytest.raises(DataError, match=f"its 'name' {needle}: must be text"):
            load_connectome(tmp_path / "w.mat", lengths=tmp_path / "w.mat")
    scipy.io.savemat(tmp_path / "w.mat", dict(connectivity=sc, name=np.array(["a", "b", "c", "d"], dtype=object)))
    assert _load(tmp_path / "w.mat", lengths=tmp_path / "w.mat")[0].labels == ["a", "b", "c", "d"]


def test_non_ascii_digits_are_not_numbers():
    from dtb.connectome.formats import is_number, text_float

    for text in ("\u0661", "\u0661.5", "\uff11", "\u0967", "1\u00a0"):  # Arabic-Indic, full-width, Devanagari, NBSP
        assert float(text) and not is_number(text)
    assert text_float(" 1.5e3 ") == 1500.0 and is_number("-inf")


def test_huge_hdf5_datasets_are_refused_from_their_shape(tmp_path, monkeypatch):
    """dtb's HDF5 and MATLAB v7.3 files: a dataset over the cap is refused before it is read (cap made small)."""
    from dtb.io import hdf5

    write_connectome(tmp_path / "c.h5", n=6)
    with h5py.File(tmp_path / "w.mat", "w") as f:
        f["connectivity"] = _full(6)[0]
    assert load_connectome(tmp_path / "c.h5", subject="s1").n_regions == 6
    monkeypatch.setattr(hdf5, "MAX_INPUT_CELLS", 35)
    with pytest.raises(DataError, match=r"c\.h5: '/subjects/s1/len_mm' has shape \(6, 6\): too large for an input "
                                        r"\(at most 35 cells\)"):
        load_connectome(tmp_path / "c.h5", subject="s1")
    with pytest.raises(DataError, match=r"w\.mat': 'connectivity' has shape \(6, 6\): too large"):
        load_connectome(tmp_path / "w.mat", lengths=tmp_path / "w.mat")


@pytest.mark.parametrize("write,kwargs,needle", [
    (lambda d: np.save(d / "w.npy", _full()[0]), {}, "no fibre lengths (give a lengths file"),
    (lambda d: np.save(d / "w.npy", np.ones((3, 4))), {}, "expected a square one"),
    (lambda d: (d / "w.npy").write_text("x,y\n1,2\n"), {}, "not a readable .npy array"),
    (lambda d: (d / "w.csv").write_text("1,2\n3\n"), {}, "rows of different lengths"),
    (lambda d: np.save(d / "w.npy", np.eye(3) + 1), dict(labels="two.txt"), "2 region labels for a 3 x 3"),
    (lambda d: scipy.io.savemat(d / "w.mat", dict(a=np.ones((3, 3)), b=np.ones((3, 3)))), {}, "several square"),
    (lambda d: (d / "w.csv").write_text("1,0,2\n2,2,0\n"), {}, "if its first column holds region numbers"),
    (lambda d: (d / "w.csv").write_text("a,b\n"), {}, "no numbers in the file"),
    (lambda d: np.save(d / "w.npy", np.eye(3) + 1), dict(labels="fractions.txt"),
     "region label '1.5' is a fraction, not a name"),
    (lambda d: scipy.io.savemat(d / "w.mat", dict(connectivity=np.eye(3) + 1,
                                                  name=np.array([np.array([]), "b", "c"], dtype=object))),
     dict(lengths="w.mat"), "region label '' is empty"),
])
def test_bad_matrix_files(tmp_path, write, kwargs, needle):
    write(tmp_path)
    (tmp_path / "two.txt").write_text("a\nb\n")
    (tmp_path / "fractions.txt").write_text("1.5\n2.5\n3.5\n")
    src = next(p for p in tmp_path.iterdir() if p.name.startswith("w."))
    kwargs = {k: tmp_path / v for k, v in kwargs.items()}
    with pytest.raises(DataError) as err:
        load_connectome(src, **kwargs)
    assert needle in str(err.value)


@pytest.mark.parametrize("which", ["path", "lengths", "labels", "sizes"])
def test_an_empty_file_name_is_refused(tmp_path, which):
    np.save(tmp_path / "w.npy", _full()[0])
    kwargs = {"path": tmp_path / "w.npy", "lengths": tmp_path / "w.npy", which: ""}
    with pytest.raises(DataError, match=f"the {'connectome' if which == 'path' else which} path is empty"):
        load_connectome(kwargs.pop("path"), **kwargs)


def test_hdf5_without_waytotal(tmp_path):
    path = write_connectome(tmp_path / "c.h5", waytotal=None)
    con, _ = _load(path, "s1")
    assert con.waytotal is None and np.allclose(con.long_range_probabilities("row").sum(axis=1), 1)
    with pytest.raises(DataError, match="needs the regions' waytotal"):
        con.long_range_probabilities("waytotal")


def test_import_writes_what_loads_the_same(tmp_path, capsys):
    out = tmp_path / "brain.h5"
    assert main(["connectome", "import", str(TVB / "connectivity_76.zip"), "-o", str(out), "--subject", "tvb76"]) == 0
    assert "dtb run --set wholebrain.connectome=" in capsys.readouterr().out
    a, _ = _load(TVB / "connectivity_76.zip")
    b, warned = _load(out, "tvb76")
    assert a.labels == b.labels and b.subject == "tvb76"
    for key in ("sc", "len_mm", "nvoxel"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert any("local input only" in w for w in warned)
    with h5py.File(out) as f:
        assert f["subjects/tvb76/sc"].attrs["rows"] == "targets" and "size" in f["subjects/tvb76"]
    for o, needle in ((out, "exists (use --overwrite"), (tmp_path / "brain.csv", "is an HDF5 file: name it *.h5")):
        assert main(["connectome", "import", str(TVB / "connectivity_76.zip"), "-o", str(o)]) == 2
        err = capsys.readouterr().err  # refused before the connectome is read: no warning of its regions first
        assert err.count("\n") == 1 and needle in err, err
    assert main(["connectome", "show", str(out), "--subject", "tvb76", "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["n_regions"] == 76 and q["without_input"] == ["rCC", "lCC"] and not q["symmetric"]
    assert q["delay_ms_min"] == pytest.approx(q["len_mm_min"] / 5.0)


def test_import_while_another_writes_the_same_file_is_refused(tmp_path, capsys):
    """Two imports to one file share its temporary file: the second is refused while the first holds the lock,
    and what was there before stays as it was."""
    from dtb.io.runfile import RunLock

    out = tmp_path / "brain.h5"
    out.write_bytes(b"old")
    lock = RunLock(out)
    lock.acquire()
    try:
        assert main(["connectome", "import", str(TVB / "connectivity_76.zip"), "-o", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the importer's warnings
        assert "is being written by pid" in err and "one writer at a time" in err
        assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["brain.h5", "brain.h5.lock"]
    finally:
        lock.release()
    assert main(["connectome", "import", str(TVB / "connectivity_76.zip"), "-o", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brain.h5"]


def test_a_matrix_connectome_runs_with_one_command_and_one_line_warnings(tmp_path):
    sc, ln = _full(5)
    np.savetxt(tmp_path / "sc.csv", np.triu(sc), delimiter=",")
    np.savetxt(tmp_path / "len.csv", np.triu(ln), delimiter=",")
    (tmp_path / "run.toml").write_text('[wholebrain]\nconnectome = "sc.csv"\nlengths_file = "len.csv"\n'
                                       'n_neurons = 1000\nin_degree = 20\n[simulation]\nt_ms = 20.0\n')
    res = subprocess.run([sys.executable, "-m", "dtb", "run", str(tmp_path / "run.toml"), "--out",
                          str(tmp_path / "r.h5"), "--quiet"], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines() == [f"dtb: warning: {tmp_path / 'sc.csv'}: no region sizes, so every "
                                               "region gets the same number of neurons (give a sizes file: "
                                               "wholebrain.sizes_file)"]
    assert "(subject sc)" in res.stdout
