import numpy as np
import pytest

from helpers import write_connectome
from dtb.connectome.connectome import bundled_connectome_path, list_subjects, load_connectome
from dtb.errors import DataError


def test_bundled():
    con = load_connectome()
    assert con.n_regions == 94
    assert con.sc.shape == (94, 94) and con.len_mm.shape == (94, 94)
    assert con.labels[0] == "Precentral_L"
    assert list_subjects(bundled_connectome_path()) == ["101309", "102311", "102816", "131217", "211619"]
    p = con.long_range_probabilities("row")
    assert np.allclose(p.sum(axis=1), 1) and np.all(np.diag(p) == 0)
    q = con.long_range_probabilities("waytotal")
    assert np.allclose(q.sum(axis=1), 1) and not np.allclose(p, q)


def test_user_file(tmp_path):
    con = load_connectome(write_connectome(tmp_path / "c.h5"), "s1")
    assert con.n_regions == 4 and con.subject == "s1"


def _sc(mutate):
    sc = np.full((4, 4), 5.0)
    np.fill_diagonal(sc, 0)
    mutate(sc)
    return sc


@pytest.mark.parametrize("changes,needle", [
    (dict(sc=None), "missing dataset '/subjects/s1/sc'"),
    (dict(len_mm=None), "missing dataset '/subjects/s1/len_mm'"),
    (dict(sc=np.ones((3, 3))), "sc has shape (3, 3), expected (4, 4)"),
    (dict(nvoxel=np.full(5, 100)), "nvoxel has shape (5,)"),
    (dict(sc=_sc(lambda a: a.__setitem__((0, 1), np.nan))), "sc contains NaN"),
    (dict(len_mm=np.full((4, 4), -1.0)), "len_mm has negative values"),
    (dict(nvoxel=np.array([100, 0, 100, 100])), "region 'R1' is empty"),
    (dict(nvoxel=np.array([1, 1e13, 100, 100])), "span a ratio over 1e"),
    (dict(nvoxel=np.array([100, -3, 100, 100])), "nvoxel has negative values"),
    (dict(sc=None, len_mm=None, nvoxel=None), "missing datasets '/subjects/s1/sc', '/subjects/s1/len_mm', "
                                              "'/subjects/s1/nvoxel (or size)'"),
    (dict(len_mm=np.zeros((4, 4))), "len_mm is 0 where sc > 0"),
])
def test_bad_connectomes(tmp_path, changes, needle):
    path = write_connectome(tmp_path / "c.h5", **changes)
    with pytest.raises(DataError) as err:
        load_connectome(path, "s1")
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_connectome(tmp_path / "nope.h5", "s1")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        load_connectome(junk, "s1")
    with pytest.raises(DataError, match="subject 'zzz' not in file \\(has: s1\\)"):
        load_connectome(write_connectome(tmp_path / "c.h5"), "zzz")
    with pytest.raises(DataError, match="subject '1' not in file"):
        load_connectome(None, "1")


def test_the_size_a_too_small_brain_is_told_to_use_always_works():
    """The refusal names a size from which on every size gives each region E and I neurons (rounding lets some
    smaller ones work too, so it is no minimum, and the message does not call it one)."""
    import re

    from dtb.connectome.wholebrain import region_sizes, wholebrain_recipe
    from dtb.errors import ConfigError

    con = load_connectome(None)
    with pytest.raises(ConfigError, match="or more always works") as err:
        wholebrain_recipe(con, n_neurons=1500)
    need = int(re.search(r"; ([\d,]+) or more", str(err.value)).group(1).replace(",", ""))
    for n in range(need, need + 5000):
        sizes = region_sizes(con.nvoxel.astype(np.float64), n)
        n_e = np.rint(sizes * 0.8)
        assert n_e.min() >= 1 and (sizes - n_e).min() >= 1, n
    wholebrain_recipe(con, n_neurons=need)
