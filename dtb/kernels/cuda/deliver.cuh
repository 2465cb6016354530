// Delivery of one pending spike into the epoch's input, and the fixed-point arithmetic that
// makes the GPU's sums independent of the order in which threads add.
//
// cpu.deliver adds float32 weights in a fixed order; threads on a GPU add in any order, so the
// device accumulates weight * 2**32, rounded to int64, with integer atomics (associative: the
// same bits for any order, any number of ranks) and converts once per epoch. The result is the
// exact sum of the rounded weights, which can differ from the CPU's sequential float32 sum in
// the last bits of float32: GPU and CPU spikes agree statistically, not bitwise.
#pragma once

#include "rng.cuh"

namespace dtb {

#define DTB_FIXED_SCALE 4294967296.0  // 2**32

DTB_HD int64_t to_fixed(float w) { return (int64_t)llrint((double)w * DTB_FIXED_SCALE); }

DTB_HD float from_fixed(int64_t x) { return (float)((double)x * (1.0 / DTB_FIXED_SCALE)); }

// Deliver the rows of one pending spike (slot, emission step t, next row r) that arrive in the epoch
// [e0, e0 + m) into acc (m, 2, N) int64 fixed point; lanes lane, lane + lanes, ... share each row's
// synapses. A synapse word post[q] holds the target in its low post_bits bits and, when
// post_bits < 32, the index of its weight in weight_table above them; else the weight is weight[q]
// (dtb.network.LocalNetwork). Returns the next row still to deliver (the slot's end when none is left).
DTB_HD int64_t deliver_spike(int64_t e0, int m, int64_t slot, int64_t t, int64_t r, const int64_t *slot_row_ptr,
                             const int64_t *row_ptr, const uint16_t *row_delay, const uint32_t *post, int post_bits,
                             const float *weight, const float *weight_table, const uint8_t *slot_receptor, int64_t N,
                             unsigned long long *acc, int lane, int lanes) {
    const int64_t end = e0 + m;
    const int64_t r_end = slot_row_ptr[slot + 1];
    const int64_t rc = slot_receptor[slot];
    const bool coded = post_bits < 32;
    const uint32_t target_mask = coded ? (1u << post_bits) - 1u : 0xffffffffu;
    for (; r < r_end; ++r) {
        const int64_t arrival = t + (int64_t)row_delay[r];
        if (arrival >= end) break;
        unsigned long long *cell = acc + ((arrival - e0) * 2 + rc) * N;
        for (int64_t q = row_ptr[r] + lane; q < row_ptr[r + 1]; q += lanes) {
            const uint32_t word = post[q];
            const float w = coded ? weight_table[word >> post_bits] : weight[q];
            const unsigned long long x = (unsigned long long)to_fixed(w);
#if defined(__CUDA_ARCH__)
            atomicAdd(cell + (word & target_mask), x);
#else
            cell[word & target_mask] += x;
#endif
        }
    }
    return r;
}

}  // namespace dtb
