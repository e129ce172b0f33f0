"""kernels/cuda_cpu_emu.h itself: the grid it emulates, its barrier, and the misuses it refuses."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import numpy as np
import pytest

import cupy_on_cpu

pytestmark = pytest.mark.skipif(cupy_on_cpu.GXX is None, reason="g++ not found")

SOURCE = r'''
#include "cuda_cpu_emu.h"

// every thread records who it is
__global__ void whoami(int* out) {
    int t = (blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
    out[4 * t] = blockIdx.x; out[4 * t + 1] = blockIdx.y; out[4 * t + 2] = threadIdx.x;
    out[4 * t + 3] = blockDim.x * gridDim.x * gridDim.y;
}

// phase 1 writes, phase 2 reads a NEIGHBOUR's write: right only if the barrier holds everybody
__global__ void rotate(const int* in, int* out) {
    __shared__ int buf[64];
    const int t = threadIdx.x;
    buf[t] = in[blockIdx.x * blockDim.x + t] * 10;
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = buf[(t + 1) % blockDim.x];
}

__global__ void divergent(int* out) {
    if (threadIdx.x < 3) return;          // these skip the barrier: a bug CUDA does not allow
    __syncthreads();
    out[threadIdx.x] = 1;
}

__global__ void accumulate(float* total) { atomicAdd(total, 1.0f); }

extern "C" void run_whoami(int* out, unsigned gx, unsigned gy, unsigned bx) {
    mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] { whoami(out); });
}
extern "C" void run_rotate(const int* in, int* out, unsigned gx, unsigned bx) {
    mrcnn_emu::launch_with_barriers(dim3(gx), dim3(bx), [&] { rotate(in, out); });
}
extern "C" void run_divergent(int* out) {
    mrcnn_emu::launch_with_barriers(dim3(1), dim3(8), [&] { divergent(out); });
}
extern "C" void run_rotate_serially(const int* in, int* out) {
    mrcnn_emu::launch(dim3(1), dim3(8), [&] { rotate(in, out); });
}
extern "C" void run_accumulate(float* total, unsigned gx, unsigned bx) {
    mrcnn_emu::launch(dim3(gx), dim3(bx), [&] { accumulate(total); });
}
'''


@pytest.fixture(scope="module")
def lib():
    (lib,) = cupy_on_cpu.compile_all([SOURCE])
    return lib


def _p(a):
    return ctypes.c_void_p(a.ctypes.data)


def test_serial_launch_visits_every_block_and_thread_once(lib):
    out = np.full((3 * 2 * 5, 4), -1, np.int32)
    lib.run_whoami(_p(out), 3, 2, 5)
    expected = [(bx, by, tx, 30) for by in range(2) for bx in range(3) for tx in range(5)]
    assert [tuple(r) for r in out] == expected


def test_barrier_separates_the_phases_of_a_block(lib):
    x = np.arange(2 * 64, dtype=np.int32)
    out = np.zeros_like(x)
    lib.run_rotate(_p(x), _p(out), 2, 64)
    want = (np.roll(x.reshape(2, 64), -1, axis=1) * 10).reshape(-1)
    np.testing.assert_array_equal(out, want)


def test_atomic_add(lib):
    total = np.zeros(1, np.float32)
    lib.run_accumulate(_p(total), 4, 32)
    assert total[0] == 128


def _run_in_child(fn_name, lib_path):
    code = (f"import ctypes, numpy as np; lib = ctypes.CDLL({str(lib_path)!r}); "
            f"a = np.zeros(64, np.int32); b = np.zeros(64, np.int32); "
            f"lib.{fn_name}(*[ctypes.c_void_p(x.ctypes.data) for x in (a, b)][:"
            f"{2 if fn_name == 'run_rotate_serially' else 1}])")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_divergent_barrier_aborts_with_a_message(lib):
    r = _run_in_child("run_divergent", lib._name)
    assert r.returncode != 0 and "divergent barrier" in r.stderr


def test_syncthreads_under_the_serial_launcher_aborts_with_a_message(lib):
    r = _run_in_child("run_rotate_serially", lib._name)
    assert r.returncode != 0 and "launch_with_barriers" in r.stderr
