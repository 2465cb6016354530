"""Checks of the CUDA kernels on any device (`dtb.kernels.gpu.HostDevice` or `CudaDevice`) against the
CPU kernels, shared by tests/unit/test_cuda_kernels.py (host build) and tests/gpu (a GPU).

``exact``: the host build must give the CPU's numbers (same spikes, states to 1e-13); a GPU's
exp/log differ from glibc's, so there states agree to 1e-9 where the spikes agree, and spike
counts to 1 %.
"""

import h5py
import numpy as np

from conftest import small_pd14, small_wholebrain
from dtb import driver
from dtb.config import load_config
from dtb.context import Context
from dtb.kernels import cpu, rng

POISON = np.uint64(0xFFFFFFFFFFFFFFFF)


def spikes_of(mask: np.ndarray, t0: int, m: int):
    """(lids, steps) of a spike mask in (step, lid) order."""
    bits = (mask[None, :] >> np.arange(m, dtype=np.uint64)[:, None]) & np.uint64(1)
    steps, lids = np.nonzero(bits)
    return lids, steps + t0


def warmed_up(recipe, steps=300):
    """A CPU simulation with realistic state."""
    ctx = Context.serial(threads=1)
    cfg = load_config(overrides=["simulation.seed=3"])
    _, _, _, sim, _ = driver.build(ctx, recipe, cfg, partition=driver.plan(recipe, cfg, 1))
    sim.run(steps)
    return sim


