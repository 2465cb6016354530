// The GPU backend's kernels as per-thread bodies: thread i of a launch of n_threads threads.
// kernels.cu launches them on the device (one CUDA thread each); host_check.cu runs them in a
// loop on the host, so that the whole device code path can be tested without a GPU.
#pragma once

#include "neurons.cuh"
#include "deliver.cuh"

namespace dtb {

DTB_HD void add_u32(unsigned int *x, unsigned int v) {
#if defined(__CUDA_ARCH__)
    atomicAdd(x, v);
#else
    *x += v;
#endif
}

// One thread per neuron: advance the epoch, leave the fired steps' bits in mask[n].
DTB_HD void advance_iaf_psc_exp_at(long long n, long long t0, int m, unsigned long long seed, long long N,
                                   const long long *gids, const int *pop, const double *params,
                                   const double *poisson_cdf, long long cdf_size, double *v, double *i_ex,
                                   double *i_in, int *ref, const float *inbuf, unsigned long long *mask) {
    if (n < N)
        mask[n] = iaf_psc_exp_epoch(n, N, t0, m, seed, (const int64_t *)gids, pop, params, poisson_cdf, cdf_size, v,
                                    i_ex, i_in, ref, inbuf);
}

DTB_HD void advance_lif_cond_at(long long n, long long t0, int m, unsigned long long seed, long long N,
                                const long long *gids, const int *pop, const double *params, double *v, double *j,
                                double *i_bg, int *ref, const double *gain, const float *inbuf, const long long *zig_k,
                                const double *zig_w, const double *zig_f, unsigned long long *mask) {
    if (n < N)
        mask[n] = lif_cond_epoch(n, N, t0, m, seed, (const int64_t *)gids, pop, params, v, j, i_bg, ref, gain, inbuf,
                                 Ziggurat{(const int64_t *)zig_k, zig_w, zig_f});
}

// flags[s, n] = 1 where neuron n fired at step s of the epoch; nonzero(flags) then lists the
// spikes in (step, lid) order, the order spikes leave an epoch on the CPU.
DTB_HD void spike_flags_at(long long n, long long N, int m, const unsigned long long *mask, unsigned char *flags) {
    if (n >= N) return;
    const unsigned long long bits = mask[n];
    for (int s = 0; s < m; ++s) flags[(long long)s * N + n] = (unsigned char)((bits >> s) & 1ull);
}

// One warp (32 consecutive threads) per pending spike: its rows arriving in [e0, e0 + m) go into acc
// (m, 2, N) in fixed point; next_row[p] is the first row left for later epochs.
template <typename W>
DTB_HD void deliver_at(long long i, long long e0, int m, long long n_pend, const long long *pend_slot,
                       const long long *pend_step, const long long *pend_row, const long long *slot_row_ptr,
                       const long long *row_ptr, const unsigned short *row_delay, const unsigned int *post,
                       const W *weight, const float *weight_table, const unsigned char *slot_receptor, long long N,
                       unsigned long long *acc, long long *next_row) {
    const long long p = i / 32;
    const int lane = (int)(i % 32);
    if (p >= n_pend) return;
    const int64_t r = deliver_spike<W>(e0, m, pend_slot[p], pend_step[p], pend_row[p], (const int64_t *)slot_row_ptr,
                                       (const int64_t *)row_ptr, row_delay, post, weight, weight_table, slot_receptor,
                                       N, acc, lane, 32);
    if (lane == 0) next_row[p] = r;
}

// The epoch's input for the neuron kernels: acc (fixed point) to inbuf (float32), element by element.
DTB_HD void fixed_to_float_at(long long i, long long count, const unsigned long long *acc, float *inbuf) {
    if (i < count) inbuf[i] = from_fixed((int64_t)acc[i]);
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
#define DTB_KERNELS(X)                                                                                              \
    X(advance_iaf_psc_exp, advance_iaf_psc_exp_at,                                                                  \
      (long long t0, int m, unsigned long long seed, long long N, const long long *gids, const int *pop,            \
       const double *params, const double *poisson_cdf, long long cdf_size, double *v, double *i_ex, double *i_in,  \
       int *ref, const float *inbuf, unsigned long long *mask),                                                     \
      (t0, m, seed, N, gids, pop, params, poisson_cdf, cdf_size, v, i_ex, i_in, ref, inbuf, mask))                  \
    X(advance_lif_cond, advance_lif_cond_at,                                                                        \
      (long long t0, int m, unsigned long long seed, long long N, const long long *gids, const int *pop,            \
       const double *params, double *v, double *j, double *i_bg, int *ref, const double *gain, const float *inbuf,  \
       const long long *zig_k, const double *zig_w, const double *zig_f, unsigned long long *mask),                 \
      (t0, m, seed, N, gids, pop, params, v, j, i_bg, ref, gain, inbuf, zig_k, zig_w, zig_f, mask))                 \
    X(spike_flags, spike_flags_at, (long long N, int m, const unsigned long long *mask, unsigned char *flags),       \
      (N, m, mask, flags))                                                                                          \
    X(deliver_f32, deliver_at<float>,                                                                               \
      (long long e0, int m, long long n_pend, const long long *pend_slot, const long long *pend_step,               \
       const long long *pend_row, const long long *slot_row_ptr, const long long *row_ptr,                          \
       const unsigned short *row_delay, const unsigned int *post, const float *weight, const float *weight_table,   \
       const unsigned char *slot_receptor, long long N, unsigned long long *acc, long long *next_row),              \
      (e0, m, n_pend, pend_slot, pend_step, pend_row, slot_row_ptr, row_ptr, row_delay, post, weight, weight_table, \
       slot_receptor, N, acc, next_row))                                                                            \
    X(deliver_u16, deliver_at<unsigned short>,                                                                      \
      (long long e0, int m, long long n_pend, const long long *pend_slot, const long long *pend_step,               \
       const long long *pend_row, const long long *slot_row_ptr, const long long *row_ptr,                          \
       const unsigned short *row_delay, const unsigned int *post, const unsigned short *weight,                     \
       const float *weight_table, const unsigned char *slot_receptor, long long N, unsigned long long *acc,         \
       long long *next_row),                                                                                        \
      (e0, m, n_pend, pend_slot, pend_step, pend_row, slot_row_ptr, row_ptr, row_delay, post, weight, weight_table, \
       slot_receptor, N, acc, next_row))                                                                            \
    X(fixed_to_float, fixed_to_float_at, (long long count, const unsigned long long *acc, float *inbuf),            \
      (count, acc, inbuf))                                                                                          \
    X(count_spikes, count_spikes_at,                                                                                \
      (long long n_spikes, const long long *lids, const long long *steps, const int *group_of_lid,                  \
       long long steps_per_bin, long long bin0, int n_groups, unsigned int *counts),                                \
      (n_spikes, lids, steps, group_of_lid, steps_per_bin, bin0, n_groups, counts))
