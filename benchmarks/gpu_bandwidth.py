"""Achieved memory bandwidth of the delivery kernel against the device's copy bandwidth.

Builds a whole-brain network on one rank, queues one spike of every presynaptic
slot (all rows due in one epoch), and times the delivery kernel: each synapse
reads its target (4 bytes) and weight (2 or 4) and adds 8 bytes into the
fixed-point input with an atomic (counted as 16 bytes, read and write); rows add
their delay (2) and pointer (8). The copy bandwidth is a device-to-device copy of
``--copy-mib`` MiB (read + write counted).

    python benchmarks/gpu_bandwidth.py                        # on a GPU
    python benchmarks/gpu_bandwidth.py --backend gpu_emulated --neurons 20000   # the script itself, on the host
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import save

from dtb import driver
from dtb.config import load_config
from dtb.context import Context
from dtb.device_simulation import DeviceSimulation
from dtb.kernels.gpu import make_device


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
    recipe = driver.make_recipe(cfg)
    ctx = Context.serial(backend="cpu")
    _, net, exchange, _, _ = driver.build(ctx, recipe, cfg, partition=driver.plan(recipe, cfg, 1))
    device = make_device(args.backend)
    sim = DeviceSimulation(ctx, net, exchange, cfg.simulation.seed, device=device)
    xp = device.xp
    n_slots = len(net.slot_gids)
    # every slot fires at the step before the epoch: all its rows arrive within max_delay steps
    m = min(int(net.max_delay_steps) + 1, 64)
    pend = [xp.asarray(a) for a in (np.arange(n_slots, dtype=np.int64), np.full(n_slots, -1, np.int64),
                                    net.slot_row_ptr[:-1].astype(np.int64))]
    acc = xp.zeros((m, 2, net.n_local), dtype=xp.uint64)
    next_row = xp.empty(n_slots, dtype=xp.int64)

    def deliver():
        device.launch(sim.deliver_kernel, 32 * n_slots, np.int64(0), np.int32(m), np.int64(n_slots), *pend,
                      sim.slot_row_ptr, *sim.synapses, np.int64(net.n_local), acc, next_row)

    deliver_s = timed(device, deliver, args.repeats)
    rows = device.to_host(next_row)  # the first row not delivered, per slot
    rows_done = int(np.sum(rows - net.slot_row_ptr[:-1]))
    syn_done = int(np.sum(net.row_ptr[rows] - net.row_ptr[net.slot_row_ptr[:-1]]))
    bytes_moved = syn_done * (4 + net.weight.itemsize + 16) + rows_done * (2 + 8) + n_slots * 3 * 8
    src = xp.zeros(args.copy_mib << 20, dtype=xp.uint8)
    dst = xp.empty_like(src)
    copy_s = timed(device, lambda: dst.__setitem__(Ellipsis, src), args.repeats)
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
