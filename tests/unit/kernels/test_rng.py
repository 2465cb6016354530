import math

import numba as nb
import numpy as np
import pytest

from dtb.kernels import rng


@nb.njit
def _philox(c, k):
    return rng.philox(np.uint64(c[0]), np.uint64(c[1]), np.uint64(c[2]), np.uint64(c[3]), np.uint64(k[0]),
                      np.uint64(k[1]))


@pytest.mark.parametrize("ctr,key,expect", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(ctr, key, expect):
    """Random123's known-answer vectors for Philox4x32-10."""
    assert tuple(int(x) for x in _philox(np.array(ctr), np.array(key))) == expect


def test_streams_differ_by_seed_purpose_gid_index():
    gids = np.arange(1000)
    base = rng.random_words(1, rng.NOISE, 0, gids, 5)
    for other in (rng.random_words(2, rng.NOISE, 0, gids, 5), rng.random_words(1, rng.INIT, 0, gids, 5),
                  rng.random_words(1, rng.NOISE, 1, gids, 5), rng.random_words(1, rng.NOISE, 0, gids, 6)):
        assert np.mean(base == other) < 0.01
    assert np.unique(base[:, 0]).size > 990


@nb.njit
def _sample(kind, n, p, count, seed):
    k0, k1 = rng.key(seed, rng.SPLIT, 0)
    out = np.empty(count, np.int64)
    for i in range(count):
        w0, w1, _, _ = rng.draw(k0, k1, i, 0)
        u = rng.u01_53(w0, w1)
        out[i] = rng.binomial(n, p, u) if kind == 0 else rng.poisson(p, u)
    return out


def _chi2_ok(samples, pmf, support):
    """Pearson chi-square over bins with expected count >= 5; generous bound (fixed seed)."""
    obs = np.array([(samples == k).sum() for k in support], dtype=float)
    exp = pmf * len(samples)
    keep = exp >= 5
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = keep.sum() - 1
    return stat < dof + 6 * math.sqrt(2 * dof)


@pytest.mark.parametrize("n,p", [(10, 0.3), (1000, 0.5), (200000, 0.001), (7, 0.99)])
def test_binomial_matches_pmf(n, p):
    s = _sample(0, n, p, 100_000, 3)
    lo, hi = int(s.min()), int(s.max())
    ks = np.arange(lo, hi + 1)
    logpmf = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
                       + (n - k) * math.log1p(-p) for k in ks])
    assert _chi2_ok(s, np.exp(logpmf), ks)
    assert abs(s.mean() - n * p) < 5 * math.sqrt(n * p * (1 - p) / len(s)) + 1e-9


@pytest.mark.parametrize("lam", [0.05, 1.6, 30.0, 2000.0])
def test_poisson_matches_pmf(lam):
    s = _sample(1, 0, lam, 100_000, 4)
    ks = np.arange(int(s.min()), int(s.max()) + 1)
    pmf = np.exp(ks * math.log(lam) - lam - np.array([math.lgamma(k + 1) for k in ks]))
    assert _chi2_ok(s, pmf, ks)


def test_binomial_edges():
    assert _sample(0, 0, 0.5, 10, 1).sum() == 0
    assert (_sample(0, 5, 1.0, 10, 1) == 5).all()
    assert (_sample(0, 5, 0.0, 10, 1) == 0).all()


def test_ziggurat_normal_distribution():
    """The per-step noise normals: moments, Kolmogorov-Smirnov distance, both tails beyond the base strip."""
    z = rng.normals(3, rng.NOISE, np.arange(1_000_000), 5)
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005
    assert abs(np.mean(z**3)) < 0.02 and abs(np.mean(z**4) - 3) < 0.05
    xs = np.sort(z)
    cdf = 0.5 * (1 + np.array([math.erf(x / math.sqrt(2)) for x in xs[::50]]))
    ks = np.abs(cdf - (np.arange(len(xs))[::50] + 1) / len(xs)).max()
    assert ks < 1.63 / math.sqrt(len(xs))  # 1 % critical value
    for cut in (2.0, 3.4426, 4.0):
        expect = math.erfc(cut / math.sqrt(2)) / 2
        for side in (z > cut, z < -cut):
            assert abs(side.mean() - expect) < 5 * math.sqrt(expect / len(z))


@pytest.mark.slow
def test_ziggurat_tails_are_exact_in_1e8_draws():
    """Beyond 2, 3 and the ziggurat's r = 3.44 (where a rejected tail sample must retry inside the tail,
    Marsaglia & Tsang 2000), each side's count is within 3 standard errors of the normal's."""
    n, chunk = 100_000_000, 10_000_000
    cuts = (2.0, 3.0, 3.442619855899, 4.0)
    above, below = np.zeros(len(cuts)), np.zeros(len(cuts))
    for start in range(0, n, chunk):
        z = rng.normals(11, rng.NOISE, np.arange(start, start + chunk), 3)
        above += [np.count_nonzero(z > c) for c in cuts]
        below += [np.count_nonzero(z < -c) for c in cuts]
    for c, hi, lo in zip(cuts, above, below):
        p = math.erfc(c / math.sqrt(2)) / 2
        se = math.sqrt(n * p * (1 - p))
        assert abs(hi - n * p) < 3 * se and abs(lo - n * p) < 3 * se, (c, hi, lo, n * p, se)


def test_ziggurat_is_a_function_of_its_key():
    a = rng.normals(3, rng.NOISE, np.arange(1000), 5)
    np.testing.assert_array_equal(a, rng.normals(3, rng.NOISE, np.arange(1000), 5))
    assert np.mean(a == rng.normals(3, rng.NOISE, np.arange(1000), 6)) < 0.01


@pytest.mark.parametrize("shape", [0.5, 1.0, 5.0, 50.0])
def test_gamma_distribution(shape):
    from scipy import stats

    g = rng.gammas(3, rng.GAMMA, 0, np.arange(100_000), shape)
    assert abs(g.mean() - 1.0) < 5 * np.sqrt(1 / shape / len(g))
    assert stats.kstest(g, stats.gamma(shape, scale=1 / shape).cdf).pvalue > 1e-3


def test_gamma_depends_only_on_key_and_gid():
    gids = np.array([7, 3, 1_000_000_000_000, 42])
    whole = rng.gammas(9, rng.GAMMA, 2, gids, 5.0)
    one_by_one = [rng.gammas(9, rng.GAMMA, 2, gids[i : i + 1], 5.0)[0] for i in range(4)]
    assert np.array_equal(whole, one_by_one)
    assert not np.array_equal(whole, rng.gammas(9, rng.GAMMA, 3, gids, 5.0))
    with pytest.raises(ValueError):
        rng.gammas(9, rng.GAMMA, 2, gids, 0.0)
