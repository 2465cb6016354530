"""The CUDA kernels without a GPU: every .cu file compiles with nvcc, and the kernels' bodies, built
for the host from the same headers, reproduce the numba kernels (random numbers bit for bit, neuron
updates and spikes exactly, delivery to fixed-point rounding, independent of the order of adds).

Skipped where nvcc is missing. tests/gpu runs the same comparisons on a device.
"""

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import small_pd14, small_wholebrain
from dtb import driver
from dtb.config import load_config
from dtb.context import Context
from dtb.kernels import cpu, rng
from dtb.kernels.gpu import KERNELS, SOURCE_DIR
from dtb.model.neurons import IAF_COLUMNS, LIF_COLUMNS

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on this machine")
I64, I32, U64, PTR = ctypes.c_int64, ctypes.c_int, ctypes.c_uint64, ctypes.c_void_p


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_cu_file_compiles(tmp_path, arch):
    for src in sorted(SOURCE_DIR.glob("*.cu")):
        p = subprocess.run([NVCC, f"-arch={arch}", "-std=c++17", "--fmad=false", "-Werror", "all-warnings",
                            f"-I{SOURCE_DIR}", "-c", "-o", str(tmp_path / (src.stem + ".o")), str(src)],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"{src.name}: {p.stderr}"
    ptx = subprocess.run([NVCC, f"-arch={arch}", "-std=c++17", f"-I{SOURCE_DIR}", "--ptx", "-o", "-",
                          str(SOURCE_DIR / "kernels.cu")], capture_output=True, text=True, check=True).stdout
    for name in KERNELS:  # extern "C": the names CuPy looks up
        assert re.search(rf"\.entry {name}\(", ptx), name


def test_parameter_columns_match_the_python_tables():
    text = (SOURCE_DIR / "neurons.cuh").read_text()
    for prefix, columns in (("IAF", IAF_COLUMNS), ("LIF", LIF_COLUMNS)):
        body = re.search(rf"enum {prefix.title()}Column \{{(.*?)\}};", text, re.S).group(1)
        names = [x.strip() for x in body.split(",") if x.strip()]
        assert names == [f"{prefix}_{c.upper()}" for c in columns] + [f"{prefix}_N_COLUMNS"]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """host_check.cu built with nvcc as a shared library."""
    lib = tmp_path_factory.mktemp("cuda") / "libdtb_host.so"
    subprocess.run([NVCC, "-shared", "-Xcompiler", "-fPIC", "-O2", "-std=c++17", f"-I{SOURCE_DIR}", "-o", str(lib),
                    str(SOURCE_DIR / "host_check.cu")], check=True, capture_output=True)
    h = ctypes.CDLL(str(lib))
    h.host_draw.argtypes = [U64, ctypes.c_uint32, ctypes.c_uint32, I64, PTR, U64, PTR]
    h.host_normal.argtypes = [U64, ctypes.c_uint32, I64, PTR, U64, PTR, PTR, PTR, PTR]
    h.host_poisson.argtypes = [I64, PTR, PTR, PTR]
    h.host_iaf_psc_exp.argtypes = [I64, I32, U64, I64, PTR, PTR, PTR, PTR, I64, PTR, PTR, PTR, PTR, PTR, PTR]
    h.host_lif_cond.argtypes = [I64, I32, U64, I64, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR]
    h.host_deliver.argtypes = [I64, I32, I64, PTR, PTR, PTR, PTR, PTR, PTR, PTR, PTR, I32, PTR, PTR, I64, PTR, PTR,
                               I32]
    h.host_fixed_to_float.argtypes = [I64, PTR, PTR]
    return h


def ptr(a: np.ndarray):
    assert a.flags.c_contiguous
    return a.ctypes.data


def test_random_numbers_bit_for_bit(host):
    gids = np.concatenate([np.arange(1000), [2**31 - 1, 2**32 + 5, 2**40 + 3]]).astype(np.int64)
    for seed, purpose, stream, index in ((1, rng.NOISE, 0, 0), (12345, rng.POISSON, 3, 2**33 + 7)):
        out = np.full((len(gids), 4), 0xDEADBEEF, dtype=np.uint32)  # poisoned
        host.host_draw(seed, purpose, stream, len(gids), ptr(gids), index, ptr(out))
        np.testing.assert_array_equal(out, rng.random_words(seed, purpose, stream, gids, index))
    zig = [np.ascontiguousarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
    gids = np.arange(200_000, dtype=np.int64)  # enough for the ziggurat's slow path and its tail
    out = np.full(len(gids), np.nan)
    host.host_normal(7, rng.NOISE, len(gids), ptr(gids), 99, *(ptr(a) for a in zig), ptr(out))
    np.testing.assert_array_equal(out, rng.normals(7, rng.NOISE, gids, 99))
    assert np.abs(out).max() > 3.5  # the tail was taken
    lam = np.repeat([0.0, 0.3, 2.5, 17.0, 250.0, 3000.0], 500)
    u = np.random.default_rng(0).uniform(size=len(lam))
    got = np.full(len(lam), -1, dtype=np.int64)
    host.host_poisson(len(lam), ptr(lam), ptr(u), ptr(got))
    np.testing.assert_array_equal(got, [rng.poisson(a, b) for a, b in zip(lam, u)])


def spikes_of(mask: np.ndarray, t0: int, m: int):
    """(lids, steps) of a spike mask in (step, lid) order."""
    bits = (mask[None, :] >> np.arange(m, dtype=np.uint64)[:, None]) & np.uint64(1)
    steps, lids = np.nonzero(bits)
    return lids, steps + t0


def warmed_up(recipe, seed=3, steps=300):
    """A simulation with realistic state, and random epoch input of the right scale."""
    ctx = Context.serial(threads=1)
    cfg = load_config(overrides=["simulation.seed=3"])
    part = driver.plan(recipe, cfg, 1)
    _, net, _, sim, _ = driver.build(ctx, recipe, cfg, partition=part)
    sim.run(steps)
    return sim


@pytest.mark.parametrize("n", [1, 37, None])
def test_lif_cond_epoch_equals_the_cpu_kernel(host, connectome, n):
    sim = warmed_up(small_wholebrain(connectome, "hyper.gamma_alpha=5"))
    net, st = sim.net, sim.state
    n = n or net.n_local
    m, t0 = 17, sim.step
    gids, pop = np.ascontiguousarray(net.gids[:n]), np.ascontiguousarray(net.pop[:n])
    inbuf = np.random.default_rng(n).exponential(0.3, (m, 2, n)).astype(np.float32)
    state = dict(v=st["v"][:n].copy(), j=np.ascontiguousarray(st["j"][:, :n]), i_bg=st["i_bg"][:n].copy(),
                 ref=st["ref"][:n].copy(), gain=np.ascontiguousarray(st["gain"][:, :n]))
    mine = {k: v.copy() for k, v in state.items()}
    mask = np.zeros(n, np.uint64)
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_lif_cond(t0, m, sim.seed, gids, pop, net.recipe.params, state["v"], state["j"], state["i_bg"],
                             state["ref"], state["gain"], inbuf, cpu.blocks(n, 1), mask, np.empty((2, n), np.uint32),
                             out_lid, out_step)
    host_mask = np.full(n, np.uint64(0xFFFFFFFFFFFFFFFF))  # poisoned
    zig = [np.ascontiguousarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
    params = np.ascontiguousarray(net.recipe.params)
    host.host_lif_cond(t0, m, sim.seed, n, ptr(gids), ptr(pop), ptr(params), ptr(mine["v"]), ptr(mine["j"]),
                       ptr(mine["i_bg"]), ptr(mine["ref"]), ptr(mine["gain"]), ptr(inbuf), *(ptr(a) for a in zig),
                       ptr(host_mask))
    lids, steps = spikes_of(host_mask, t0, m)
    np.testing.assert_array_equal(lids, out_lid[:k])
    np.testing.assert_array_equal(steps, out_step[:k])
    for key in ("v", "j", "i_bg"):
        np.testing.assert_allclose(mine[key], state[key], rtol=1e-13, atol=1e-13, err_msg=key)
    np.testing.assert_array_equal(mine["ref"], state["ref"])
    if n > 1000:
        assert k > 10


@pytest.mark.parametrize("n", [1, 37, None])
def test_iaf_psc_exp_epoch_equals_the_cpu_kernel(host, n):
    sim = warmed_up(small_pd14(n_scale=0.05))
    net, st = sim.net, sim.state
    n = n or net.n_local
    m, t0 = 15, sim.step
    gids, pop = np.ascontiguousarray(net.gids[:n]), np.ascontiguousarray(net.pop[:n])
    inbuf = np.random.default_rng(n).normal(20.0, 80.0, (m, 2, n)).astype(np.float32)
    state = {k: st[k][:n].copy() for k in ("v", "i_ex", "i_in", "ref")}
    mine = {k: v.copy() for k, v in state.items()}
    mask = np.zeros(n, np.uint64)
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_iaf_psc_exp(t0, m, sim.seed, gids, pop, net.recipe.params, sim.poisson_cdf, state["v"],
                                state["i_ex"], state["i_in"], state["ref"], inbuf, cpu.blocks(n, 1), mask,
                                np.empty(n), out_lid, out_step)
    host_mask = np.full(n, np.uint64(0xFFFFFFFFFFFFFFFF))
    params, cdf = np.ascontiguousarray(net.recipe.params), np.ascontiguousarray(sim.poisson_cdf)
    host.host_iaf_psc_exp(t0, m, sim.seed, n, ptr(gids), ptr(pop), ptr(params), ptr(cdf), cdf.shape[1],
                          ptr(mine["v"]), ptr(mine["i_ex"]), ptr(mine["i_in"]), ptr(mine["ref"]), ptr(inbuf),
                          ptr(host_mask))
    lids, steps = spikes_of(host_mask, t0, m)
    np.testing.assert_array_equal(lids, out_lid[:k])
    np.testing.assert_array_equal(steps, out_step[:k])
    for key in ("v", "i_ex", "i_in"):
        np.testing.assert_allclose(mine[key], state[key], rtol=1e-13, atol=1e-12, err_msg=key)
    np.testing.assert_array_equal(mine["ref"], state["ref"])
    if n > 1000:
        assert k > 10


@pytest.mark.parametrize("model", ["pd14", "wholebrain"])
def test_delivery_equals_the_cpu_kernel_in_any_order(host, connectome, model):
    """float32 weights (PD14) and uint16 weight indices (whole brain); lanes 1 and 32 give the same bits."""
    recipe = small_pd14(n_scale=0.05) if model == "pd14" else small_wholebrain(connectome)
    sim = warmed_up(recipe, steps=0)
    net = sim.net
    n_spk = 400
    r = np.random.default_rng(1)
    e0, m = 40, 24
    gids = np.sort(r.choice(net.slot_gids, n_spk, replace=False))
    # spikes of the previous epoch(s): every row not yet delivered arrives at e0 or later
    steps = (e0 - 1 - r.integers(0, net.recipe.min_delay_steps, n_spk)).astype(np.int64)
    order = np.lexsort((gids, steps))
    steps, gids = steps[order], gids[order]
    pend = np.zeros((3, n_spk), np.int64)
    n_pend = cpu.enqueue(steps, gids, net.slot_gids, net.slot_row_ptr, 0, pend[0], pend[1], pend[2])
    assert n_pend == n_spk
    args = [np.array(a) for a in (pend[0], pend[1], pend[2], net.slot_row_ptr, net.row_ptr, net.row_delay,
                                  net.post, net.weight)]  # copies: cpu.deliver compacts the queue in place
    table = np.ascontiguousarray(net.weight_table if net.weight_table.size else np.zeros(1, np.float32))
    inbuf = np.zeros((m, 2, net.n_local), np.float32)
    left = cpu.deliver(e0, m, n_pend, pend[0], pend[1], pend[2], net.slot_row_ptr, net.row_ptr, net.row_delay,
                       net.post, net.weight, net.weight_table, net.slot_receptor, inbuf)
    assert np.abs(inbuf).sum() > 0
    results = []
    for lanes in (1, 32):
        acc = np.zeros((m, 2, net.n_local), np.uint64)
        next_row = np.full(n_pend, -7, np.int64)
        host.host_deliver(e0, m, n_pend, *(ptr(a) for a in args), int(net.weight.dtype == np.uint16), ptr(table),
                          ptr(net.slot_receptor), net.n_local, ptr(acc), ptr(next_row), lanes)
        got = np.full(acc.shape, np.nan, np.float32)
        host.host_fixed_to_float(acc.size, ptr(acc), ptr(got))
        results.append((acc, next_row, got))
    (acc1, rows1, got), (acc32, rows32, _) = results
    np.testing.assert_array_equal(acc1, acc32)  # the order of adds does not matter
    np.testing.assert_array_equal(rows1, rows32)
    np.testing.assert_allclose(got, inbuf, rtol=1e-6, atol=1e-6 * np.abs(inbuf).max())
    # the spikes with rows left, in order, with the rows they have left
    slots = args[0]
    unfinished = rows1 < net.slot_row_ptr[slots + 1]
    assert unfinished.sum() == left > 0
    np.testing.assert_array_equal(slots[unfinished], pend[0, :left])
    np.testing.assert_array_equal(rows1[unfinished], pend[2, :left])
