// One neuron's epoch for both neuron models: the per-thread body of the update kernels.
// Mirrors dtb/kernels/cpu.py operation by operation (same state layout, same parameter
// columns, same random draws), so that on the host it gives the CPU kernel's numbers.
#pragma once

#include "rng.cuh"

namespace dtb {

// The epoch's synaptic input of the neuron kernels, element i of an (m, 2, N) array as a double:
// float32 as the CPU kernels take it. (kernels.cuh adds the fixed-point accumulator of delivery.)
struct FloatInput {
    const float *buf;
    DTB_HD double operator()(int64_t i) const { return (double)buf[i]; }
};

// Columns of the per-population parameter tables: keep equal to IAF_COLUMNS and LIF_COLUMNS
// in dtb/model/neurons.py (a test compares them).
enum IafColumn {
    IAF_P22, IAF_P21_EX, IAF_P21_IN, IAF_P20, IAF_P11_EX, IAF_P11_IN, IAF_THETA_MV, IAF_V_RESET_MV, IAF_I_E_PA,
    IAF_REF_STEPS, IAF_POISSON_LAM, IAF_W_EXT_PA, IAF_E_L_MV, IAF_N_COLUMNS
};
enum LifColumn {
    LIF_G_L, LIF_V_L_MV, LIF_V_TH_MV, LIF_V_RESET_MV, LIF_REF_STEPS, LIF_I_EXT, LIF_G_AMPA, LIF_G_NMDA,
    LIF_G_GABA_A, LIF_G_GABA_B, LIF_E_AMPA_MV, LIF_E_NMDA_MV, LIF_E_GABA_A_MV, LIF_E_GABA_B_MV, LIF_D_AMPA,
    LIF_D_NMDA, LIF_D_GABA_A, LIF_D_GABA_B, LIF_OU_MU, LIF_OU_DECAY, LIF_OU_NOISE, LIF_DT_OVER_C, LIF_POISSON_LAM,
    LIF_W_EXT, LIF_N_COLUMNS
};

// Advance iaf_psc_exp neuron n (of N) by m <= 64 steps from step t0; returns the bit mask of the steps it fired.
// in reads the (m, 2, N) input (FloatInput or the like); poisson_cdf is (n_pop, cdf_size); i_stim (N,) is each
// neuron's stimulus current (pA), added to the population's i_e_pa.
template <typename In>
DTB_HD uint64_t iaf_psc_exp_epoch(int64_t n, int64_t N, int64_t t0, int m, uint64_t seed, const int64_t *gids,
                                  const int32_t *pop, const double *params, const double *poisson_cdf,
                                  int64_t cdf_size, double *v, double *i_ex, double *i_in, int32_t *ref,
                                  const double *i_stim, In in) {
    uint32_t k0, k1;
    key(seed, POISSON, 0, &k0, &k1);
    const double *pr = params + (int64_t)pop[n] * IAF_N_COLUMNS;
    const double *cdf = poisson_cdf + (int64_t)pop[n] * cdf_size;
    double vn = v[n], iex = i_ex[n], iin = i_in[n];
    const double stim = i_stim[n];
    int32_t r = ref[n];
    uint64_t mask = 0;
    for (int s = 0; s < m; ++s) {
        if (r == 0) {
            vn = pr[IAF_P22] * vn + pr[IAF_P21_EX] * iex + pr[IAF_P21_IN] * iin + pr[IAF_P20] * (pr[IAF_I_E_PA] + stim);
        } else {
            r -= 1;
        }
        double x_ex = in(((int64_t)s * 2 + 0) * N + n);
        if (pr[IAF_POISSON_LAM] > 0.0) {
            const Words w = draw(k0, k1, (uint64_t)gids[n], (uint64_t)(t0 + s));
            const int64_t k = poisson_from_table(cdf, cdf_size, pr[IAF_POISSON_LAM], u01_53(w.w0, w.w1));
            x_ex += (double)k * pr[IAF_W_EXT_PA];
        }
        iex = iex * pr[IAF_P11_EX] + x_ex;
        iin = iin * pr[IAF_P11_IN] + in(((int64_t)s * 2 + 1) * N + n);
        if (vn >= pr[IAF_THETA_MV]) {
            r = (int32_t)pr[IAF_REF_STEPS];
            vn = pr[IAF_V_RESET_MV];
            mask |= (uint64_t)1 << s;
        }
    }
    v[n] = vn;
    i_ex[n] = iex;
    i_in[n] = iin;
    ref[n] = r;
    return mask;
}

// Advance lif_cond neuron n (of N) by m <= 64 steps from step t0; returns the bit mask of the steps it fired.
// j is (4, N) receptor traces, gain is (5, N), i_stim (N,) the stimulus currents (mV/ms), in reads the (m, 2, N)
// input; poisson_cdf is (n_pop, cdf_size), the tables of the populations' external Poisson drive.
template <typename In>
DTB_HD uint64_t lif_cond_epoch(int64_t n, int64_t N, int64_t t0, int m, uint64_t seed, const int64_t *gids,
                               const int32_t *pop, const double *params, const double *poisson_cdf,
                               int64_t cdf_size, double *v, double *j, double *i_bg, int32_t *ref,
                               const double *gain, const double *i_stim, In in, Ziggurat zig) {
    uint32_t k0, k1, p0, p1;
    key(seed, NOISE, 0, &k0, &k1);
    key(seed, POISSON, 0, &p0, &p1);
    const double *pr = params + (int64_t)pop[n] * LIF_N_COLUMNS;
    const double *cdf = poisson_cdf + (int64_t)pop[n] * cdf_size;
    const double stim = i_stim[n];
    double vn = v[n], ja = j[n], jn = j[N + n], jga = j[2 * N + n], jgb = j[3 * N + n], ibg = i_bg[n];
    int32_t r = ref[n];
    uint64_t mask = 0;
    for (int s = 0; s < m; ++s) {
        const int64_t t = t0 + s;
        const Words w = draw(k0, k1, (uint64_t)gids[n], (uint64_t)t);
        const double z = normal(seed, NOISE, (uint64_t)gids[n], (uint64_t)t, w.w0, w.w1, zig);
        if (r == 0) {
            const double ga = pr[LIF_G_AMPA] * gain[n] * ja;
            const double gn = pr[LIF_G_NMDA] * gain[N + n] * jn;
            const double gga = pr[LIF_G_GABA_A] * gain[2 * N + n] * jga;
            const double ggb = pr[LIF_G_GABA_B] * gain[3 * N + n] * jgb;
            const double gsum = pr[LIF_G_L] + ga + gn + gga + ggb;
            const double veq = (pr[LIF_G_L] * pr[LIF_V_L_MV] + ga * pr[LIF_E_AMPA_MV] + gn * pr[LIF_E_NMDA_MV]
                                + gga * pr[LIF_E_GABA_A_MV] + ggb * pr[LIF_E_GABA_B_MV] + pr[LIF_I_EXT] + stim + ibg)
                               / gsum;
            vn = veq + (vn - veq) * exp(-gsum * pr[LIF_DT_OVER_C]);
        } else {
            r -= 1;
        }
        const double mu = pr[LIF_OU_MU] * gain[4 * N + n];
        ibg = mu + (ibg - mu) * pr[LIF_OU_DECAY] + pr[LIF_OU_NOISE] * z;
        double x_e = in(((int64_t)s * 2 + 0) * N + n);
        const double x_i = in(((int64_t)s * 2 + 1) * N + n);
        if (pr[LIF_POISSON_LAM] > 0.0) {
            // external spikes arrive like synaptic excitatory input: both AMPA and NMDA jump (one uniform per
            // (gid, step) from the POISSON stream, as for iaf_psc_exp; no draw without a drive)
            const Words wp = draw(p0, p1, (uint64_t)gids[n], (uint64_t)t);
            const int64_t k = poisson_from_table(cdf, cdf_size, pr[LIF_POISSON_LAM], u01_53(wp.w0, wp.w1));
            x_e += (double)k * pr[LIF_W_EXT];
        }
        ja = ja * pr[LIF_D_AMPA] + x_e;
        jn = jn * pr[LIF_D_NMDA] + x_e;
        jga = jga * pr[LIF_D_GABA_A] + x_i;
        jgb = jgb * pr[LIF_D_GABA_B] + x_i;
        if (vn >= pr[LIF_V_TH_MV]) {
            r = (int32_t)pr[LIF_REF_STEPS];
            vn = pr[LIF_V_RESET_MV];
            mask |= (uint64_t)1 << s;
        }
    }
    v[n] = vn;
    j[n] = ja;
    j[N + n] = jn;
    j[2 * N + n] = jga;
    j[3 * N + n] = jgb;
    i_bg[n] = ibg;
    ref[n] = r;
    return mask;
}

}  // namespace dtb
