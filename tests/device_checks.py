"""Checks of the CUDA kernels on any device (`dtb.kernels.gpu.HostDevice` or `CudaDevice`) against the
CPU kernels, shared by tests/unit/test_cuda_kernels.py (host build) and tests/gpu (a GPU).

``exact``: the host build must give the CPU's numbers (same spikes, states to 1e-13); a GPU's
exp/log differ from glibc's, so there states agree to 1e-9 where the spikes agree, and spike
counts to 1 %.
"""

import h5py
import numpy as np

from helpers import simulation, small_pd14, small_wholebrain
from dtb import driver
from dtb.config import load_config
from dtb.context import Context
from dtb.kernels import cpu, rng

def to_fixed(inbuf: np.ndarray) -> np.ndarray:
    """float32 input as the delivery kernel accumulates it (weight x 2**32, int64 bits in uint64)."""
    return np.rint(inbuf.astype(np.float64) * 2.0**32).astype(np.int64).view(np.uint64)


def on_fixed_grid(inbuf: np.ndarray) -> np.ndarray:
    """float32 input that the fixed-point accumulator holds exactly (multiples of 2**-32)."""
    return (to_fixed(inbuf).view(np.int64) / 2.0**32).astype(np.float32)


def warmed_up(recipe, steps=300):
    """A CPU simulation with realistic state (its engine: ``sim.engine``)."""
    sim = simulation(recipe, seed=3)
    if recipe.neuron_model == "lif_cond":
        from dtb.model import hyper

        sim.set_gains(hyper.neuron_gains(np.ones((5, len(recipe.regions))), np.array(
            [p.region for p in recipe.populations])[sim.net.pop], hyper.neuron_spread(3, sim.net.gids, 5.0)))
    sim.run(steps)
    return sim


class Queues:
    """The spike queues of the neuron and delivery kernels (kernels.cuh), on ``device``."""

    def __init__(self, device, cap, rec_cap, t0, parity=0):
        xp = self.xp = device.xp
        self.device, self.cap, self.rec_cap = device, cap, rec_cap
        self.counts = xp.zeros(4, dtype=xp.int64)
        self.pend = xp.full((2, 3, cap), -5, dtype=xp.int64)
        self.rec = xp.full((2, rec_cap), -5, dtype=xp.int64)
        clock = np.full(2, -5, np.int64)
        clock[parity] = t0
        self.clock = xp.asarray(clock)

    def args(self, local, slot_of_lid, slot_row_ptr):
        return (np.int32(local), self.counts, np.int64(self.cap), self.pend, self.xp.asarray(slot_of_lid),
                self.xp.asarray(slot_row_ptr), np.int64(self.rec_cap), self.rec)

    def recorded(self):
        """(lids, steps) recorded, in (step, lid) order."""
        k = int(self.device.to_host(self.counts)[2])
        rec = self.device.to_host(self.rec)[:, :k]
        order = np.lexsort((rec[1], rec[0]))
        return rec[1, order], rec[0, order]

    def pending(self, parity):
        """The (3, n) entries of a pending buffer, sorted."""
        pend = self.device.to_host(self.pend)[parity, :, : int(self.device.to_host(self.counts)[parity])]
        return pend[:, np.lexsort(pend[::-1])]


