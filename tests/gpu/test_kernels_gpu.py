"""The CUDA kernels on a device (marker gpu): each against the CPU kernel on the same random input.

Skipped where no GPU is usable. The device's exp/log are not glibc's, so neuron states agree to
rounding and spikes may differ where a neuron sits on its threshold; delivery is exact in fixed
point, so the same input gives the same bits on every launch.
"""

import numpy as np
import pytest

from conftest import small_pd14, small_wholebrain
from dtb import driver
from dtb.config import load_config
from dtb.context import Context
from dtb.kernels import cpu, rng
from dtb.kernels.gpu import gpu_usable, module

usable, why = gpu_usable()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not usable, reason=why)]
THREADS = 256


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def grid(n, per=1):
    return (max(1, -(-n * per // THREADS)),), (THREADS,)


def warmed_up(recipe, steps=300):
    ctx = Context.serial(threads=1)
    cfg = load_config(overrides=["simulation.seed=3"])
    _, net, _, sim, _ = driver.build(ctx, recipe, cfg, partition=driver.plan(recipe, cfg, 1))
    sim.run(steps)
    return sim


def spikes_of(mask, t0, m):
    bits = (mask[None, :] >> np.arange(m, dtype=np.uint64)[:, None]) & np.uint64(1)
    steps, lids = np.nonzero(bits)
    return lids, steps + t0


@pytest.mark.parametrize("n", [1, 37, None])
def test_lif_cond_kernel(cp, connectome, n):
    sim = warmed_up(small_wholebrain(connectome, "hyper.gamma_alpha=5"))
    net, st = sim.net, sim.state
    n = n or net.n_local
    m, t0 = 17, sim.step
    inbuf = np.random.default_rng(n).exponential(0.3, (m, 2, n)).astype(np.float32)
    state = dict(v=st["v"][:n].copy(), j=np.ascontiguousarray(st["j"][:, :n]), i_bg=st["i_bg"][:n].copy(),
                 ref=st["ref"][:n].copy(), gain=np.ascontiguousarray(st["gain"][:, :n]))
    dev = {k: cp.asarray(v) for k, v in state.items()}
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_lif_cond(t0, m, sim.seed, net.gids[:n], net.pop[:n], net.recipe.params, state["v"], state["j"],
                             state["i_bg"], state["ref"], state["gain"], inbuf, cpu.blocks(n, 1), np.zeros(n, np.uint64),
                             np.empty((2, n), np.uint32), out_lid, out_step)
    mask = cp.full(n, 0xFFFFFFFFFFFFFFFF, dtype=cp.uint64)  # poisoned
    zig = [cp.asarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
    module().get_function("advance_lif_cond")(*grid(n), (
        np.int64(t0), np.int32(m), np.uint64(sim.seed), np.int64(n), cp.asarray(net.gids[:n]),
        cp.asarray(net.pop[:n]), cp.asarray(net.recipe.params), dev["v"], dev["j"], dev["i_bg"], dev["ref"],
        dev["gain"], cp.asarray(inbuf), *zig, mask))
    lids, steps = spikes_of(cp.asnumpy(mask), t0, m)
    assert abs(len(lids) - k) <= max(1, k // 100)
    for key in ("v", "j", "i_bg"):
        np.testing.assert_allclose(cp.asnumpy(dev[key]), state[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_iaf_psc_exp_kernel(cp):
    sim = warmed_up(small_pd14(n_scale=0.05))
    net, st = sim.net, sim.state
    n, m, t0 = net.n_local, 15, sim.step
    inbuf = np.random.default_rng(0).normal(20.0, 80.0, (m, 2, n)).astype(np.float32)
    state = {k: st[k][:n].copy() for k in ("v", "i_ex", "i_in", "ref")}
    dev = {k: cp.asarray(v) for k, v in state.items()}
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_iaf_psc_exp(t0, m, sim.seed, net.gids, net.pop, net.recipe.params, sim.poisson_cdf, state["v"],
                                state["i_ex"], state["i_in"], state["ref"], inbuf, cpu.blocks(n, 1),
                                np.zeros(n, np.uint64), np.empty(n), out_lid, out_step)
    mask = cp.full(n, 0xFFFFFFFFFFFFFFFF, dtype=cp.uint64)
    module().get_function("advance_iaf_psc_exp")(*grid(n), (
        np.int64(t0), np.int32(m), np.uint64(sim.seed), np.int64(n), cp.asarray(net.gids), cp.asarray(net.pop),
        cp.asarray(net.recipe.params), cp.asarray(sim.poisson_cdf), np.int64(sim.poisson_cdf.shape[1]), dev["v"],
        dev["i_ex"], dev["i_in"], dev["ref"], cp.asarray(inbuf), mask))
    lids, _ = spikes_of(cp.asnumpy(mask), t0, m)
    assert abs(len(lids) - k) <= max(1, k // 100)
    for key in ("v", "i_ex", "i_in"):
        np.testing.assert_allclose(cp.asnumpy(dev[key]), state[key], rtol=1e-9, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("model", ["pd14", "wholebrain"])
def test_delivery_kernel_is_exact_and_order_free(cp, connectome, model):
    recipe = small_pd14(n_scale=0.05) if model == "pd14" else small_wholebrain(connectome)
    sim = warmed_up(recipe, steps=0)
    net = sim.net
    r = np.random.default_rng(1)
    e0, m, n_spk = 40, 24, 400
    gids = np.sort(r.choice(net.slot_gids, n_spk, replace=False))
    steps = (e0 - 1 - r.integers(0, net.recipe.min_delay_steps, n_spk)).astype(np.int64)
    order = np.lexsort((gids, steps))
    pend = np.zeros((3, n_spk), np.int64)
    n_pend = cpu.enqueue(steps[order], gids[order], net.slot_gids, net.slot_row_ptr, 0, pend[0], pend[1], pend[2])
    table = net.weight_table if net.weight_table.size else np.zeros(1, np.float32)
    dev = [cp.asarray(a) for a in (pend[0], pend[1], pend[2], net.slot_row_ptr, net.row_ptr, net.row_delay,
                                   net.post, net.weight, table, net.slot_receptor)]
    name = "deliver_u16" if net.weight.dtype == np.uint16 else "deliver_f32"
    inbuf = np.zeros((m, 2, net.n_local), np.float32)
    cpu.deliver(e0, m, n_pend, pend[0].copy(), pend[1].copy(), pend[2].copy(), net.slot_row_ptr, net.row_ptr,
                net.row_delay, net.post, net.weight, net.weight_table, net.slot_receptor, inbuf)
    accs = []
    for _ in range(3):
        acc = cp.zeros((m, 2, net.n_local), dtype=cp.uint64)
        next_row = cp.full(n_pend, -7, dtype=cp.int64)
        module().get_function(name)(*grid(n_pend, 32), (np.int64(e0), np.int32(m), np.int64(n_pend), *dev,
                                                        np.int64(net.n_local), acc, next_row))
        accs.append(cp.asnumpy(acc))
    for other in accs[1:]:
        np.testing.assert_array_equal(accs[0], other)
    got = cp.full(acc.shape, np.nan, dtype=cp.float32)
    module().get_function("fixed_to_float")(*grid(acc.size), (np.int64(acc.size), acc, got))
    np.testing.assert_allclose(cp.asnumpy(got), inbuf, rtol=1e-6, atol=1e-6 * np.abs(inbuf).max())


def test_spike_flags_and_counts(cp):
    n, m = 1000, 13
    mask = np.random.default_rng(2).integers(0, 2**m, n).astype(np.uint64)
    flags = cp.full((m, n), 7, dtype=cp.uint8)
    module().get_function("spike_flags")(*grid(n), (np.int64(n), np.int32(m), cp.asarray(mask), flags))
    steps, lids = cp.nonzero(flags)
    want_lids, want_steps = spikes_of(mask, 0, m)
    np.testing.assert_array_equal(cp.asnumpy(lids), want_lids)
    np.testing.assert_array_equal(cp.asnumpy(steps), want_steps)
    group = np.arange(n, dtype=np.int32) % 5
    counts = cp.zeros((4, 5), dtype=cp.uint32)
    module().get_function("count_spikes")(*grid(len(want_lids)), (
        np.int64(len(want_lids)), cp.asarray(want_lids), cp.asarray(want_steps + 8), cp.asarray(group), np.int64(4),
        np.int64(2), np.int32(5), counts))
    expected = np.zeros((4, 5), np.uint32)
    np.add.at(expected, ((want_steps + 8) // 4 - 2, group[want_lids]), 1)
    np.testing.assert_array_equal(cp.asnumpy(counts), expected)
