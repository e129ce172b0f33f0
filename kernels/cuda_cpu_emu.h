// cuda_cpu_emu.h -- just enough CUDA to compile this project's kernels with g++ and run them on the CPU.
//
// Why: CI has no GPU, but the .cu files in this folder are the code a GPU runs. Compiling the SAME
// source with g++ -DMRCNN_CPU_EMU and calling it through ctypes lets tests/test_cuda_kernels_cpu.py
// compare every kernel with the NumPy reference: index arithmetic, bounds, the grid-stride loops,
// the bit tricks of NMS and the shared-memory reductions are all exercised.
//
// How a launch is emulated (two launchers, pick the one the kernel needs):
//
//   mrcnn_emu::launch(grid, block, [&] { kernel<T>(args...); });
//       Serial. Every (block, thread) pair runs the kernel body to completion, one after another,
//       blocks in order and threads in order within a block. Only for kernels WITHOUT
//       __syncthreads (calling __syncthreads here aborts with a message, so a wrong choice is loud).
//
//   mrcnn_emu::launch_with_barriers(grid, block, [&] { kernel<T>(args...); });
//       For kernels that share data through __shared__ memory. Blocks still run one after another,
//       but the threads of one block are real std::threads, and __syncthreads is a barrier over
//       them, so the phases between barriers interleave as on a GPU.
//
// __shared__ is `static`: one copy per kernel instantiation, which is exactly "one copy per block"
// because blocks never run at the same time here.
//
// Limits -- what this emulation can NOT tell you:
//   * races: serial threads never race, so a missing atomic or a missing __syncthreads usually goes
//     unnoticed (atomicAdd is correct here, but so would be a plain +=); only review and the GPU
//     run (make test-gpu) can catch those;
//   * warp-level behaviour (shuffles, implicit warp-synchronous code): not provided, not used;
//   * speed, occupancy, shared-memory and register limits, launch-size limits;
//   * floating point: x86 SSE arithmetic is IEEE like the GPU's, and the tests compile with
//     -ffp-contract=off while CuPy compiles with --fmad=false, so both round op for op; but the
//     GPU's exp/log/sqrt may differ from glibc's in the last bit.
#pragma once
#ifndef MRCNN_CPU_EMU
#error "cuda_cpu_emu.h is only for the CPU emulation build (g++ -DMRCNN_CPU_EMU)"
#endif

#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

// ---- the CUDA keywords ------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static          // one copy per kernel; blocks run one at a time (see above)
#define __restrict__ __restrict

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in index variables. thread_local: under launch_with_barriers every std::thread has its
// own threadIdx (and sets its own copy of the others before it starts the kernel body).
inline thread_local dim3 threadIdx(0, 0, 0);
inline thread_local dim3 blockIdx(0, 0, 0);
inline thread_local dim3 blockDim(1, 1, 1);
inline thread_local dim3 gridDim(1, 1, 1);

namespace mrcnn_emu {

// A reusable barrier for the threads of one block (C++17 has no std::barrier).
class Barrier {
public:
    explicit Barrier(unsigned n) : n_(n) {}
    void wait() {
        std::unique_lock<std::mutex> lock(m_);
        const unsigned long gen = generation_;
        if (++count_ == n_) {               // the last thread to arrive releases everybody
            count_ = 0;
            ++generation_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return generation_ != gen; });
        }
    }
private:
    std::mutex m_;
    std::condition_variable cv_;
    unsigned n_, count_ = 0;
    unsigned long generation_ = 0;
};

inline thread_local Barrier* current_barrier = nullptr;   // null under the serial launcher

inline std::mutex& atomic_mutex() {
    static std::mutex m;
    return m;
}

template <class Body>
void launch(dim3 grid, dim3 block, Body&& body) {
    gridDim = grid;
    blockDim = block;
    current_barrier = nullptr;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx)
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx) {
                            blockIdx = dim3(bx, by, bz);
                            threadIdx = dim3(tx, ty, tz);
                            body();
                        }
}

template <class Body>
void launch_with_barriers(dim3 grid, dim3 block, Body&& body) {
    const unsigned nthreads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                Barrier barrier(nthreads);
                std::vector<std::thread> threads;
                threads.reserve(nthreads);
                for (unsigned t = 0; t < nthreads; ++t) {
                    threads.emplace_back([&, t, bx, by, bz] {
                        gridDim = grid;
                        blockDim = block;
                        blockIdx = dim3(bx, by, bz);
                        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        current_barrier = &barrier;
                        body();
                    });
                }
                for (auto& th : threads) th.join();   // the block is done before the next starts
            }
}

}  // namespace mrcnn_emu

// ---- the CUDA built-in functions used by the kernels -----------------------------------------------
inline void __syncthreads() {
    if (mrcnn_emu::current_barrier == nullptr) {
        std::fprintf(stderr, "cuda_cpu_emu: __syncthreads() under the serial launcher; launch this "
                             "kernel with mrcnn_emu::launch_with_barriers\n");
        std::abort();
    }
    mrcnn_emu::current_barrier->wait();
}

// atomicAdd returns the old value, as CUDA's does. The mutex makes it correct under both launchers.
template <class T>
inline T atomicAdd(T* address, T value) {
    std::lock_guard<std::mutex> lock(mrcnn_emu::atomic_mutex());
    T old = *address;
    *address = old + value;
    return old;
}

template <class T>
inline T __ldg(const T* p) { return *p; }

// bit casts (used for +inf without <cmath> on the device)
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, sizeof d); return d; }
