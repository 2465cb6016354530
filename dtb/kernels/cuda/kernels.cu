// The GPU backend's kernels, loaded with cupy.RawModule (dtb/kernels/gpu.py): one CUDA thread per
// thread index of the bodies in kernels.cuh. Launch with at least as many threads as the body needs
// (neurons, elements, spikes, or 32 per pending spike for delivery).
#include "kernels.cuh"

#define DTB_GLOBAL(NAME, BODY, PARAMS, ARGS)                                      \
    extern "C" __global__ void NAME PARAMS {                                      \
        dtb::BODY((long long)blockIdx.x * blockDim.x + threadIdx.x, DTB_UNPACK ARGS); \
    }
#define DTB_UNPACK(...) __VA_ARGS__

DTB_KERNELS(DTB_GLOBAL)