def _compare_epoch(device, exact, t0, m, k, out_lid, out_step, lids, steps, mine, state, keys):
    n = len(state["ref"])
    got = {key: device.to_host(val) for key, val in mine.items()}
    if exact:
        np.testing.assert_array_equal(lids, out_lid[:k])
        np.testing.assert_array_equal(steps, out_step[:k])
        agree = np.ones(n, bool)
        rtol = 1e-13
    else:
        assert abs(len(lids) - k) <= max(1, k // 100)
        masks = []
        for lid, step in ((out_lid[:k], out_step[:k]), (lids, steps)):
            mask = np.zeros(n, np.uint64)
            np.bitwise_or.at(mask, lid, np.uint64(1) << (step - t0).astype(np.uint64))
            masks.append(mask)
        agree = masks[0] == masks[1]
        rtol = 1e-9
    for key in keys:
        np.testing.assert_allclose(got[key][..., agree], state[key][..., agree], rtol=rtol, atol=rtol, err_msg=key)
    np.testing.assert_array_equal(got["ref"][agree], state["ref"][agree])
    if n > 1000:
        assert k > 10


def _check_queues(device, q, acc, net, n, t0, m, lids, steps):
    """After a neuron kernel (parity 0, local): input consumed, epoch closed, spikes queued for delivery."""
    assert not device.to_host(acc).any()
    np.testing.assert_array_equal(device.to_host(q.clock), [t0, t0 + m])
    counts = device.to_host(q.counts)
    assert counts[0] == 0 and counts[3] == 0 and counts[2] == len(lids)
    slot = _slot_of_lid(net, n)[lids]
    sel = slot >= 0
    want = np.stack([slot[sel], steps[sel], net.slot_row_ptr[slot[sel]]])
    np.testing.assert_array_equal(q.pending(1), want[:, np.lexsort(want[::-1])])


def _slot_of_lid(net, n):
    return net.slot_of(net.gids[:n])


def check_lif_cond_epoch(device, connectome, n, exact=True):
    xp = device.xp
    sim = warmed_up(small_wholebrain(connectome))
    net, st, eng = sim.net, sim.engine.state, sim.engine
    n = n or net.n_local
    m, t0 = 17, sim.step
    inbuf = on_fixed_grid(np.random.default_rng(n).exponential(0.3, (m, 2, n)))
    state = dict(v=st["v"][:n].copy(), j=np.ascontiguousarray(st["j"][:, :n]), i_bg=st["i_bg"][:n].copy(),
                 ref=st["ref"][:n].copy(), gain=np.ascontiguousarray(st["gain"][:, :n]),
                 i_stim=np.random.default_rng(n).normal(0.0, 0.3, n))
    mine = {key: xp.array(val) for key, val in state.items()}  # copies, on the device
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_lif_cond(t0, m, sim.seed, net.gids[:n], net.pop[:n], eng.table, eng.poisson_cdf, state["v"],
                             state["j"], state["i_bg"], state["ref"], state["gain"], state["i_stim"], inbuf,
                             cpu.blocks(n, 1), np.zeros(n, np.uint64), np.empty((4, n), np.uint32), out_lid, out_step)
    q = Queues(device, cap=n * m, rec_cap=n * m, t0=t0)
    acc = xp.asarray(to_fixed(inbuf))
    zig = [xp.asarray(a) for a in (rng.ZIG_K.astype(np.int64), rng.ZIG_W, rng.ZIG_F)]
    device.launch("advance_lif_cond", n, np.int32(0), q.clock, np.int32(m), np.uint64(sim.seed), np.int64(n),
                  xp.asarray(net.gids[:n]), xp.asarray(net.pop[:n]), xp.asarray(eng.table),
                  xp.asarray(eng.poisson_cdf), np.int64(eng.poisson_cdf.shape[1]), mine["v"],
                  mine["j"], mine["i_bg"], mine["ref"], mine["gain"], mine["i_stim"], acc, *zig,
                  *q.args(1, _slot_of_lid(net, n), net.slot_row_ptr))
    lids, steps = q.recorded()
    _compare_epoch(device, exact, t0, m, k, out_lid, out_step, lids, steps, mine, state, ("v", "j", "i_bg"))
    _check_queues(device, q, acc, net, n, t0, m, lids, steps)


def check_iaf_psc_exp_epoch(device, n, exact=True):
    xp = device.xp
    sim = warmed_up(small_pd14(n_scale=0.05))
    net, st, eng = sim.net, sim.engine.state, sim.engine
    n = n or net.n_local
    m, t0 = 15, sim.step
    inbuf = on_fixed_grid(np.random.default_rng(n).normal(20.0, 80.0, (m, 2, n)))
    state = {key: st[key][:n].copy() for key in ("v", "i_ex", "i_in", "ref")}
    state["i_stim"] = np.random.default_rng(n).normal(0.0, 50.0, n)
    mine = {key: xp.array(val) for key, val in state.items()}  # copies, on the device
    out_lid, out_step = np.empty(n * m, np.int64), np.empty(n * m, np.int64)
    k = cpu.advance_iaf_psc_exp(t0, m, sim.seed, net.gids[:n], net.pop[:n], eng.table, eng.poisson_cdf,
                                state["v"], state["i_ex"], state["i_in"], state["ref"], state["i_stim"], inbuf,
                                cpu.blocks(n, 1),
                                np.zeros(n, np.uint64), np.empty(n), out_lid, out_step)
    q = Queues(device, cap=n * m, rec_cap=n * m, t0=t0)
    acc = xp.asarray(to_fixed(inbuf))
    cdf = np.ascontiguousarray(eng.poisson_cdf)
    device.launch("advance_iaf_psc_exp", n, np.int32(0), q.clock, np.int32(m), np.uint64(sim.seed), np.int64(n),
                  xp.asarray(net.gids[:n]), xp.asarray(net.pop[:n]), xp.asarray(eng.table), xp.asarray(cdf),
                  np.int64(cdf.shape[1]), mine["v"], mine["i_ex"], mine["i_in"], mine["ref"], mine["i_stim"], acc,
                  *q.args(1, _slot_of_lid(net, n), net.slot_row_ptr))
    lids, steps = q.recorded()
    _compare_epoch(device, exact, t0, m, k, out_lid, out_step, lids, steps, mine, state, ("v", "i_ex", "i_in"))
    _check_queues(device, q, acc, net, n, t0, m, lids, steps)


def check_delivery(device, connectome, model):
    """Weights coded against an exact table (whole brain) or a grid (PD14), and float32 weights (PD14 with
    compact_weights off): within float32 rounding of the CPU, the same bits for any order of the pending spikes
    (fixed point), and the spikes with rows left queued in the other buffer with the rows they have left."""
    xp = device.xp
    recipe = small_wholebrain(connectome) if model == "wholebrain" else small_pd14(n_scale=0.05)
    compact = "false" if model == "pd14_float32" else "true"
    net = simulation(recipe, seed=3, compact_weights=compact == "true").net
    assert bool(net.weight_table.size) == (model != "pd14_float32")
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
                       net.post, net.post_bits, net.weight, net.weight_table, net.slot_receptor, inbuf)
    assert np.abs(inbuf).sum() > 0 and left > 0
    table = net.weight_table if net.weight_table.size else np.zeros(1, np.float32)
    weight = net.weight if net.weight.size else np.zeros(1, np.float32)
    tables = [xp.asarray(net.slot_row_ptr), xp.asarray(net.row_ptr), xp.asarray(net.row_delay), xp.asarray(net.post),
              np.int32(net.post_bits), xp.asarray(weight), xp.asarray(table), xp.asarray(net.slot_receptor)]
    results = []
    for parity, perm in ((0, np.arange(n_pend)), (1, np.random.default_rng(2).permutation(n_pend))):
        q = Queues(device, cap=n_pend, rec_cap=1, t0=e0, parity=parity)
        q.pend[parity, :, :] = xp.asarray(np.ascontiguousarray(queue[:, perm]))
        q.counts[parity] = n_pend
        acc = xp.zeros((m, 2, net.n_local), dtype=xp.uint64)
        grid = device.grid_threads
        device.launch("deliver", grid, np.int64(grid), np.int32(parity), q.clock, np.int32(m), q.counts,
                      np.int64(q.cap), q.pend, *tables, np.int64(net.n_local), acc)
        assert device.to_host(q.counts)[parity] == n_pend  # the next neuron kernel empties it
        results.append((device.to_host(acc), q.pending(1 - parity)))
    (acc1, rows1), (acc2, rows2) = results
    np.testing.assert_array_equal(acc1, acc2)  # the order of adds does not matter
    got = (acc1.view(np.int64) / 2.0**32).astype(np.float32)
    np.testing.assert_allclose(got, inbuf, rtol=1e-6, atol=1e-6 * np.abs(inbuf).max())
    want = pend[:, :left]
    np.testing.assert_array_equal(rows1, want[:, np.lexsort(want[::-1])])
    np.testing.assert_array_equal(rows2, rows1)


