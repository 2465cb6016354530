// Counter-based random numbers for the CUDA kernels: the same scheme, bit for bit, as
// dtb/kernels/rng.py (Philox4x32-10 keyed by (seed, purpose | stream << 8), counter
// (gid lo, gid hi, index lo, index hi); ziggurat normals; Poisson by chop-down inversion).
// Every function is __host__ __device__ so that tests compile them for the host too.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC (cupy.RawModule) has no C library headers; its math functions are built in.
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#else
#include <math.h>
#include <stdint.h>
#endif

#if defined(__CUDACC__)
#define DTB_HD __host__ __device__ __forceinline__
#else
#define DTB_HD static inline
#endif

namespace dtb {

// purposes: keep equal to dtb/kernels/rng.py
enum Purpose : uint32_t { INIT = 5, NOISE = 6, POISSON = 7 };

struct Words {
    uint32_t w0, w1, w2, w3;
};

DTB_HD Words philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        const uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return Words{c0, c1, c2, c3};
}

DTB_HD void key(uint64_t seed, uint32_t purpose, uint32_t stream, uint32_t *k0, uint32_t *k1) {
    *k0 = (uint32_t)seed;
    *k1 = purpose | (stream << 8);
}

DTB_HD Words draw(uint32_t k0, uint32_t k1, uint64_t gid, uint64_t index) {
    return philox((uint32_t)gid, (uint32_t)(gid >> 32), (uint32_t)index, (uint32_t)(index >> 32), k0, k1);
}

// uniform in (0, 1) from one word
DTB_HD double u01(uint32_t word) { return ((double)word + 0.5) * (1.0 / 4294967296.0); }

// uniform in (0, 1) with 53 random bits from two words
DTB_HD double u01_53(uint32_t hi, uint32_t lo) {
    return ((double)(((uint64_t)hi << 21) ^ ((uint64_t)lo >> 11)) + 0.5) * (1.0 / 9007199254740992.0);
}

// Ziggurat tables (Marsaglia & Tsang 2000, 128 layers), filled from rng.ZIG_K/W/F.
struct Ziggurat {
    const int64_t *k;
    const double *w;
    const double *f;
};

// One standard normal of draw (seed, purpose, stream 0, gid, index) whose first two words are w0, w1.
DTB_HD double normal(uint64_t seed, uint32_t purpose, uint64_t gid, uint64_t index, uint32_t w0, uint32_t w1,
                     Ziggurat z) {
    const double r = 3.442619855899;
    uint32_t attempt = 0;
    while (true) {
        const int64_t hz = (int64_t)w0 - 2147483648LL;
        const int iz = (int)(w1 & 127u);
        if ((hz < 0 ? -hz : hz) < z.k[iz]) return (double)hz * z.w[iz];
        const double x = (double)hz * z.w[iz];
        uint32_t k0, k1;
        key(seed, purpose, attempt, &k0, &k1);
        const Words extra = draw(k0, k1, gid, index);
        if (iz == 0) {
            // the tail beyond r: Marsaglia's exponential rejection, retried inside the tail (rng.normal)
            uint32_t w2 = extra.w2, w3 = extra.w3;
            while (true) {
                const double xt = -log(u01(w2)) / r;
                const double yt = -log(u01(w3));
                if (yt + yt >= xt * xt) return hz > 0 ? r + xt : -r - xt;
                ++attempt;
                key(seed, purpose, attempt, &k0, &k1);
                const Words retry = draw(k0, k1, gid, index);
                w2 = retry.w2;
                w3 = retry.w3;
            }
        } else if (z.f[iz] + u01(extra.w2) * (z.f[iz - 1] - z.f[iz]) < exp(-0.5 * x * x)) {
            return x;
        }
        ++attempt;
        key(seed, purpose, attempt, &k0, &k1);
        const Words again = draw(k0, k1, gid, index);
        w0 = again.w0;
        w1 = again.w1;
    }
}

// Poisson(lam) by inversion with the chop-down search started at the mode (rng.poisson).
DTB_HD int64_t poisson(double lam, double u) {
    if (lam <= 0.0) return 0;
    const int64_t m = (int64_t)floor(lam);
    const double pm = exp((double)m * log(lam) - lam - lgamma((double)m + 1.0));
    u -= pm;
    if (u <= 0.0) return m;
    int64_t lo = m, hi = m;
    double plo = pm, phi = pm;
    while (true) {
        if (lo > 0) {
            plo *= (double)lo / lam;
            lo -= 1;
            u -= plo;
            if (u <= 0.0) return lo;
        }
        phi *= lam / (double)(hi + 1);
        hi += 1;
        u -= phi;
        if (u <= 0.0) return hi;
        if (lo == 0 && phi < 1e-300) return m;
    }
}

// Poisson draw from a cumulative table (cpu._poisson_from_table): the table's k, or the exact sampler beyond it.
DTB_HD int64_t poisson_from_table(const double *cdf, int64_t size, double lam, double u) {
    int64_t k = 0;
    while (k < size - 1 && u > cdf[k]) ++k;
    if (k == size - 1 && u > cdf[k]) return poisson(lam, u);
    return k;
}

}  // namespace dtb
