// The device kernels built for the host: each kernel NAME becomes a function NAME(n_threads, ...)
// that runs the body for thread indices 0 .. n_threads - 1 in a loop (warps' lanes one after the
// other). dtb.kernels.gpu.HostDevice loads it to run the GPU backend without a GPU; the tests
// also call the random-number helpers below. Built with nvcc as a shared library.
#include "kernels.cuh"

#define DTB_UNPACK(...) __VA_ARGS__
#define DTB_HOST(NAME, BODY, PARAMS, ARGS)                                                   \
    extern "C" void NAME(long long n_threads, DTB_UNPACK PARAMS) {                           \
        for (long long i = 0; i < n_threads; ++i) dtb::BODY(i, DTB_UNPACK ARGS);             \
    }

DTB_KERNELS(DTB_HOST)

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

}  // extern "C"
