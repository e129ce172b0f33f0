"""RoIPool as ``@cuda.jit`` kernels: one thread per output number ``out[r, c, ph, pw]``.

Reference: :mod:`mrcnn_np.ops.roi_pool` (semantics of ``torchvision.ops.roi_pool``)::

    x_start = round(x1 * spatial_scale), x_end = round(x2 * spatial_scale)   (half away from zero)
    roi_w = max(x_end - x_start + 1, 1), bin_w = roi_w / out_w
    bin q covers columns [floor(q bin_w), ceil((q + 1) bin_w)) + x_start, clipped to [0, W]
    out = max over the bin (0 for an empty bin); the FIRST max in row-major order wins

The forward keeps, per output, the flat NCHW index of the cell that held the max (-1 for an empty
bin); the backward adds ``dout`` there. Bins of one RoI do not overlap, but the bins of different RoIs
do, so the backward's scatter uses ``cuda.atomic.add``.
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ...dispatch import register
from ...ops._check import pair
from ._launch import array_module, launch

__all__ = ["roi_pool_forward", "roi_pool_backward"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"
    ZERO, HALF = T(0), T(0.5)

    @cuda.jit(device=True)
    def round_half_away(v):
        """C's ``round``: half away from zero (reference: ``_round_half_away``), as an int."""
        a = int(math.floor(abs(v) + HALF))
        return -a if v < ZERO else a

    @cuda.jit(device=True)
    def bin_edges(start, end, p, pooled, size):
        """Bin ``p`` of ``pooled`` over the quantised ``[start, end]``: ``[lo, hi)`` clipped to
        ``[0, size]`` (reference: ``_bin_edges``; its bin size is a float64 there too)."""
        extent = max(end - start + 1, 1)
        bin_size = extent / pooled               # int / int: a float64, as in the reference
        lo = int(math.floor(p * bin_size)) + start
        hi = int(math.ceil((p + 1) * bin_size)) + start
        return min(max(lo, 0), size), min(max(hi, 0), size)

    @cuda.jit
    def forward(features, rois, spatial_scale, out, argmax):
        _, n_c, h, w = features.shape
        out_h, out_w = out.shape[2], out.shape[3]
        i = cuda.grid(1)
        if i >= out.size:
            return
        pw = i % out_w                           # i = ((r * C + c) * out_h + ph) * out_w + pw
        ph = (i // out_w) % out_h
        c = (i // (out_w * out_h)) % n_c
        r = i // (out_w * out_h * n_c)
        b = int(rois[r, 0])
        x_start = round_half_away(rois[r, 1] * spatial_scale)     # 1st quantisation
        y_start = round_half_away(rois[r, 2] * spatial_scale)
        x_end = round_half_away(rois[r, 3] * spatial_scale)
        y_end = round_half_away(rois[r, 4] * spatial_scale)
        y_lo, y_hi = bin_edges(y_start, y_end, ph, out_h, h)     # 2nd quantisation
        x_lo, x_hi = bin_edges(x_start, x_end, pw, out_w, w)
        best = ZERO                              # an empty bin gives 0 and no argmax
        arg = -1
        for y in range(y_lo, y_hi):              # row-major; strict '>' keeps the first max
            for x in range(x_lo, x_hi):
                v = features[b, c, y, x]
                if arg < 0 or v > best:
                    best = v
                    arg = ((b * n_c + c) * h + y) * w + x
        out[r, c, ph, pw] = best
        argmax[r, c, ph, pw] = arg

    @cuda.jit
    def backward(dout, argmax, dfeatures_flat):
        i = cuda.grid(1)
        if i >= dout.size:
            return
        out_w, out_h, n_c = dout.shape[3], dout.shape[2], dout.shape[1]
        pw = i % out_w
        ph = (i // out_w) % out_h
        c = (i // (out_w * out_h)) % n_c
        r = i // (out_w * out_h * n_c)
        k = argmax[r, c, ph, pw]
        if k >= 0:
            # NOTE: atomic, because bins of other RoIs may have their max in the same cell
            cuda.atomic.add(dfeatures_flat, k, dout[r, c, ph, pw])

    return SimpleNamespace(forward=forward, backward=backward)


@register("numba-cuda", "roi_pool_forward")
def roi_pool_forward(features, rois, output_size, spatial_scale):
    """Same arguments and result as :func:`mrcnn_np.ops.roi_pool.roi_pool_forward`."""
    xp = array_module()
    out_h, out_w = pair("output_size", output_size)
    shape = (rois.shape[0], features.shape[1], out_h, out_w)
    out = xp.empty(shape, dtype=features.dtype)
    argmax = xp.empty(shape, dtype=xp.int64)     # flat NCHW index of each max, -1 for an empty bin
    launch(_kernels(features.dtype).forward, out.size, features, rois,
           features.dtype.type(spatial_scale), out, argmax)
    return out, (argmax, features.shape, features.dtype)


@register("numba-cuda", "roi_pool_backward")
def roi_pool_backward(dout, cache):
    """dout: (R, C, out_h, out_w) -> ``dfeatures`` (N, C, H, W)."""
    argmax, shape, dtype = cache
    xp = array_module()
    dout = dout.astype(dtype, copy=False)
    dflat = xp.zeros(int(np.prod(shape)), dtype=dtype)
    launch(_kernels(dtype).backward, dout.size, dout, argmax, dflat)
    return dflat.reshape(shape)