def check_enqueue_and_counts(device):
    """Received spikes join a pending buffer with their slot's first row; spikes are counted per (bin, group)."""
    xp = device.xp
    slot_row_ptr = np.array([0, 3, 3, 7, 9], np.int64)
    q = Queues(device, cap=10, rec_cap=1, t0=0)
    q.counts[1] = 2  # entries already there are kept
    slot, step = np.array([3, 0, 2], np.int64), np.array([5, 6, 6], np.int64)
    device.launch("enqueue", 3, np.int64(3), xp.asarray(slot), xp.asarray(step), np.int32(1), q.counts,
                  np.int64(q.cap), q.pend, xp.asarray(slot_row_ptr))
    pend = device.to_host(q.pend)[1, :, 2:5]
    np.testing.assert_array_equal(np.sort(pend[0]), [0, 2, 3])
    order = np.argsort(pend[0])
    np.testing.assert_array_equal(pend[1, order], [6, 6, 5])
    np.testing.assert_array_equal(pend[2, order], [0, 3, 7])
    n, m = 1000, 13
    r = np.random.default_rng(2)
    lids = r.integers(0, n, 5000).astype(np.int64)
    steps = r.integers(0, m, 5000).astype(np.int64)
    group = np.arange(n, dtype=np.int32) % 5
    counts = xp.zeros((4, 5), dtype=xp.uint32)
    device.launch("count_spikes", len(lids), np.int64(len(lids)), xp.asarray(lids), xp.asarray(steps + 8),
                  xp.asarray(group), np.int64(4), np.int64(2), np.int32(5), counts)
    expected = np.zeros((4, 5), np.uint32)
    np.add.at(expected, ((steps + 8) // 4 - 2, group[lids]), 1)
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
