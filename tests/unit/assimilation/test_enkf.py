import numpy as np
import pytest

from dtb.assimilation.enkf import enkf_update, from_logit, to_logit


def test_logit_round_trip_and_bounds():
    lo, hi = np.array([0.0, -2.0, 10.0]), np.array([1.0, 3.0, 10.5])
    theta = np.array([[0.3, 2.9, 10.01], [0.999, -1.9, 10.25]])
    assert np.allclose(from_logit(to_logit(theta, lo, hi), lo, hi), theta, rtol=0, atol=1e-12)
    x = np.linspace(-40, 40, 81)
    th = from_logit(x, 1.0, 2.0)
    assert np.all((th >= 1.0) & (th <= 2.0)) and np.all(np.diff(th) >= 0)
    at_bounds = to_logit(np.array([0.0, 1.0, -5.0, 5.0]), 0.0, 1.0)
    assert np.all(np.isfinite(at_bounds)) and np.all(np.abs(at_bounds) < 30)
    assert at_bounds[0] < 0 < at_bounds[1]
    with pytest.raises(ValueError, match="hi > lo"):
        to_logit(0.5, 1.0, 1.0)


def _prior(rng, n_ens, n_reg, n_dim):
    mix = rng.normal(size=(n_reg, n_dim, n_dim))
    return np.einsum("rij,erj->eri", mix, rng.normal(size=(n_ens, n_reg, n_dim))) + rng.normal(size=(n_reg, n_dim))


def _reference_local(states, y, obs_var):
    out = states.copy()
    for r in range(states.shape[1]):
        c = np.cov(states[:, r, :].T)
        out[:, r, :] += np.outer(y[:, r] - states[:, r, -1], c[:, -1] / (c[-1, -1] + obs_var))
    return out


def _reference_global(states, y, obs_var):
    n_ens, n_reg, n_dim = states.shape
    z = states.reshape(n_ens, -1)
    c = np.cov(z.T)
    obs_idx = np.arange(n_reg) * n_dim + n_dim - 1
    gain = c[:, obs_idx] @ np.linalg.inv(c[np.ix_(obs_idx, obs_idx)] + obs_var * np.eye(n_reg))
    return (z + (y - z[:, obs_idx]) @ gain.T).reshape(states.shape)


@pytest.mark.parametrize("n_reg", [3, 40])  # 40 > E: C_hh is rank-deficient
def test_local_global_and_mix_match_reference(n_reg):
    rng = np.random.default_rng(1)
    states = _prior(rng, 16, n_reg, 3)
    obs, noise, obs_var = rng.normal(size=n_reg), rng.normal(size=(16, n_reg)), 0.3
    y = obs + np.sqrt(obs_var) * noise
    copy = states.copy()
    local = enkf_update(states, obs, obs_var, noise, local_weight=1.0)
    glob = enkf_update(states, obs, obs_var, noise, local_weight=0.0)
    assert np.array_equal(states, copy)
    assert np.allclose(local, _reference_local(states, y, obs_var), atol=1e-10)
    assert np.allclose(glob, _reference_global(states, y, obs_var), atol=1e-8)
    mixed = enkf_update(states, obs, obs_var, noise, local_weight=0.3)
    assert np.allclose(mixed, 0.3 * local + 0.7 * glob, atol=1e-12)
    assert np.allclose(enkf_update(states, obs, obs_var, noise), 0.5 * (local + glob), atol=1e-12)


def test_local_matches_analytic_kalman_posterior():
    # Scalar linear-Gaussian problem: state (p, h) with h = 2 p + 1, p ~ N(m, s^2),
    # y = h + N(0, obs_var): posterior p has mean/variance from the scalar Kalman filter.
    rng = np.random.default_rng(2)
    n_ens, m, s, obs_var, y = 20000, 1.0, 0.5, 0.4, 4.0
    p = m + s * rng.normal(size=n_ens)
    states = np.stack([p, 2 * p + 1], axis=-1)[:, None, :]
    post = enkf_update(states, np.array([y]), obs_var, rng.normal(size=(n_ens, 1)), local_weight=1.0)
    var_h = 4 * s**2
    gain = 2 * s**2 / (var_h + obs_var)
    mean_exp, var_exp = m + gain * (y - (2 * m + 1)), s**2 - gain * 2 * s**2
    pp = post[:, 0, 0]
    assert abs(pp.mean() - mean_exp) < 4 * np.sqrt(var_exp / n_ens)
    assert abs(pp.var(ddof=1) / var_exp - 1) < 4 * np.sqrt(2 / n_ens)


def test_global_equals_local_for_one_region():
    rng = np.random.default_rng(3)
    states = _prior(rng, 12, 1, 4)
    obs, noise = rng.normal(size=1), rng.normal(size=(12, 1))
    local = enkf_update(states, obs, 0.2, noise, local_weight=1.0)
    assert np.allclose(enkf_update(states, obs, 0.2, noise, local_weight=0.0), local, atol=1e-12)
    assert np.allclose(enkf_update(states, obs, 0.2, noise, local_weight=0.5), local, atol=1e-12)


