// mrcnn_common.cuh -- what every kernel file shares: the scalar math for float and double, the
// grid-stride loop and the block reduction.
//
// Every .cu here is one source for three compilers:
//   * NVRTC, through CuPy (mrcnn_np/backends/cupy/_module.py pastes this file in place of its
//     #include line, so CuPy's kernel cache sees any change to it);
//   * nvcc -ptx (tests/test_cuda_ptx.py);
//   * g++ -DMRCNN_CPU_EMU with cuda_cpu_emu.h (tests/test_cuda_kernels_cpu.py).
// So nothing here may include a host header unless MRCNN_CPU_EMU is defined.
#pragma once
#ifdef MRCNN_CPU_EMU
#include "cuda_cpu_emu.h"
#endif

// Flat indices over whole tensors are 64-bit: R * C * out_h * out_w can pass 2^31 on big batches.
typedef long long index_t;

// Grid-stride loop: any grid size covers any n, so the launcher can cap the grid (and the CPU
// emulation can run with a tiny grid and still visit every element).
#define MR_GRID_STRIDE_LOOP(i, n)                                                        \
    for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < (index_t)(n);   \
         i += (index_t)blockDim.x * gridDim.x)

// ---- one name per math function for float and double, so a template <typename T> kernel reads
// like the NumPy reference (floorf vs floor would otherwise leak the scalar type into the code) ----
__device__ __forceinline__ float mr_floor(float x) { return floorf(x); }
__device__ __forceinline__ double mr_floor(double x) { return floor(x); }
__device__ __forceinline__ float mr_ceil(float x) { return ceilf(x); }
__device__ __forceinline__ double mr_ceil(double x) { return ceil(x); }
__device__ __forceinline__ float mr_round(float x) { return roundf(x); }      // half away from 0
__device__ __forceinline__ double mr_round(double x) { return round(x); }
__device__ __forceinline__ float mr_exp(float x) { return expf(x); }
__device__ __forceinline__ double mr_exp(double x) { return exp(x); }
__device__ __forceinline__ float mr_log(float x) { return logf(x); }
__device__ __forceinline__ double mr_log(double x) { return log(x); }
__device__ __forceinline__ float mr_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double mr_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float mr_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double mr_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float mr_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double mr_abs(double x) { return fabs(x); }

// max/min written out (not fmaxf): NumPy's maximum(x, 0) and these agree for every non-NaN input.
template <typename T> __device__ __forceinline__ T mr_max(T a, T b) { return a > b ? a : b; }
template <typename T> __device__ __forceinline__ T mr_min(T a, T b) { return a < b ? a : b; }

template <typename T> __device__ __forceinline__ T mr_inf();
template <> __device__ __forceinline__ float mr_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double mr_inf<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

// Sum of one value per thread over the block; every thread gets the total.
// `smem` must hold blockDim.x values, and blockDim.x must be a power of two (the launchers use 256).
// A tree: at each step the lower half adds the upper half; __syncthreads between steps because a
// thread reads what another thread wrote in the step before.
#define MR_MAX_BLOCK 256
template <typename T>
__device__ __forceinline__ T mr_block_sum(T v, T* smem) {
    const unsigned tid = threadIdx.x;
    smem[tid] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) smem[tid] += smem[tid + s];
        __syncthreads();
    }
    T total = smem[0];
    __syncthreads();          // nobody may overwrite smem (a next reduction) before all have read it
    return total;
}
