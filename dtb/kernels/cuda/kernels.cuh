// The GPU backend's kernels as per-thread bodies: thread i of a launch of n_threads threads.
// kernels.cu launches them on the device (one CUDA thread each); host_check.cu runs them in a
// loop on the host, so that the whole device code path can be tested without a GPU.
#pragma once

#include "neurons.cuh"
#include "deliver.cuh"

namespace dtb {

// The spike queues of a device engine (dtb/backends/device.py), on the device:
// - pend (2, 3, cap) int64: two buffers (parity 0, 1) of pending spikes (slot, emission step, next row);
//   an epoch's delivery reads the buffer of its parity and appends the spikes with rows left to the
//   other one, where the epoch's new spikes (one rank) or the spikes received (exchange) go too;
// - rec (2, rec_cap) int64: the (step, lid) of every spike fired since the host last took them;
// - counts: the entries of both pend buffers, of rec, and an overflow flag (the host sizes the buffers
//   so that it stays 0, and checks);
// - clock (2,) int64: the first step of the epoch of each parity, so that a captured CUDA graph of
//   epochs replays with the right steps.
// Entries are appended with atomic adds, in no fixed order: delivery sums in fixed point (the same
// bits in any order) and the host sorts the spikes it takes.
enum { PEND0 = 0, PEND1 = 1, REC = 2, OVERFLOW = 3, N_COUNTS = 4 };

DTB_HD long long fetch_add(long long *x, long long v) {
#if defined(__CUDA_ARCH__)
    return (long long)atomicAdd((unsigned long long *)x, (unsigned long long)v);
#else
    const long long old = *x;
    *x += v;
    return old;
#endif
}

DTB_HD void add_u32(unsigned int *x, unsigned int v) {
#if defined(__CUDA_ARCH__)
    atomicAdd(x, v);
#else
    *x += v;
#endif
}

DTB_HD void push_pending(long long *counts, int parity, long long cap, long long *pend, long long slot,
                         long long step, long long row) {
    const long long k = fetch_add(counts + parity, 1);
    if (k >= cap) {
        counts[OVERFLOW] = 1;
        return;
    }
    long long *b = pend + (long long)parity * 3 * cap;
    b[k] = slot;
    b[cap + k] = step;
    b[2 * cap + k] = row;
}

// The neuron kernels' input: delivery's fixed-point sums, as float32 (what the CPU kernels take),
// zeroed once read (each element is read by one thread, its neuron's), ready for the next epoch.
struct FixedInput {
    unsigned long long *acc;
    DTB_HD double operator()(int64_t i) const {
        const float x = from_fixed((int64_t)acc[i]);
        acc[i] = 0ull;
        return (double)x;
    }
};

// Neuron n fired at the steps of mask (bit s: step t0 + s): record the spikes and, when the rank
// delivers its own spikes (local), queue them into the next epoch's pending buffer.
DTB_HD void emit_spikes(long long n, unsigned long long mask, long long t0, int m, int next, int local,
                        long long *counts, long long cap, long long *pend, const long long *slot_of_lid,
                        const long long *slot_row_ptr, long long rec_cap, long long *rec) {
    for (int s = 0; s < m && mask; ++s) {
        if (!((mask >> s) & 1ull)) continue;
        const long long k = fetch_add(counts + REC, 1);
        if (k < rec_cap) {
            rec[k] = t0 + s;
            rec[rec_cap + k] = n;
        } else {
            counts[OVERFLOW] = 1;
        }
        if (local && slot_of_lid[n] >= 0)
            push_pending(counts, next, cap, pend, slot_of_lid[n], t0 + s, slot_row_ptr[slot_of_lid[n]]);
    }
}

// Thread 0 closes the epoch: its pending buffer is spent and the next epoch starts m steps later.
DTB_HD void close_epoch(long long n, int parity, long long *clock, int m, long long *counts) {
    if (n == 0) {
        counts[parity] = 0;
        clock[1 - parity] = clock[parity] + m;
    }
}

// One thread per neuron (at least one thread): advance the epoch of the given parity.
DTB_HD void advance_iaf_psc_exp_at(long long n, int parity, long long *clock, int m, unsigned long long seed,
                                   long long N, const long long *gids, const int *pop, const double *params,
                                   const double *poisson_cdf, long long cdf_size, double *v, double *i_ex,
                                   double *i_in, int *ref, const double *i_stim, unsigned long long *acc, int local,
                                   long long *counts, long long cap, long long *pend, const long long *slot_of_lid,
                                   const long long *slot_row_ptr, long long rec_cap, long long *rec) {
    const long long t0 = clock[parity];
    if (n < N) {
        const unsigned long long mask = iaf_psc_exp_epoch(n, N, t0, m, seed, (const int64_t *)gids, pop, params,
                                                          poisson_cdf, cdf_size, v, i_ex, i_in, ref, i_stim,
                                                          FixedInput{acc});
        emit_spikes(n, mask, t0, m, 1 - parity, local, counts, cap, pend, slot_of_lid, slot_row_ptr, rec_cap, rec);
    }
    close_epoch(n, parity, clock, m, counts);
}

DTB_HD void advance_lif_cond_at(long long n, int parity, long long *clock, int m, unsigned long long seed,
                                long long N, const long long *gids, const int *pop, const double *params,
                                const double *poisson_cdf, long long cdf_size, double *v, double *j, double *i_bg,
                                int *ref, const double *gain, const double *i_stim, unsigned long long *acc,
                                const long long *zig_k, const double *zig_w, const double *zig_f, int local,
                                long long *counts, long long cap, long long *pend, const long long *slot_of_lid,
                                const long long *slot_row_ptr, long long rec_cap, long long *rec) {
    const long long t0 = clock[parity];
    if (n < N) {
        const unsigned long long mask = lif_cond_epoch(n, N, t0, m, seed, (const int64_t *)gids, pop, params,
                                                       poisson_cdf, cdf_size, v, j, i_bg, ref, gain, i_stim,
                                                       FixedInput{acc},
                                                       Ziggurat{(const int64_t *)zig_k, zig_w, zig_f});
        emit_spikes(n, mask, t0, m, 1 - parity, local, counts, cap, pend, slot_of_lid, slot_row_ptr, rec_cap, rec);
    }
    close_epoch(n, parity, clock, m, counts);
}

// A fixed grid of n_grid threads (a multiple of 32; launch exactly that many): warp w delivers the pending spikes w, w + warps, ... of
// the parity's buffer (their rows arriving in the epoch go into acc (m, 2, N), fixed point) and queues
// those with rows left into the other buffer. The grid does not depend on the queue's length, which
// only the device knows, so that epochs can be captured in a graph.
DTB_HD void deliver_at(long long i, long long n_grid, int parity, const long long *clock, int m,
                       long long *counts, long long cap, long long *pend, const long long *slot_row_ptr,
                       const long long *row_ptr, const unsigned short *row_delay, const unsigned int *post,
                       int post_bits, const float *weight, const float *weight_table,
                       const unsigned char *slot_receptor, long long N, unsigned long long *acc) {
    const long long warps = n_grid / 32;
    const int lane = (int)(i % 32);
    const long long e0 = clock[parity];
    const long long n_pend = counts[parity];
    const long long *in = pend + (long long)parity * 3 * cap;
    for (long long p = i / 32; p < n_pend; p += warps) {
        const long long slot = in[p];
        const int64_t r = deliver_spike(e0, m, slot, in[cap + p], in[2 * cap + p], (const int64_t *)slot_row_ptr,
                                        (const int64_t *)row_ptr, row_delay, post, post_bits, weight, weight_table,
                                        slot_receptor, N, acc, lane, 32);
        if (lane == 0 && r < slot_row_ptr[slot + 1]) push_pending(counts, 1 - parity, cap, pend, slot, in[cap + p], r);
    }
}

// Spikes received from other ranks (slot, emission step) into the pending buffer of the given parity.
DTB_HD void enqueue_at(long long i, long long n, const long long *slot, const long long *step, int parity,
                       long long *counts, long long cap, long long *pend, const long long *slot_row_ptr) {
    if (i < n) push_pending(counts, parity, cap, pend, slot[i], step[i], slot_row_ptr[slot[i]]);
}

// Spike counts per (bin, group): population rates (group = population) and BOLD input
// (group = region, 1 ms bins). counts is (n_bins, n_groups) uint32, bins counted from bin0.
DTB_HD void count_spikes_at(long long i, long long n_spikes, const long long *lids, const long long *steps,
                            const int *group_of_lid, long long steps_per_bin, long long bin0, int n_groups,
                            unsigned int *counts) {
    if (i < n_spikes) add_u32(counts + (steps[i] / steps_per_bin - bin0) * n_groups + group_of_lid[lids[i]], 1u);
}

}  // namespace dtb

