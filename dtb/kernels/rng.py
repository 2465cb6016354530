"""Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11) in numba.

Every random draw in dtb is a pure function of (seed, purpose, stream, gid, index):

- key   = (seed, purpose | stream << 8)   -- stream is e.g. the projection id
- counter = (gid low 32, gid high 32, index low 32, index high 32)  -- index is the
  time step, or the draw number inside a synapse-generation stream

so any rank can draw any neuron's numbers without talking to anyone, and the same
seed gives the same network and spikes on any number of ranks. The same scheme is
meant to be reproduced bit for bit by the CUDA kernels.

All values are carried in uint64 lanes holding 32-bit words, which keeps numba's
integer promotion rules out of the way.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_INV32 = 1.0 / 4294967296.0
_INV53 = 1.0 / 9007199254740992.0

# Purposes: each kind of draw has its own key so that streams never overlap.
SOURCE = 1      # presynaptic source of a synapse
WEIGHT = 2      # synaptic weight
DELAY = 3       # synaptic delay
SPLIT = 4       # multinomial split of a fixed total number of synapses over targets
INIT = 5        # initial membrane potential / state
NOISE = 6       # per-step OU background noise
POISSON = 7     # per-step Poisson background input
GAMMA = 8       # neuron-level spread of region hyperparameters
ASSIMILATION = 9  # ensemble prior, random walk and observation perturbations of the Kalman filter


@nb.njit(inline="always", cache=True)
def philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of a 128-bit counter under a 64-bit key.

    Parameters
    ----------
    c0, c1, c2, c3, k0, k1 : uint64
        32-bit words (upper halves must be zero).

    Returns
    -------
    tuple of 4 uint64
        Four independent 32-bit random words.
    """
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = ((p1 >> _S32) ^ c1 ^ k0) & _MASK
        n2 = ((p0 >> _S32) ^ c3 ^ k1) & _MASK
        c0, c1, c2, c3 = n0, p1 & _MASK, n2, p0 & _MASK
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return c0, c1, c2, c3


@nb.njit(inline="always", cache=True)
def key(seed, purpose, stream):
    """The Philox key of (seed, purpose, stream) as two uint64 words."""
    return np.uint64(seed) & _MASK, (np.uint64(purpose) | (np.uint64(stream) << np.uint64(8))) & _MASK


@nb.njit(inline="always", cache=True)
def draw(k0, k1, gid, index):
    """Four random 32-bit words for (gid, index) under key (k0, k1)."""
    g = np.uint64(gid)
    i = np.uint64(index)
    return philox(g & _MASK, g >> _S32, i & _MASK, i >> _S32, k0, k1)


@nb.njit(inline="always", cache=True)
def u01(word):
    """Uniform in the open interval (0, 1) from one 32-bit word."""
    return (np.float64(word) + 0.5) * _INV32


@nb.njit(inline="always", cache=True)
def u01_53(hi, lo):
    """Uniform in (0, 1) with 53 random bits from two 32-bit words."""
    return (np.float64((hi << np.uint64(21)) ^ (lo >> np.uint64(11))) + 0.5) * _INV53


@nb.njit(inline="always", cache=True)
def normal_pair(w0, w1, w2, w3):
    """Two independent standard normals (Box-Muller) from four 32-bit words."""
    u = u01_53(w0, w1)
    v = u01_53(w2, w3)
    r = math.sqrt(-2.0 * math.log(u))
    return r * math.cos(2.0 * math.pi * v), r * math.sin(2.0 * math.pi * v)


def _ziggurat_tables():
    """Marsaglia & Tsang's 128-layer ziggurat for the standard normal (J. Stat. Softw. 5(8), 2000)."""
    m1 = 2147483648.0
    dn = 3.442619855899
    tn = dn
    vn = 9.91256303526217e-3
    kn = np.zeros(128, dtype=np.int64)
    wn = np.zeros(128)
    fn = np.zeros(128)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


