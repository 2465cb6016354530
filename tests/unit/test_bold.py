import numpy as np
import pytest
from scipy.linalg import expm

from dtb.bold import BOLD_PARAMS, Balloon, BoldParams, bold_params, bold_signal
from dtb.errors import ConfigError

SETS = sorted(BOLD_PARAMS)


def _bold_trace(balloon, u, every):
    """BOLD after every ``every`` bins of ``u`` (n_bins, n); shape (n_bins // every, n)."""
    out = []
    for k in range(0, len(u), every):
        balloon.advance(u[k:k + every])
        out.append(balloon.bold())
    return np.array(out)


def _steady_bold(p: BoldParams, u):
    """Steady-state BOLD from dq/dt = 0 written as q / v = E(f) / E0, independent of Balloon."""
    f = 1.0 + p.eps * np.asarray(u) * p.tau_f_s
    v = f ** p.alpha
    q_over_v = (1.0 - (1.0 - p.e0) ** (1.0 / f)) / p.e0
    return p.v0 * (7 * p.e0 * (1 - q_over_v * v) + 2 * (1 - q_over_v) + (2 * p.e0 - 0.2) * (1 - v))


def _linear_model(p: BoldParams, u0):
    """A (4, 4), B (4,), C (4,) of the model linearised at its fixed point for input u0."""
    f = 1.0 + p.eps * u0 * p.tau_f_s
    v = f ** p.alpha
    log_r = np.log(1.0 - p.e0)
    e_f = 1.0 - np.exp(log_r / f)
    q = v * e_f / p.e0
    ia = 1.0 / p.alpha
    dg_df = (e_f + np.exp(log_r / f) * log_r / f) / p.e0   # d/df of f E(f) / E0
    a = np.array([
        [-1 / p.tau_s_s, -1 / p.tau_f_s, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1 / p.tau_0_s, -ia * v ** (ia - 1) / p.tau_0_s, 0.0],
        [0.0, dg_df / p.tau_0_s, -q * (ia - 1) * v ** (ia - 2) / p.tau_0_s, -v ** (ia - 1) / p.tau_0_s],
    ])
    b = np.array([p.eps, 0.0, 0.0, 0.0])
    c = p.v0 * np.array([0.0, 0.0, 2 * q / v ** 2 - (2 * p.e0 - 0.2), -7 * p.e0 - 2 / v])
    return a, b, c


@pytest.mark.parametrize("name", SETS)
def test_converges_to_steady_state(name):
    p = bold_params(name)
    u = np.array([0.0, 0.002, 0.004, 0.008])
    b = Balloon(len(u), p)
    b.advance(np.tile(u, (90_000, 1)))   # slowest mode (friston2003) decays as exp(-0.33 t / s)
    fixed = Balloon(len(u), p)
    fixed.set_steady_state(u)
    np.testing.assert_allclose(b.state, fixed.state, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.bold(), fixed.bold(), rtol=0, atol=1e-11)
    np.testing.assert_allclose(fixed.bold(), _steady_bold(p, u), rtol=1e-12, atol=1e-15)
    assert abs(fixed.bold()[0]) < 1e-15 and (np.diff(fixed.bold()) > 0).all()


def test_set_steady_state_is_fixed_point():
    b = Balloon(2, bold_params("dtb"))
    b.set_steady_state(np.array([0.001, 0.01]))
    before = b.state.copy()
    b.advance(np.tile([0.001, 0.01], (1000, 1)))
    np.testing.assert_allclose(b.state, before, rtol=1e-13, atol=1e-15)


# Time of the BOLD peak after a 100 ms burst, measured (baseline u0 0.004): dtb 1.60 s,
# friston2003 2.44 s (2.81 s from rest). Both peak earlier than the 3-6 s of a canonical
# HRF; the windows below pin what these equations and parameters give.
@pytest.mark.parametrize("name,lo_s,hi_s", [("dtb", 1.3, 2.0), ("friston2003", 2.1, 2.9)])
def test_impulse_response_peak(name, lo_s, hi_s):
    u0, du = 0.004, 0.05
    b = Balloon(1, bold_params(name))
    b.set_steady_state(np.array([u0]))
    rest = b.bold()[0]
    b.advance(np.full((100, 1), u0 + du))
    resp = _bold_trace(b, np.full((30_000, 1), u0), every=10)[:, 0] - rest
    t_s = 0.01 * np.arange(1, len(resp) + 1)
    k = np.argmax(resp)
    assert lo_s <= t_s[k] <= hi_s
    assert resp[k] > 0 and resp.min() < 0          # post-stimulus undershoot
    assert abs(resp[-1]) < 1e-3 * resp[k]          # back to baseline after 30 s