def test_tiny_obs_var_pins_observed_component():
    rng = np.random.default_rng(4)
    states = _prior(rng, 20, 5, 3)  # R < E - 1: C_hh has full rank, so the global analysis pins too
    obs, noise, obs_var = rng.normal(size=5), rng.normal(size=(20, 5)), 1e-12
    y = obs + np.sqrt(obs_var) * noise
    for w in (1.0, 0.0, 0.5):
        post = enkf_update(states, obs, obs_var, noise, local_weight=w)
        assert np.allclose(post[:, :, -1], y, atol=1e-6)


def test_inflation():
    rng = np.random.default_rng(5)
    states = _prior(rng, 10, 4, 3)
    obs, noise = rng.normal(size=4), rng.normal(size=(10, 4))
    mean = states.mean(axis=0)
    # An uninformative observation (zero noise: perturbations of sd 1e6 would not be) leaves the
    # prior: unchanged for inflation 1, with anomalies scaled by the factor (mean kept) otherwise.
    zero = np.zeros_like(noise)
    assert np.allclose(enkf_update(states, obs, 1e12, zero), states, atol=1e-9)
    inflated = enkf_update(states, obs, 1e12, zero, inflation=1.5)
    assert np.allclose(inflated, mean + 1.5 * (states - mean), atol=1e-9)
    # An informative one: inflating the prior is the same as updating the inflated prior.
    assert np.allclose(enkf_update(states, obs, 0.1, noise, inflation=1.5),
                       enkf_update(mean + 1.5 * (states - mean), obs, 0.1, noise), atol=1e-12)
    # ... and with zero-mean perturbations it pulls the mean closer to the observation (a larger gain).
    centred = noise - noise.mean(axis=0)
    d1 = np.abs(enkf_update(states, obs, 0.1, centred, local_weight=1.0)[:, :, -1].mean(0) - obs)
    d2 = np.abs(enkf_update(states, obs, 0.1, centred, local_weight=1.0, inflation=2.0)[:, :, -1].mean(0) - obs)
    assert np.all(d2 < d1)


def test_inflation_per_state_variable():
    rng = np.random.default_rng(7)
    states = _prior(rng, 10, 4, 3)
    obs, noise = rng.normal(size=4), rng.normal(size=(10, 4))
    mean = states.mean(axis=0)
    factors = np.array([1.0, 1.3, 2.0])
    # uninformative observation: each variable's anomalies scaled by its own factor, the first not at all
    zero = np.zeros_like(noise)
    inflated = enkf_update(states, obs, 1e12, zero, inflation=factors)
    assert np.allclose(inflated, mean + factors * (states - mean), atol=1e-9)
    assert np.allclose(inflated[:, :, 0], states[:, :, 0], atol=1e-9)
    # informative: the same as updating the prior inflated per variable, for both analyses
    for w in (1.0, 0.0, 0.5):
        assert np.allclose(enkf_update(states, obs, 0.1, noise, local_weight=w, inflation=factors),
                           enkf_update(mean + factors * (states - mean), obs, 0.1, noise, local_weight=w),
                           atol=1e-12)
    # equal factors are the scalar inflation
    assert np.allclose(enkf_update(states, obs, 0.1, noise, inflation=np.full(3, 1.5)),
                       enkf_update(states, obs, 0.1, noise, inflation=1.5), atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(states=np.zeros((4, 3))), "shape"),
    (dict(states=np.zeros((1, 3, 2)), noise=np.zeros((1, 3))), "at least 2"),
    (dict(obs=np.zeros(4)), "obs must have shape"),
    (dict(noise=np.zeros((4, 4))), "noise must have shape"),
    (dict(obs_var=0.0), "obs_var"),
    (dict(local_weight=1.5), "local_weight"),
    (dict(inflation=0.9), "inflation"),
    (dict(inflation=np.array([1.0, 0.9])), "inflation"),
    (dict(inflation=np.ones(3)), "inflation must be a scalar or have shape"),
    (dict(obs=np.array([0.0, np.nan, 0.0])), "NaN"),
])
def test_validation(kwargs, match):
    args = dict(states=np.random.default_rng(0).normal(size=(4, 3, 2)), obs=np.zeros(3), obs_var=1.0,
                noise=np.zeros((4, 3)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        enkf_update(**args)


def test_parameter_estimation_converges():
    # Hidden parameter p per region seen only through h = a p + b + noise; state (logit p, h).
    rng = np.random.default_rng(6)
    n_ens, n_reg, a, b, sd_obs, lo, hi = 32, 5, 2.0, 0.5, 0.05, 0.0, 4.0
    p_true = np.array([0.7, 1.5, 2.2, 3.1, 1.0])
    x = rng.normal(0.0, 1.5, size=(n_ens, n_reg))        # wide prior over (lo, hi)
    for _ in range(30):
        x = x + 0.05 * rng.normal(size=x.shape)            # random walk keeps the ensemble alive
        h = a * from_logit(x, lo, hi) + b
        states = np.stack([x, h], axis=-1)
        obs = a * p_true + b + sd_obs * rng.normal(size=n_reg)
        x = enkf_update(states, obs, sd_obs**2, rng.normal(size=(n_ens, n_reg)))[:, :, 0]
    p = from_logit(x, lo, hi)
    err, spread = np.abs(p.mean(axis=0) - p_true), p.std(axis=0, ddof=1)
    assert np.all(err < 3 * spread + 1e-3), (err, spread)
    assert np.all(err < 0.1)