// Every kernel: (name, parameter list, argument list). kernels.cu and host_check.cu expand it.
#define DTB_QUEUE_PARAMS                                                                                            \
    int local, long long *counts, long long cap, long long *pend, const long long *slot_of_lid,                     \
        const long long *slot_row_ptr, long long rec_cap, long long *rec
#define DTB_QUEUE_ARGS local, counts, cap, pend, slot_of_lid, slot_row_ptr, rec_cap, rec
#define DTB_KERNELS(X)                                                                                              \
    X(advance_iaf_psc_exp, advance_iaf_psc_exp_at,                                                                  \
      (int parity, long long *clock, int m, unsigned long long seed, long long N, const long long *gids,            \
       const int *pop, const double *params, const double *poisson_cdf, long long cdf_size, double *v,              \
       double *i_ex, double *i_in, int *ref, const double *i_stim, unsigned long long *acc, DTB_QUEUE_PARAMS),      \
      (parity, clock, m, seed, N, gids, pop, params, poisson_cdf, cdf_size, v, i_ex, i_in, ref, i_stim, acc,        \
       DTB_QUEUE_ARGS))                                                                                             \
    X(advance_lif_cond, advance_lif_cond_at,                                                                        \
      (int parity, long long *clock, int m, unsigned long long seed, long long N, const long long *gids,            \
       const int *pop, const double *params, const double *poisson_cdf, long long cdf_size, double *v, double *j,   \
       double *i_bg, int *ref, const double *gain, const double *i_stim, unsigned long long *acc,                   \
       const long long *zig_k, const double *zig_w, const double *zig_f, DTB_QUEUE_PARAMS),                         \
      (parity, clock, m, seed, N, gids, pop, params, poisson_cdf, cdf_size, v, j, i_bg, ref, gain, i_stim, acc,     \
       zig_k, zig_w, zig_f, DTB_QUEUE_ARGS))                                                                        \
    X(deliver, deliver_at,                                                                                          \
      (long long n_grid, int parity, const long long *clock, int m, long long *counts, long long cap,               \
       long long *pend, const long long *slot_row_ptr, const long long *row_ptr, const unsigned short *row_delay,   \
       const unsigned int *post, int post_bits, const float *weight, const float *weight_table,                     \
       const unsigned char *slot_receptor, long long N, unsigned long long *acc),                                   \
      (n_grid, parity, clock, m, counts, cap, pend, slot_row_ptr, row_ptr, row_delay, post, post_bits, weight,      \
       weight_table, slot_receptor, N, acc))                                                                        \
    X(enqueue, enqueue_at,                                                                                          \
      (long long n, const long long *slot, const long long *step, int parity, long long *counts, long long cap,     \
       long long *pend, const long long *slot_row_ptr),                                                             \
      (n, slot, step, parity, counts, cap, pend, slot_row_ptr))                                                     \
    X(count_spikes, count_spikes_at,                                                                                \
      (long long n_spikes, const long long *lids, const long long *steps, const int *group_of_lid,                  \
       long long steps_per_bin, long long bin0, int n_groups, unsigned int *counts),                                \
      (n_spikes, lids, steps, group_of_lid, steps_per_bin, bin0, n_groups, counts))