# The haemodynamic response function: a brief small burst from rest (linear regime), peak time
# from the burst's onset. Friston 2003's set peaks at 3.1 s; the DTB's published set is faster
# (2.0 s), a property of its tau_f = 0.4 s; the README says so.
@pytest.mark.parametrize("name,lo_s,hi_s", [("friston2003", 3.0, 6.0), ("dtb", 1.8, 2.3)])
def test_linear_impulse_response_peak_from_rest(name, lo_s, hi_s):
    b = Balloon(1, bold_params(name))
    b.advance(np.full((10, 1), 1e-4))
    resp = np.concatenate([[0.0], _bold_trace(b, np.zeros((20_000, 1)), every=10)[:, 0]])
    t_s = 0.01 + 0.01 * np.arange(len(resp))
    assert lo_s <= t_s[np.argmax(resp)] <= hi_s


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("u0", [0.001, 0.004])
def test_small_perturbation_matches_linearisation(name, u0):
    p = bold_params(name)
    dt_s, n_bins = 1e-3, 20_000
    t_s = dt_s * np.arange(n_bins)
    du = 1e-5 * ((t_s < 0.1) + 0.5 * np.sin(2 * np.pi * 0.3 * t_s) * (t_s > 2))
    b = Balloon(1, p)
    b.set_steady_state(np.array([u0]))
    rest = b.bold()[0]
    resp = _bold_trace(b, u0 + du[:, None], every=1)[:, 0] - rest

    a, bvec, c = _linear_model(p, u0)
    # exact discretisation for input held over each bin: expm of the augmented [[A, B], [0, 0]]
    m = np.zeros((5, 5))
    m[:4, :4], m[:4, 4] = a, bvec
    e = expm(m * dt_s)
    ad, bd = e[:4, :4], e[:4, 4]
    x = np.zeros(4)
    lin = np.empty(n_bins)
    for k in range(n_bins):
        x = ad @ x + bd * du[k]
        lin[k] = c @ x
    # measured 1.4e-4 to 4.9e-4, proportional to du: the model's own nonlinearity, not integration error
    assert np.abs(resp - lin).max() < 1e-3 * np.abs(lin).max()


@pytest.mark.parametrize("name", SETS)
def test_rk4_1ms_bins_match_fine_steps(name):
    p = bold_params(name)
    rng = np.random.default_rng(1)
    u = rng.uniform(0.0, 0.02, size=(8000, 2))   # 8 s of noisy 1 ms bins
    coarse, fine = Balloon(2, p), Balloon(2, p)
    y1 = _bold_trace(coarse, u, every=100)
    fine_trace = []
    for k in range(0, len(u), 100):
        fine.advance(np.repeat(u[k:k + 100], 20, axis=0), dt_ms=0.05)
        fine_trace.append(fine.bold())
    y2 = np.array(fine_trace)
    assert np.abs(y1 - y2).max() < 1e-4 * np.abs(y2).max()
    np.testing.assert_allclose(coarse.state, fine.state, rtol=1e-4)


def test_unknown_params_name():
    with pytest.raises(ConfigError, match="dtb.*friston2003"):
        bold_params("nope")


def test_regions_are_independent():
    p = bold_params("dtb")
    rng = np.random.default_rng(2)
    u = rng.uniform(0.0, 0.01, size=(3000, 5))
    together = Balloon(5, p)
    together.advance(u)
    for i in range(5):
        alone = Balloon(1, p)
        alone.advance(u[:, i:i + 1])
        np.testing.assert_array_equal(alone.state[:, 0], together.state[:, i])
    f32 = Balloon(5, p)
    f32.advance(u.astype(np.float32))
    np.testing.assert_allclose(f32.state, together.state, rtol=1e-5)


def test_bad_inputs_raise():
    b = Balloon(3, bold_params("dtb"))
    good = np.zeros((10, 3))
    for bad in (np.zeros((10, 2)), np.zeros(3), np.zeros((10, 3), dtype=np.int64)):
        with pytest.raises(ValueError):
            b.advance(bad)
    for poison in (np.nan, np.inf, -0.1):
        u = good.copy()
        u[4, 1] = poison
        with pytest.raises(ValueError):
            b.advance(u)
    for dt_ms in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError):
            b.advance(good, dt_ms=dt_ms)
    with pytest.raises(ValueError):
        b.set_steady_state(np.zeros(2))
    with pytest.raises(ValueError):
        b.set_steady_state(np.array([0.0, -1.0, 0.0]))      # f = 1 - 80 <= 0
    with pytest.raises(ValueError):
        bold_signal(np.ones((3, 3)), b.params)
    np.testing.assert_array_equal(b.state, Balloon(3, b.params).state)  # nothing was applied


def test_external_state_with_nonpositive_v_f_recovers():
    p = bold_params("dtb")
    b = Balloon(2, p)
    b.state[1:3] = [[-0.5, 0.0], [0.0, -0.2]]   # as after a Kalman update gone wrong
    assert np.isfinite(b.bold()).all()
    b.advance(np.zeros((60_000, 2)))
    assert np.isfinite(b.state).all()
    np.testing.assert_allclose(b.state, Balloon(2, p).state, atol=1e-6)


def test_bold_signal_takes_any_trailing_shape():
    p = bold_params("friston2003")
    b = Balloon(6, p)
    b.set_steady_state(np.linspace(0, 0.01, 6))
    np.testing.assert_array_equal(bold_signal(b.state.reshape(4, 2, 3), p), b.bold().reshape(2, 3))
    assert b.bold().dtype == np.float64 and b.bold().shape == (6,)
