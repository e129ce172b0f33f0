"""What every ``numba-cuda`` kernel file shares: the array module, the dtype of the constants, the launch.

Memory. CuPy owns every array of this backend (``get_backend().xp`` is ``cupy``): the model and the
kernels' wrappers allocate with ``xp.empty``/``xp.zeros``. A ``@cuda.jit`` kernel reads and writes
those arrays in place through ``__cuda_array_interface__`` (CAI): :func:`device` wraps a CuPy array as
a Numba device array that is a *view* of the same memory, no copy. The GEMMs of the conv and the
small reductions that are not kernels here (``.sum()``) stay CuPy calls on the same arrays.

Streams. CuPy queues its work on its current stream; :func:`launch` queues each kernel on that same
stream (``cuda.external_stream``), so kernels and CuPy calls run in program order without the host
waiting. ``as_cuda_array(..., sync=False)``: with ``sync=True`` Numba would synchronise the array's
stream, i.e. block the host, on every launch.

Simulator. Under ``NUMBA_ENABLE_CUDASIM=1`` (set before ``numba.cuda`` is first imported) Numba runs
every kernel in Python on the CPU, one Python thread per CUDA thread, on NumPy arrays: the backend's
``xp`` is then ``numpy`` and the same wrappers run unchanged. It checks indexing, the per-thread
logic, shared memory and ``syncthreads`` (a missed barrier deadlocks or races there too), but it is
slow (about 1 ms per thread), so its tests use tiny inputs.

Dtypes. Numba compiles a kernel once per argument dtype. Inside a kernel, a Python literal such as
``0.5`` is a float64, and an int64 mixed with a float32 also gives a float64 (NumPy's promotion), which
would silently turn float32 arithmetic into float64. So every kernel file builds its kernels per dtype
(``_kernels(dtype)``, cached) with ``T = np.float32`` or ``np.float64`` in scope: constants are
``T(0.5)`` and integer-to-float conversions are ``T(i)``, exactly as the NumPy reference casts them.
"""
from __future__ import annotations

import warnings

import numpy as np
from numba import config, cuda

__all__ = ["SIMULATED", "THREADS", "array_module", "device", "launch", "launch_blocks",
           "numba_dtype", "unfused_multiply"]

#: True under NUMBA_ENABLE_CUDASIM=1: kernels run in Numba's CUDA simulator, on NumPy arrays
SIMULATED = bool(config.ENABLE_CUDASIM)

#: threads per block of the one-thread-per-output kernels
THREADS = 128

_streams: dict = {}

# Numba warns on every launch of fewer than 128 blocks ("low occupancy"). Small grids are normal here
# (a few RoIs, a loss over 512 rows) and the warning would flood a training log, so it is silenced;
# only that message.
warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU under-utilization")


def array_module():
    """The backend's array module: ``cupy`` on a GPU, ``numpy`` under the simulator."""
    from ...backend import loaded_backend
    return loaded_backend("numba-cuda").xp


def numba_dtype(dtype):
    """The Numba scalar type of a NumPy dtype (for ``cuda.shared.array``)."""
    from numba import from_dtype
    return from_dtype(np.dtype(dtype))


def unfused_multiply(dtype):
    """``mul(a, b) = a * b``, rounded on its own, for kernels that must round like the reference.

    NVVM, like nvcc, contracts ``a * b + c`` into one fused multiply-add (FMA) by default: one
    rounding instead of two. That is usually welcome, but an IoU compared with a threshold must be
    rounded exactly as the reference rounds it, or a box whose IoU sits at the threshold can flip.
    libdevice's ``fmul_rn``/``dmul_rn`` (CUDA's ``__fmul_rn``) are multiplications the compiler never
    fuses. The simulator has no libdevice; NumPy's own ``a * b`` is never fused there."""
    if SIMULATED:
        @cuda.jit(device=True)
        def mul(a, b):
            return a * b
        return mul
    from numba.cuda import libdevice
    return libdevice.fmul_rn if np.dtype(dtype) == np.float32 else libdevice.dmul_rn


def _stream():
    """CuPy's current stream, as a Numba stream (None under the simulator)."""
    if SIMULATED:
        return None
    import cupy
    ptr = cupy.cuda.get_current_stream().ptr
    if ptr == 0:                                 # CuPy's null stream is the legacy default stream
        return cuda.default_stream()
    if ptr not in _streams:
        _streams[ptr] = cuda.external_stream(ptr)
    return _streams[ptr]


def device(a):
    """A Numba view of a CuPy array (no copy); NumPy arrays (simulator) and scalars pass through."""
    if SIMULATED or not hasattr(a, "__cuda_array_interface__"):
        return a
    return cuda.as_cuda_array(a, sync=False)


def launch_blocks(kernel, blocks, threads, *args):
    """``kernel[blocks, threads](*args)`` on CuPy's current stream (``blocks``, ``threads``: an int or
    a tuple); nothing when there are no blocks (a grid of zero blocks is a CUDA error)."""
    if min(np.atleast_1d(blocks)) <= 0:
        return
    args = [device(a) for a in args]
    if SIMULATED:
        kernel[blocks, threads](*args)
    else:
        kernel[blocks, threads, _stream()](*args)


def launch(kernel, n: int, *args, threads: int = THREADS):
    """Launch ``kernel`` with at least ``n`` threads, one per output element (the kernel returns early
    for ``i >= n``); nothing when ``n == 0`` (a grid of zero blocks is a CUDA error)."""
    launch_blocks(kernel, (n + threads - 1) // threads, threads, *args)