ZIG_K, ZIG_W, ZIG_F = _ziggurat_tables()
_ZIG_R = 3.442619855899


@nb.njit(inline="always", cache=True)
def normal(seed, purpose, gid, index, w0, w1):
    """One standard normal of draw (seed, purpose, stream 0, gid, index), by ziggurat.

    ``w0``, ``w1`` are the draw's first two words: the value comes from ``w0``
    (signed) and the layer from ``w1`` (independent bits, as Doornik 2005 advises),
    so the caller can draw them in a vectorised loop. About 1 % of draws take the
    slow path, which needs the draw's other two words and then fresh draws keyed
    with stream = attempt number; a rejected tail sample retries inside the tail
    (Marsaglia & Tsang), so the distribution is exact beyond r = 3.44 too.
    """
    attempt = 0
    while True:
        hz = np.int64(w0) - np.int64(2147483648)
        iz = np.int64(w1 & np.uint64(127))
        if abs(hz) < ZIG_K[iz]:
            return hz * ZIG_W[iz]
        x = hz * ZIG_W[iz]
        k0, k1 = key(seed, purpose, attempt)
        _, _, w2, w3 = draw(k0, k1, gid, index)
        if iz == 0:
            # tail beyond r: Marsaglia's exponential rejection, retried inside the tail (restarting the
            # whole draw instead would under-sample the tail by ~7 %); each retry takes fresh words
            while True:
                xt = -math.log(u01(w2)) / _ZIG_R
                yt = -math.log(u01(w3))
                if yt + yt >= xt * xt:
                    return _ZIG_R + xt if hz > 0 else -_ZIG_R - xt
                attempt += 1
                k0, k1 = key(seed, purpose, attempt)
                _, _, w2, w3 = draw(k0, k1, gid, index)
        elif ZIG_F[iz] + u01(w2) * (ZIG_F[iz - 1] - ZIG_F[iz]) < math.exp(-0.5 * x * x):
            return x
        attempt += 1
        k0, k1 = key(seed, purpose, attempt)
        w0, w1, _, _ = draw(k0, k1, gid, index)


@nb.njit(inline="always", cache=True)
def below(word, n):
    """Integer uniform in [0, n) from one 32-bit word (Lemire's multiply-shift; n < 2**32)."""
    return (word * np.uint64(n)) >> _S32


@nb.njit(cache=True)
def poisson(lam, u):
    """Poisson(lam) by inversion with the chop-down search started at the mode.

    Exact up to float64 rounding; expected cost O(1 + sqrt(lam)). ``u`` is a uniform in (0, 1).
    """
    if lam <= 0.0:
        return 0
    m = int(math.floor(lam))
    pm = math.exp(m * math.log(lam) - lam - math.lgamma(m + 1.0))
    u -= pm
    if u <= 0.0:
        return m
    lo = m
    hi = m
    plo = pm
    phi = pm
    while True:
        if lo > 0:
            plo *= lo / lam
            lo -= 1
            u -= plo
            if u <= 0.0:
                return lo
        phi *= lam / (hi + 1)
        hi += 1
        u -= phi
        if u <= 0.0:
            return hi
        if lo == 0 and phi < 1e-300:
            return m


