"""Loading ``kernels/*.cu`` into CuPy: one ``cupy.RawModule`` per (source file, dtype), compiled by
NVRTC on first use and cached (in this process here, on disk by CuPy).

Each ``.cu`` file defines its kernels as C++ templates over the scalar type ``T``; the module for
float32 is compiled with the name expressions ``roi_align_forward<float>``, ... and the one for
float64 with ``<double>``, so one source serves both dtypes. :data:`KERNELS` lists every kernel of
every file; the PTX test (``tests/test_cuda_ptx.py``) instantiates the same list with nvcc.

This module imports CuPy lazily, so it can be imported (for :data:`KERNELS`, :func:`source`) on a
machine without CuPy.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

__all__ = ["KERNELS", "OPTIONS", "THREADS", "kernels_dir", "source", "name_expressions", "function",
           "clear_cache", "blocks_for", "scalar", "launch"]

#: every kernel of each source file, as C++ name expressions; ``<T>`` stands for float or double.
#: Names without ``<T>`` are ``extern "C"`` kernels that do not depend on the dtype.
KERNELS: dict[str, tuple[str, ...]] = {
    "roi_align.cu": ("roi_align_forward<T>", "roi_align_backward<T>"),
    "roi_pool.cu": ("roi_pool_forward<T>", "roi_pool_backward<T>"),
    "nms.cu": ("nms_mask<T>", "nms_greedy"),
    "conv.cu": ("im2col<T>", "col2im<T>"),
    "norm.cu": ("group_norm_forward<T>", "group_norm_backward_params<T>",
                "group_norm_backward_input<T>"),
    "pool.cu": ("max_pool2d_forward<T>", "max_pool2d_backward<T>"),
    "losses.cu": ("softmax_cross_entropy_forward<T>", "softmax_cross_entropy_backward<T>",
                  "smooth_l1_forward<T>", "smooth_l1_backward<T>", "sigmoid_bce_forward<T>",
                  "sigmoid_bce_backward<T>"),
    "paste.cu": ("paste_masks<T>",),
}

#: C++ scalar type of each float dtype
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

#: NVRTC options. --fmad=false: no fused multiply-add contraction, so every product and sum is
#: rounded on its own, as NumPy rounds it. That keeps results equal to the reference's at the
#: discontinuities (an RoIAlign sample at exactly -1 or H, an NMS IoU exactly at the threshold),
#: where one bit of difference would change which branch is taken.
OPTIONS = ("--fmad=false",)

#: threads per block: 8 warps, a good default on an H100 for these memory-bound kernels, and the
#: size the shared-memory reductions are written for (MR_MAX_BLOCK in mrcnn_common.cuh)
THREADS = 256
#: upper bound on blocks per launch; the kernels' grid-stride loops cover anything bigger
MAX_BLOCKS = 65535

_INCLUDE = re.compile(r'^\s*#include\s+"(mrcnn_common\.cuh)"\s*$', re.M)


def kernels_dir() -> Path:
    """The folder with the ``.cu`` files: ``$MRCNN_KERNELS_DIR``, else ``kernels/`` at the root of the
    repository this package sits in (the package is installed in editable mode)."""
    env = os.environ.get("MRCNN_KERNELS_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [here.parents[2] / "kernels", here.parents[3] / "kernels"]
    for d in candidates:
        if (d / "mrcnn_common.cuh").is_file():
            return d
    raise FileNotFoundError(
        "the cupy backend's CUDA sources (kernels/*.cu) were not found; looked in "
        + ", ".join(str(d) for d in candidates)
        + ". Install mrcnn-np in editable mode from its repository (pip install -e .), or set "
          "MRCNN_KERNELS_DIR to the repository's kernels/ folder")


def source(filename: str) -> str:
    """The text of ``kernels/<filename>`` with ``#include "mrcnn_common.cuh"`` replaced by that file's
    text. Pasting it in (instead of passing -I to NVRTC) makes the header part of the code that
    CuPy hashes for its on-disk kernel cache, so an edit to the header is never served stale."""
    d = kernels_dir()
    text = (d / filename).read_text()
    def header(m):   # its text, less "#pragma once" (a warning in a main file)
        return re.sub(r"^#pragma once\s*$", "", (d / m.group(1)).read_text(), flags=re.M)
    return _INCLUDE.sub(header, text)


def name_expressions(filename: str, dtype) -> list[str]:
    """The C++ name expressions of ``filename``'s template kernels for ``dtype``."""
    ctype = CTYPES[np.dtype(dtype)]
    return [k.replace("<T>", f"<{ctype}>") for k in KERNELS[filename] if "<T>" in k]


@functools.lru_cache(maxsize=None)
def _module(filename: str, dtype_name: str):
    import cupy
    return cupy.RawModule(code=source(filename), options=OPTIONS,
                          name_expressions=tuple(name_expressions(filename, dtype_name)))


def function(filename: str, kernel: str, dtype):
    """The compiled kernel ``kernel`` (e.g. ``"roi_align_forward"``) of ``filename`` for ``dtype``."""
    dt = np.dtype(dtype)
    if dt not in CTYPES:
        raise TypeError(f"{kernel}: the CUDA kernels take float32 or float64, got {dt}")
    return _function(filename, kernel, dt.name)


@functools.lru_cache(maxsize=None)
def _function(filename: str, kernel: str, dtype_name: str):
    # cached: RawModule.get_function builds a new RawKernel object on every call
    mod = _module(filename, dtype_name)
    if f"{kernel}<T>" in KERNELS[filename]:
        return mod.get_function(f"{kernel}<{CTYPES[np.dtype(dtype_name)]}>")
    return mod.get_function(kernel)                      # extern "C", dtype-independent


def clear_cache() -> None:
    """Forget the compiled modules (CuPy keeps its own on-disk cache; the tests swap CuPy out)."""
    _function.cache_clear()
    _module.cache_clear()


def blocks_for(total: int, threads: int = THREADS) -> int:
    """Blocks for ``total`` work items at ``threads`` per block (at least 1, at most MAX_BLOCKS)."""
    return max(1, min((int(total) + threads - 1) // threads, MAX_BLOCKS))


def scalar(dtype, value):
    """``value`` as a NumPy scalar of ``dtype``: CuPy passes a kernel argument with the C type of
    the NumPy scalar it gets, so every scalar is typed explicitly (int -> np.int32 for ``int``)."""
    return np.dtype(dtype).type(value)


def launch(fn, total: int, args, threads: int = THREADS) -> None:
    """Launch ``fn`` over ``total`` items with a grid-stride grid; nothing to do when ``total == 0``."""
    if total <= 0:
        return
    fn((blocks_for(total, threads),), (threads,), tuple(args))
