// Host builds of the device kernels' bodies, for tests on machines without a GPU
// (tests/unit/test_cuda_kernels.py compiles this with nvcc into a shared library and compares
// it with the numba kernels). Not part of the GPU backend.
#include "neurons.cuh"
#include "deliver.cuh"

extern "C" {

void host_draw(uint64_t seed, uint32_t purpose, uint32_t stream, int64_t n, const int64_t *gids, uint64_t index,
               uint32_t *out) {
    uint32_t k0, k1;
    dtb::key(seed, purpose, stream, &k0, &k1);
    for (int64_t i = 0; i < n; ++i) {
        const dtb::Words w = dtb::draw(k0, k1, (uint64_t)gids[i], index);
        out[4 * i] = w.w0;
        out[4 * i + 1] = w.w1;
        out[4 * i + 2] = w.w2;
        out[4 * i + 3] = w.w3;
    }
}

void host_normal(uint64_t seed, uint32_t purpose, int64_t n, const int64_t *gids, uint64_t index,
                 const int64_t *zk, const double *zw, const double *zf, double *out) {
    uint32_t k0, k1;
    dtb::key(seed, purpose, 0, &k0, &k1);
    for (int64_t i = 0; i < n; ++i) {
        const dtb::Words w = dtb::draw(k0, k1, (uint64_t)gids[i], index);
        out[i] = dtb::normal(seed, purpose, (uint64_t)gids[i], index, w.w0, w.w1, dtb::Ziggurat{zk, zw, zf});
    }
}

void host_poisson(int64_t n, const double *lam, const double *u, int64_t *out) {
    for (int64_t i = 0; i < n; ++i) out[i] = dtb::poisson(lam[i], u[i]);
}

void host_iaf_psc_exp(int64_t t0, int m, uint64_t seed, int64_t N, const int64_t *gids, const int32_t *pop,
                      const double *params, const double *poisson_cdf, int64_t cdf_size, double *v, double *i_ex,
                      double *i_in, int32_t *ref, const float *inbuf, uint64_t *mask) {
    for (int64_t n = 0; n < N; ++n)
        mask[n] = dtb::iaf_psc_exp_epoch(n, N, t0, m, seed, gids, pop, params, poisson_cdf, cdf_size, v, i_ex,
                                         i_in, ref, inbuf);
}

void host_lif_cond(int64_t t0, int m, uint64_t seed, int64_t N, const int64_t *gids, const int32_t *pop,
                   const double *params, double *v, double *j, double *i_bg, int32_t *ref, const double *gain,
                   const float *inbuf, const int64_t *zk, const double *zw, const double *zf, uint64_t *mask) {
    for (int64_t n = 0; n < N; ++n)
        mask[n] = dtb::lif_cond_epoch(n, N, t0, m, seed, gids, pop, params, v, j, i_bg, ref, gain, inbuf,
                                      dtb::Ziggurat{zk, zw, zf});
}

// The warp's lanes run one after another, in reverse, so that the sum's order differs from the CPU's.
static void deliver_all(int64_t e0, int m, int64_t n_pend, const int64_t *pend_slot, const int64_t *pend_step,
                        const int64_t *pend_row, const int64_t *slot_row_ptr, const int64_t *row_ptr,
                        const uint16_t *row_delay, const uint32_t *post, const void *weight, int weight_u16,
                        const float *weight_table, const uint8_t *slot_receptor, int64_t N,
                        unsigned long long *acc, int64_t *next_row, int lanes) {
    for (int64_t p = n_pend - 1; p >= 0; --p)
        for (int lane = lanes - 1; lane >= 0; --lane)
            next_row[p] = weight_u16
                ? dtb::deliver_spike<uint16_t>(e0, m, pend_slot[p], pend_step[p], pend_row[p], slot_row_ptr, row_ptr,
                                               row_delay, post, (const uint16_t *)weight, weight_table,
                                               slot_receptor, N, acc, lane, lanes)
                : dtb::deliver_spike<float>(e0, m, pend_slot[p], pend_step[p], pend_row[p], slot_row_ptr, row_ptr,
                                            row_delay, post, (const float *)weight, weight_table, slot_receptor, N,
                                            acc, lane, lanes);
}

void host_deliver(int64_t e0, int m, int64_t n_pend, const int64_t *pend_slot, const int64_t *pend_step,
                  const int64_t *pend_row, const int64_t *slot_row_ptr, const int64_t *row_ptr,
                  const uint16_t *row_delay, const uint32_t *post, const void *weight, int weight_u16,
                  const float *weight_table, const uint8_t *slot_receptor, int64_t N, unsigned long long *acc,
                  int64_t *next_row, int lanes) {
    deliver_all(e0, m, n_pend, pend_slot, pend_step, pend_row, slot_row_ptr, row_ptr, row_delay, post, weight,
                weight_u16, weight_table, slot_receptor, N, acc, next_row, lanes);
}

void host_fixed_to_float(int64_t count, const unsigned long long *acc, float *out) {
    for (int64_t i = 0; i < count; ++i) out[i] = dtb::from_fixed((int64_t)acc[i]);
}

}  // extern "C"