def _compare_epoch(device, exact, t0, m, k, out_lid, out_step, dev_mask, mine, state, keys):
    mask = device.to_host(dev_mask)
    lids, steps = spikes_of(mask, t0, m)
    got = {key: device.to_host(val) for key, val in mine.items()}
    if exact:
        np.testing.assert_array_equal(lids, out_lid[:k])
        np.testing.assert_array_equal(steps, out_step[:k])
        agree = np.ones(len(mask), bool)
        rtol = 1e-13
    else:
        assert abs(len(lids) - k) <= max(1, k // 100)
        cpu_mask = np.zeros(len(mask), np.uint64)
        np.bitwise_or.at(cpu_mask, out_lid[:k], np.uint64(1) << (out_step[:k] - t0).astype(np.uint64))
        agree = cpu_mask == mask
        rtol = 1e-9
    for key in keys:
        np.testing.assert_allclose(got[key][..., agree], state[key][..., agree], rtol=rtol, atol=rtol, err_msg=key)
    np.testing.assert_array_equal(got["ref"][agree], state["ref"][agree])
    if len(mask) > 1000:
        assert k > 10


def check_lif_cond_epoch(device, connectome, n, exact=True):
    xp = device.xp
    sim = warmed_up(small_wholebrain(connectome, "hyper.gamma_alpha=5"))
    net, st = sim.net, sim.state
    n = n or net.n_local
    m, t0 = 17, sim.step
    inbuf = np.random.default_rng(n).exponential(0.3, (m, 2, n)).astype(np.float32)
    state = dict(v=st["v"][:n].copy(), j=np.ascontiguousarray(st["j"][:, :n]), i_bg=st["i_bg"][:n].copy(),
                 ref=st["ref"][:n].copy(), gain=np.ascontiguousarray(st["gain"][:, :n]))
    mine = {key: xp.array(val) for key, val in state.items()}  # copies, on the device
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_lif_cond(t0, m, sim.seed, net.gids[:n], net.pop[:n], net.recipe.params, state["v"], state["j"],
                             state["i_bg"], state["ref"], state["gain"], inbuf, cpu.blocks(n, 1),
                             np.zeros(n, np.uint64), np.empty((2, n), np.uint32), out_lid, out_step)
    dev_mask = xp.full(n, POISON, dtype=xp.uint64)
    zig = [xp.asarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
    device.launch("advance_lif_cond", n, np.int64(t0), np.int32(m), np.uint64(sim.seed), np.int64(n),
                  xp.asarray(net.gids[:n]), xp.asarray(net.pop[:n]), xp.asarray(net.recipe.params), mine["v"],
                  mine["j"], mine["i_bg"], mine["ref"], mine["gain"], xp.asarray(inbuf), *zig, dev_mask)
    _compare_epoch(device, exact, t0, m, k, out_lid, out_step, dev_mask, mine, state, ("v", "j", "i_bg"))


def check_iaf_psc_exp_epoch(device, n, exact=True):
    xp = device.xp
    sim = warmed_up(small_pd14(n_scale=0.05))
    net, st = sim.net, sim.state
    n = n or net.n_local
    m, t0 = 15, sim.step
    inbuf = np.random.default_rng(n).normal(20.0, 80.0, (m, 2, n)).astype(np.float32)
    state = {key: st[key][:n].copy() for key in ("v", "i_ex", "i_in", "ref")}
    mine = {key: xp.array(val) for key, val in state.items()}  # copies, on the device
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_iaf_psc_exp(t0, m, sim.seed, net.gids[:n], net.pop[:n], net.recipe.params, sim.poisson_cdf,
                                state["v"], state["i_ex"], state["i_in"], state["ref"], inbuf, cpu.blocks(n, 1),
                                np.zeros(n, np.uint64), np.empty(n), out_lid, out_step)
    dev_mask = xp.full(n, POISON, dtype=xp.uint64)
    cdf = np.ascontiguousarray(sim.poisson_cdf)
    device.launch("advance_iaf_psc_exp", n, np.int64(t0), np.int32(m), np.uint64(sim.seed), np.int64(n),
                  xp.asarray(net.gids[:n]), xp.asarray(net.pop[:n]), xp.asarray(net.recipe.params), xp.asarray(cdf),
                  np.int64(cdf.shape[1]), mine["v"], mine["i_ex"], mine["i_in"], mine["ref"], xp.asarray(inbuf),
                  dev_mask)
    _compare_epoch(device, exact, t0, m, k, out_lid, out_step, dev_mask, mine, state, ("v", "i_ex", "i_in"))


def check_delivery(device, connectome, model):
    """float32 weights (PD14) and uint16 weight indices (whole brain): within float32 rounding of the CPU, and the
    same bits for any order of the pending spikes (fixed point)."""
    xp = device.xp
    recipe = small_pd14(n_scale=0.05) if model == "pd14" else small_wholebrain(connectome)
    net = warmed_up(recipe, steps=0).net
    n_spk, e0, m = 400, 40, 24
    r = np.random.default_rng(1)
    gids = np.sort(r.choice(net.slot_gids, n_spk, replace=False))
    # spikes of the previous epoch(s): every row not yet delivered arrives at e0 or later
    steps = (e0 - 1 - r.integers(0, net.recipe.min_delay_steps, n_spk)).astype(np.int64)
    order = np.lexsort((gids, steps))
    pend = np.zeros((3, n_spk), np.int64)
    n_pend = cpu.enqueue(steps[order], gids[order], net.slot_gids, net.slot_row_ptr, 0, pend[0], pend[1], pend[2])
    assert n_pend == n_spk
    queue = pend.copy()  # cpu.deliver compacts the queue in place
    inbuf = np.zeros((m, 2, net.n_local), np.float32)
    left = cpu.deliver(e0, m, n_pend, pend[0], pend[1], pend[2], net.slot_row_ptr, net.row_ptr, net.row_delay,
                       net.post, net.weight, net.weight_table, net.slot_receptor, inbuf)
    assert np.abs(inbuf).sum() > 0
    table = net.weight_table if net.weight_table.size else np.zeros(1, np.float32)
    tables = [xp.asarray(a) for a in (net.slot_row_ptr, net.row_ptr, net.row_delay, net.post, net.weight, table,
                                      net.slot_receptor)]
    results = []
    for perm in (np.arange(n_pend), np.random.default_rng(2).permutation(n_pend)):
        acc = xp.zeros((m, 2, net.n_local), dtype=xp.uint64)
        next_row = xp.full(n_pend, -7, dtype=xp.int64)
        device.launch("deliver_u16" if net.weight.dtype == np.uint16 else "deliver_f32", 32 * n_pend, np.int64(e0),
                      np.int32(m), np.int64(n_pend), *(xp.asarray(np.ascontiguousarray(queue[i, perm]))
                                                       for i in range(3)),
                      *tables, np.int64(net.n_local), acc, next_row)
        got = xp.full(acc.shape, np.nan, dtype=xp.float32)
        device.launch("fixed_to_float", acc.size, np.int64(acc.size), acc, got)
        rows = np.empty(n_pend, np.int64)
        rows[perm] = device.to_host(next_row)
        results.append((device.to_host(acc), rows, device.to_host(got)))
    (acc1, rows1, got), (acc2, rows2, _) = results
    np.testing.assert_array_equal(acc1, acc2)  # the order of adds does not matter
    np.testing.assert_array_equal(rows1, rows2)
    np.testing.assert_allclose(got, inbuf, rtol=1e-6, atol=1e-6 * np.abs(inbuf).max())
    # the spikes with rows left, in order, with the rows they have left
    unfinished = rows1 < net.slot_row_ptr[queue[0] + 1]
    assert unfinished.sum() == left > 0
    np.testing.assert_array_equal(queue[0, unfinished], pend[0, :left])
    np.testing.assert_array_equal(rows1[unfinished], pend[2, :left])


def check_spike_flags_and_counts(device):
    xp = device.xp
    n, m = 1000, 13
    mask = np.random.default_rng(2).integers(0, 2**m, n).astype(np.uint64)
    flags = xp.full((m, n), 7, dtype=xp.uint8)
    device.launch("spike_flags", n, np.int64(n), np.int32(m), xp.asarray(mask), flags)
    steps, lids = (device.to_host(a) for a in xp.nonzero(flags))
    want_lids, want_steps = spikes_of(mask, 0, m)
    np.testing.assert_array_equal(lids, want_lids)
    np.testing.assert_array_equal(steps, want_steps)
    group = np.arange(n, dtype=np.int32) % 5
    counts = xp.zeros((4, 5), dtype=xp.uint32)
    device.launch("count_spikes", len(want_lids), np.int64(len(want_lids)), xp.asarray(want_lids.astype(np.int64)),
                  xp.asarray((want_steps + 8).astype(np.int64)), xp.asarray(group), np.int64(4), np.int64(2),
                  np.int32(5), counts)
    expected = np.zeros((4, 5), np.uint32)
    np.add.at(expected, ((want_steps + 8) // 4 - 2, group[want_lids]), 1)
    np.testing.assert_array_equal(device.to_host(counts), expected)


RUNS = {
    "wholebrain": ["wholebrain.n_neurons=4000", "wholebrain.in_degree=40", "simulation.t_ms=300"],
    "pd14": ["model=pd14", "pd14.n_scale=0.03", "pd14.k_scale=0.2", "simulation.t_ms=300"],
}
COMMON = ["recording.progress=false", "recording.flush_ms=50"]


def run(tmp_path, name, model, backend, *extra, **kw):
    """A small run of ``model`` on ``backend`` (one process); (path, summary)."""
    out = tmp_path / f"{name}.h5"
    summary = driver.run(load_config(overrides=RUNS[model] + COMMON + list(extra)), out,
                         ctx=Context.serial(backend=backend, threads=1), **kw)
    return out, summary


def spikes(path, model):
    with h5py.File(path) as f:
        return f[f"spikes/{model}/timestamps"][()], f[f"spikes/{model}/node_ids"][()]


def check_backend_run(tmp_path, model, backend):
    """Same seed, same spikes run after run; population rates as the CPU backend's (within 10 % or 0.5 Hz)."""
    dev, s_dev = run(tmp_path, "dev", model, backend)
    again, _ = run(tmp_path, "again", model, backend)
    _, s_cpu = run(tmp_path, "cpu", model, "cpu")
    for a, b in zip(spikes(dev, model), spikes(again, model)):
        np.testing.assert_array_equal(a, b)
    assert s_dev["backend"] == backend and s_dev["n_spikes"] > 1000
    assert abs(s_dev["n_spikes"] - s_cpu["n_spikes"]) <= 0.02 * s_cpu["n_spikes"]
    for name, rate in s_cpu["rates_hz"].items():
        assert abs(s_dev["rates_hz"][name] - rate) <= max(0.1 * rate, 0.5), name
    return s_dev, s_cpu