@nb.njit(cache=True)
def binomial(n, p, u):
    """Binomial(n, p) by inversion with the chop-down search started at the mode.

    Exact up to float64 rounding; expected cost O(1 + sqrt(n p (1 - p))).
    ``u`` is a uniform in (0, 1).
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    q = 1.0 - p
    m = int(math.floor((n + 1) * p))
    if m > n:
        m = n
    pm = math.exp(math.lgamma(n + 1.0) - math.lgamma(m + 1.0) - math.lgamma(n - m + 1.0)
                  + m * math.log(p) + (n - m) * math.log(q))
    u -= pm
    if u <= 0.0:
        return m
    lo = m
    hi = m
    plo = pm
    phi = pm
    r = p / q
    while True:
        if lo > 0:
            plo *= lo / ((n - lo + 1) * r)
            lo -= 1
            u -= plo
            if u <= 0.0:
                return lo
        if hi < n:
            phi *= (n - hi) * r / (hi + 1)
            hi += 1
            u -= phi
            if u <= 0.0:
                return hi
        elif lo == 0:
            return m


@nb.njit(cache=True)
def _words(seed, purpose, stream, gids, index, out):
    k0, k1 = key(seed, purpose, stream)
    for i in range(gids.shape[0]):
        w0, w1, w2, w3 = draw(k0, k1, gids[i], index)
        out[i, 0] = w0
        out[i, 1] = w1
        out[i, 2] = w2
        out[i, 3] = w3


def random_words(seed: int, purpose: int, stream: int, gids: np.ndarray, index: int) -> np.ndarray:
    """Philox output for many gids at one index (host helper for tests and set-up).

    Returns
    -------
    ndarray, shape (len(gids), 4), uint64
        32-bit words.
    """
    gids = np.ascontiguousarray(gids, dtype=np.int64)
    out = np.empty((gids.shape[0], 4), dtype=np.uint64)
    _words(seed, purpose, stream, gids, index, out)
    return out


@nb.njit(cache=True)
def _normals(seed, purpose, gids, index, out):
    k0, k1 = key(seed, purpose, 0)
    for i in range(gids.shape[0]):
        w0, w1, _, _ = draw(k0, k1, gids[i], index)
        out[i] = normal(seed, purpose, gids[i], index, w0, w1)


def normals(seed: int, purpose: int, gids: np.ndarray, index: int) -> np.ndarray:
    """The standard normal of (seed, purpose, gid, index) for many gids, by `normal`.

    Returns
    -------
    ndarray, shape (len(gids),), float64
    """
    gids = np.ascontiguousarray(gids, dtype=np.int64)
    out = np.empty(gids.shape[0], dtype=np.float64)
    _normals(seed, purpose, gids, index, out)
    return out


@nb.njit(cache=True)
def _gammas(seed, purpose, stream, gids, shape, out):
    # Marsaglia & Tsang (2000) for shape >= 1; below 1 the boost Gamma(a) = Gamma(a + 1) U^(1/a).
    # Attempt i of a gid uses draw indices 2i (normal) and 2i + 1 (uniform), so every value depends
    # only on (seed, stream, gid).
    k0, k1 = key(seed, purpose, stream)
    a = shape if shape >= 1.0 else shape + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    for n in range(gids.shape[0]):
        i = 0
        while True:
            w0, w1, w2, w3 = draw(k0, k1, gids[n], 2 * i)
            z, _ = normal_pair(w0, w1, w2, w3)
            w0, _, _, _ = draw(k0, k1, gids[n], 2 * i + 1)
            i += 1
            v = 1.0 + c * z
            if v <= 0.0:
                continue
            v = v * v * v
            u = u01(w0)
            if math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
                break
        g = d * v
        if shape < 1.0:
            w0, _, _, _ = draw(k0, k1, gids[n], 2 * i)
            g *= u01(w0) ** (1.0 / shape)
        out[n] = g / shape


def gammas(seed: int, purpose: int, stream: int, gids: np.ndarray, shape: float) -> np.ndarray:
    """Gamma(shape, rate = shape) draws (mean 1, variance 1 / shape), one per gid.

    Parameters
    ----------
    seed, purpose, stream : int
        The key; use one stream per quantity drawn for the same gids.
    gids : ndarray, int64
    shape : float
        Shape alpha > 0.

    Returns
    -------
    ndarray, shape (len(gids),), float64
    """
    if not shape > 0.0:
        raise ValueError(f"gamma shape must be > 0, got {shape}")
    gids = np.ascontiguousarray(gids, dtype=np.int64)
    out = np.empty(gids.shape[0], dtype=np.float64)
    _gammas(seed, purpose, stream, gids, float(shape), out)
    return out
