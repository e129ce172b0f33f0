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
//       but the threads of a block are fibers (POSIX ucontext) on this one OS thread: a thread
//       runs until it calls __syncthreads, then the next thread of the block runs, and so on; when
//       all have arrived, they are resumed in turn until the next barrier. So each phase between
//       two barriers completes for the whole block before the next starts, as on a GPU. A barrier
//       that some threads skip (they returned) aborts with a message: CUDA requires every thread
//       of a block to reach each __syncthreads.
//
// __shared__ is `static`: one copy per kernel instantiation, which is exactly "one copy per block"
// because blocks never run at the same time here.
//
// Limits -- what this emulation can NOT tell you:
//   * races: threads that run one at a time never race, so a missing atomic usually goes unnoticed
//     (atomicAdd is correct here, but so would be a plain +=), and so does a missing __syncthreads
//     whenever the scheduling happens to be favourable; only review and the GPU run
//     (make test-gpu) can catch those;
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
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
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

// The built-in index variables: plain globals, set by the launchers before they run (or resume) a
// thread. Everything runs on one OS thread, so there is one "current" thread at any time.
inline dim3 threadIdx(0, 0, 0);
inline dim3 blockIdx(0, 0, 0);
inline dim3 blockDim(1, 1, 1);
inline dim3 gridDim(1, 1, 1);

namespace mrcnn_emu {

// ---- launch: serial, for kernels without __syncthreads -------------------------------------------
template <class Body>
void launch(dim3 grid, dim3 block, Body&& body) {
    gridDim = grid;
    blockDim = block;
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

// ---- launch_with_barriers: every CUDA thread of a block is a fiber (ucontext) -------------------
// The fibers of one block run in turn on this one OS thread. A fiber runs until it calls
// __syncthreads (it then switches back to the scheduler) or returns. One "round" of the scheduler
// resumes every fiber once, so a round is exactly one phase between two barriers: every thread
// reaches barrier k before any thread gets past it, as on a GPU. No OS threads, no locks: cheap
// enough for a model's worth of launches in a test.
struct FiberBlock {
    std::vector<ucontext_t> ctx;
    std::vector<std::unique_ptr<char[]>> stacks;
    std::vector<char> done;
    ucontext_t scheduler;
    unsigned current = 0;
    std::function<void()>* body = nullptr;
};

inline FiberBlock*& current_block() {
    static FiberBlock* block = nullptr;
    return block;
}

inline void fiber_entry() {
    FiberBlock* fb = current_block();
    (*fb->body)();
    fb->done[fb->current] = 1;
    // returning switches to uc_link, the scheduler
}

template <class Body>
void launch_with_barriers(dim3 grid, dim3 block, Body&& body) {
    const unsigned n = block.x * block.y * block.z;
    const size_t stack_size = 64 * 1024;             // kernels keep a few scalars on the stack
    std::function<void()> fn = [&] { body(); };
    FiberBlock fb;
    fb.ctx.resize(n);
    for (unsigned t = 0; t < n; ++t) fb.stacks.emplace_back(new char[stack_size]);  // not zeroed
    fb.body = &fn;
    current_block() = &fb;
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3(bx, by, bz);
                fb.done.assign(n, 0);
                for (unsigned t = 0; t < n; ++t) {
                    getcontext(&fb.ctx[t]);
                    fb.ctx[t].uc_stack.ss_sp = fb.stacks[t].get();
                    fb.ctx[t].uc_stack.ss_size = stack_size;
                    fb.ctx[t].uc_link = &fb.scheduler;
                    makecontext(&fb.ctx[t], fiber_entry, 0);
                }
                unsigned remaining = n;
                while (remaining > 0) {                       // one round = one barrier phase
                    unsigned waiting = 0, finished = 0;
                    for (unsigned t = 0; t < n; ++t) {
                        if (fb.done[t]) continue;
                        fb.current = t;
                        threadIdx = dim3(t % block.x, (t / block.x) % block.y,
                                         t / (block.x * block.y));
                        swapcontext(&fb.scheduler, &fb.ctx[t]);
                        if (fb.done[t]) {
                            ++finished;
                        } else {
                            ++waiting;
                        }
                    }
                    // CUDA requires every thread of a block to reach each __syncthreads; some
                    // waiting at one while others have returned is a bug in the kernel.
                    if (waiting > 0 && finished > 0) {
                        std::fprintf(stderr, "cuda_cpu_emu: block (%u, %u, %u): %u threads wait at "
                                     "__syncthreads while %u returned (a divergent barrier)\n",
                                     bx, by, bz, waiting, finished);
                        std::abort();
                    }
                    remaining -= finished;
                }
            }
    current_block() = nullptr;
}

}  // namespace mrcnn_emu

// ---- the CUDA built-in functions used by the kernels -----------------------------------------------
inline void __syncthreads() {
    mrcnn_emu::FiberBlock* fb = mrcnn_emu::current_block();
    if (fb == nullptr) {
        std::fprintf(stderr, "cuda_cpu_emu: __syncthreads() under the serial launcher; launch this "
                             "kernel with mrcnn_emu::launch_with_barriers\n");
        std::abort();
    }
    swapcontext(&fb->ctx[fb->current], &fb->scheduler);   // back to the scheduler until next round
}

// atomicAdd returns the old value, as CUDA's does. Everything runs on one OS thread (threads one
// after another, or fibers that switch only at __syncthreads), so a plain read-modify-write is atomic.
template <class T>
inline T atomicAdd(T* address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}

template <class T>
inline T __ldg(const T* p) { return *p; }

// bit casts (used for +inf without <cmath> on the device)
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, sizeof d); return d; }
