// The GPU backend's kernels, loaded with cupy.RawModule (dtb/kernels/gpu.py). Each is a thin
// launch wrapper around the __host__ __device__ bodies in the headers, which tests also run
// on the host against the numba kernels of dtb/kernels/cpu.py.
#include "neurons.cuh"
#include "deliver.cuh"

extern "C" {

// One thread per neuron: advance the epoch, leave the fired steps' bits in mask[n].
__global__ void advance_iaf_psc_exp(long long t0, int m, unsigned long long seed, long long N, const long long *gids,
                                    const int *pop, const double *params, const double *poisson_cdf,
                                    long long cdf_size, double *v, double *i_ex, double *i_in, int *ref,
                                    const float *inbuf, unsigned long long *mask) {
    const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N)
        mask[n] = dtb::iaf_psc_exp_epoch(n, N, t0, m, seed, (const int64_t *)gids, pop, params, poisson_cdf,
                                         cdf_size, v, i_ex, i_in, ref, inbuf);
}

__global__ void advance_lif_cond(long long t0, int m, unsigned long long seed, long long N, const long long *gids,
                                 const int *pop, const double *params, double *v, double *j, double *i_bg, int *ref,
                                 const double *gain, const float *inbuf, const long long *zig_k, const double *zig_w,
                                 const double *zig_f, unsigned long long *mask) {
    const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N)
        mask[n] = dtb::lif_cond_epoch(n, N, t0, m, seed, (const int64_t *)gids, pop, params, v, j, i_bg, ref, gain,
                                      inbuf, dtb::Ziggurat{(const int64_t *)zig_k, zig_w, zig_f});
}

// flags[s, n] = 1 where neuron n fired at step s of the epoch; cupy.nonzero(flags) then lists the
// spikes in (step, lid) order, the order spikes leave an epoch on the CPU.
__global__ void spike_flags(long long N, int m, const unsigned long long *mask, unsigned char *flags) {
    const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const unsigned long long bits = mask[n];
    for (int s = 0; s < m; ++s) flags[(long long)s * N + n] = (unsigned char)((bits >> s) & 1ull);
}

// One warp per pending spike: its rows arriving in [e0, e0 + m) go into acc (m, 2, N) in fixed point;
// next_row[p] is the first row left for later epochs.
#define DTB_DELIVER(NAME, W)                                                                                       \
    __global__ void NAME(long long e0, int m, long long n_pend, const long long *pend_slot,                        \
                         const long long *pend_step, const long long *pend_row, const long long *slot_row_ptr,     \
                         const long long *row_ptr, const unsigned short *row_delay, const unsigned int *post,      \
                         const W *weight, const float *weight_table, const unsigned char *slot_receptor,           \
                         long long N, unsigned long long *acc, long long *next_row) {                              \
        const long long p = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;                               \
        const int lane = threadIdx.x % 32;                                                                         \
        if (p >= n_pend) return;                                                                                   \
        const int64_t r = dtb::deliver_spike<W>(e0, m, pend_slot[p], pend_step[p], pend_row[p],                     \
                                                (const int64_t *)slot_row_ptr, (const int64_t *)row_ptr, row_delay, \
                                                post, weight, weight_table, slot_receptor, N, acc, lane, 32);      \
        if (lane == 0) next_row[p] = r;                                                                            \
    }
DTB_DELIVER(deliver_f32, float)
DTB_DELIVER(deliver_u16, uint16_t)

// The epoch's input for the neuron kernels: acc (fixed point) to inbuf (float32), element by element.
__global__ void fixed_to_float(long long count, const unsigned long long *acc, float *inbuf) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) inbuf[i] = dtb::from_fixed((int64_t)acc[i]);
}

// Spike counts per (bin, group): population rates (group = population) and BOLD input
// (group = region, 1 ms bins). counts is (n_bins, n_groups) uint32, bins counted from bin0.
__global__ void count_spikes(long long n_spikes, const long long *lids, const long long *steps,
                             const int *group_of_lid, long long steps_per_bin, long long bin0, int n_groups,
                             unsigned int *counts) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_spikes) return;
    atomicAdd(counts + (steps[i] / steps_per_bin - bin0) * n_groups + group_of_lid[lids[i]], 1u);
}

}  // extern "C"
