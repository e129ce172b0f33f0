"""Keep freed memory for reuse: the NumPy counterpart of PyTorch's caching allocator.

A training step allocates and frees the same large buffers (im2col matrices, activations) every
iteration. glibc hands blocks above its mmap threshold straight back to the kernel on ``free``, so the
next step page-faults them in again, zero-filled: for a 3x3 conv at demo size that costs as much as
the GEMM itself. :func:`keep_freed_memory` raises the mmap threshold to glibc's maximum (32 MiB on
64-bit) and stops heap trimming, so freed blocks are reused instead. It changes speed, never results,
and only applies to the process that calls it (the CLI and the benchmarks do; importing the library
does not). Elsewhere than glibc it does nothing and returns False.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024       # glibc rejects more than HEAP_MAX_SIZE / 2 on 64-bit
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks up to 32 MiB in the heap; True if it agreed."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
