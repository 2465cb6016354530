"""Achieved memory bandwidth of the delivery kernel against the device's copy bandwidth.

Builds a whole-brain network on one rank, queues one spike of every presynaptic
slot (its rows due in one epoch of up to 64 steps), and times the delivery
kernel: each synapse reads its word (4 bytes; 8 with float32 weights) and adds 8
bytes into the fixed-point input with an atomic (counted as 16 bytes, read and
write); rows add their delay (2) and pointer (8), pending spikes 3 x 8 (the
weight table's reads hit the cache and are not counted). The copy bandwidth is a device-to-device copy of
``--copy-mib`` MiB (read + write counted).

    python benchmarks/gpu_bandwidth.py                        # on a GPU
    python benchmarks/gpu_bandwidth.py --backend gpu_emulated --neurons 20000   # the script itself, on the host
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
from _common import save

from dtb.config import load_config
from dtb.context import Context
from dtb.model.registry import network_from_config
from dtb.network import build_local
from dtb.partition import contiguous


def timed(device, fn, repeats: int) -> float:
    fn()
    device.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    device.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="gpu", choices=("gpu", "gpu_emulated"))
    ap.add_argument("--neurons", type=int, default=1_000_000)
    ap.add_argument("--in-degree", type=int, default=100)
    ap.add_argument("--copy-mib", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    cfg = load_config(overrides=[f"wholebrain.n_neurons={args.neurons}", f"wholebrain.in_degree={args.in_degree}",
                                 "simulation.dt_ms=0.1", "recording.progress=false"])
    recipe = network_from_config(cfg).recipe()
    ctx = Context.serial(backend=args.backend)
    net = build_local(ctx, recipe, contiguous(recipe, 1), cfg.simulation.seed)
    device = ctx.backend.device
    sim = ctx.backend.engine(net, cfg.simulation.seed)  # the synapse tables on the device
    xp = device.xp
    n_slots = len(net.slot_gids)
    # every slot fires at the step before the epoch: its rows arriving within m steps are delivered
    m = min(int(net.max_delay_steps) + 1, 64)
    pend = xp.zeros((2, 3, n_slots), dtype=xp.int64)
    pend[0] = xp.asarray(np.stack([np.arange(n_slots), np.full(n_slots, -1), net.slot_row_ptr[:-1]]))
    counts = xp.asarray(np.array([n_slots, 0, 0, 0], np.int64))
    clock = xp.zeros(2, dtype=xp.int64)
    acc = xp.zeros((m, 2, net.n_local), dtype=xp.uint64)
    grid = device.grid_threads

    def deliver():
        counts[1] = 0  # the spikes with rows left are queued again at every repeat
        device.launch("deliver", grid, np.int64(grid), np.int32(0), clock, np.int32(m), counts, np.int64(n_slots),
                      pend, *sim.synapses, np.int64(net.n_local), acc)

    deliver_s = timed(device, deliver, args.repeats)
    left = device.to_host(pend[1, :, : int(device.to_host(counts)[1])])
    rows = net.slot_row_ptr[1:].copy()  # the first row not delivered, per slot
    rows[left[0]] = left[2]
    rows_done = int(np.sum(rows - net.slot_row_ptr[:-1]))
    syn_done = int(np.sum(net.row_ptr[rows] - net.row_ptr[net.slot_row_ptr[:-1]]))
    word = 4 + (4 if net.weight.size else 0)
    bytes_moved = syn_done * (word + 16) + rows_done * (2 + 8) + n_slots * 3 * 8
    src = xp.zeros(args.copy_mib << 20, dtype=xp.uint8)
    dst = xp.empty_like(src)
    stream = getattr(device, "stream", None)

    def copy():
        # on the kernels' stream, the one device.synchronize() waits for
        with stream if stream is not None else contextlib.nullcontext():
            dst[...] = src

    copy_s = timed(device, copy, args.repeats)
    result = dict(backend=args.backend, device=device.description, neurons=args.neurons, in_degree=args.in_degree,
                  synapses_delivered=syn_done, deliver_s=deliver_s, deliver_gb_s=bytes_moved / deliver_s / 1e9,
                  copy_gb_s=2 * src.nbytes / copy_s / 1e9)
    result["fraction_of_copy"] = result["deliver_gb_s"] / result["copy_gb_s"]
    print(f"{device.description}: delivery {syn_done:,} synapses in {deliver_s * 1e3:.2f} ms = "
          f"{result['deliver_gb_s']:.1f} GB/s; copy {result['copy_gb_s']:.1f} GB/s "
          f"({100 * result['fraction_of_copy']:.0f} %)")
    save(f"gpu_bandwidth_{args.backend}", result)


if __name__ == "__main__":
    main()
