import warnings

import numpy as np
import pytest

from dtb.assimilation.metrics import fc_similarity, functional_connectivity, pearson_rows, persistence_r, specificity


def test_pearson_rows_matches_corrcoef():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 50)), rng.normal(size=(6, 50))
    b[0] = 3 * a[0] + 1
    b[1] = -a[1]
    r = pearson_rows(a, b)
    assert r.shape == (6,)
    assert np.allclose(r, [np.corrcoef(a[i], b[i])[0, 1] for i in range(6)], atol=1e-12)
    assert r[0] == pytest.approx(1) and r[1] == pytest.approx(-1)


def test_pearson_rows_constant_row_nan_without_warning():
    a = np.array([[0.1] * 7, [1, 2, 3, 4, 5, 6, 7.0]])
    b = np.array([[1, 2, 3, 4, 5, 6, 8.0], [0, 0, 0, 0, 0, 0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_rows(a, b)
        fc = functional_connectivity(np.vstack([a, b]))
    assert np.all(np.isnan(r))
    assert np.isnan(fc[0]).all() and np.isnan(fc[:, 3]).all() and fc[1, 1] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        pearson_rows(a, b[:, :5])


def test_persistence_r():
    t = np.arange(200)
    obs = np.vstack([np.sin(2 * np.pi * t / 40), t % 2])
    r = persistence_r(obs, 10)  # a quarter period: sin vs cos, uncorrelated over whole periods
    assert abs(r[0]) < 0.05
    assert persistence_r(obs, 20)[0] == pytest.approx(-1) and persistence_r(obs, 1)[1] == pytest.approx(-1)
    assert np.allclose(persistence_r(obs, 3), [np.corrcoef(o[:-3], o[3:])[0, 1] for o in obs])
    with pytest.raises(ValueError, match="lag"):
        persistence_r(obs, 0)


def test_functional_connectivity_and_similarity():
    rng = np.random.default_rng(1)
    bold = rng.normal(size=(8, 100)) + rng.normal(size=100)
    fc = functional_connectivity(bold)
    assert np.allclose(fc, np.corrcoef(bold), atol=1e-12) and np.array_equal(fc, fc.T)
    assert np.all(np.diag(fc) == 1.0)
    assert fc_similarity(fc, fc) == pytest.approx(1)
    iu = np.triu_indices(8, 1)
    other = functional_connectivity(rng.normal(size=(8, 100)))
    assert fc_similarity(fc, other) == pytest.approx(np.corrcoef(fc[iu], other[iu])[0, 1])
    # Only the strict upper triangle counts: changing the diagonal or the lower triangle changes nothing.
    tweaked = other.copy()
    tweaked[np.tril_indices(8)] = 5.0
    assert fc_similarity(fc, tweaked) == fc_similarity(fc, other)


def test_specificity():
    rng = np.random.default_rng(2)
    fcs = {s: functional_connectivity(rng.normal(size=(6, 60))) for s in "abc"}
    model = fcs["b"] + 0.01 * rng.normal(size=(6, 6))
    res = specificity(model, fcs, "b")
    assert set(res) == {"own_r", "other_r", "specific"}
    assert set(res["other_r"]) == {"a", "c"} and res["specific"] is True and res["own_r"] > 0.9
    assert specificity(model, fcs, "a")["specific"] is False
    assert specificity(model, {"b": fcs["b"]}, "b")["specific"] is False
    with pytest.raises(ValueError, match="own subject"):
        specificity(model, fcs, "z")


def test_ar1_fit_and_forecast():
    """An AR(1) series gives back its coefficient; the forecast is mu + phi**lag (past - mu), whose r equals
    persistence's (an affine map per row) while its error is smaller."""
    from dtb.assimilation.metrics import ar1_fit, ar1_forecast, mse_rows, pearson_rows

    rng = np.random.default_rng(5)
    n, phi_true, mu_true = 20000, 0.8, 3.0
    y = np.zeros((2, n))
    for t in range(1, n):
        y[:, t] = phi_true * y[:, t - 1] + rng.normal(size=2)
    y += mu_true
    mu, phi = ar1_fit(y)
    np.testing.assert_allclose(phi, phi_true, atol=0.01)
    np.testing.assert_allclose(mu, mu_true, atol=0.1)
    past, target = y[:, :-5], y[:, 5:]
    pred = ar1_forecast(mu, phi, past, 5)
    np.testing.assert_allclose(pred, mu[:, None] + phi[:, None] ** 5 * (past - mu[:, None]))
    np.testing.assert_allclose(pearson_rows(pred, target), pearson_rows(past, target), rtol=1e-12)
    assert (mse_rows(pred, target) < mse_rows(past, target)).all()
    np.testing.assert_array_equal(ar1_fit(np.ones((1, 10)))[1], [0.0])
