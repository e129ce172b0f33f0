"""RoIAlign as ``@cuda.jit`` kernels: one thread per output number ``out[r, c, ph, pw]``.

Reference: :mod:`mrcnn_np.ops.roi_align` (its docstring has the equations; the semantics are those of
``torchvision.ops.roi_align``'s kernel). The reference vectorises over RoIs and gathers channel vectors;
here each thread walks its own bin's ``g_h x g_w`` samples, the way torchvision's CUDA kernel does:

    forward   out[r, c, ph, pw] = 1/(g_h g_w) sum_{iy, ix} bilinear(F[b, c], y(ph, iy), x(pw, ix))
    backward  each sample sends dout * (its bilinear weight) / (g_h g_w) to its four corners

The backward scatters: neighbouring bins (and overlapping RoIs) share corners, so several threads add to
the same ``dfeatures`` cell at once. ``cuda.atomic.add`` makes each of those read-modify-writes
indivisible (float64 atomics need compute capability >= 6.0). The order of the additions is not fixed,
so float32 gradients can differ from run to run in the last bits; the sum is the same.
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

__all__ = ["roi_align_forward", "roi_align_backward"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # np.float32 or np.float64: see _launch.py, "Dtypes"
    ZERO, HALF, ONE = T(0), T(0.5), T(1)

    @cuda.jit(device=True)
    def roi_geometry(rois, r, spatial_scale, sampling_ratio, aligned, out_h, out_w):
        """RoI ``r`` on the map: batch index, top-left corner, bin size, samples per bin (reference:
        ``_plan``). Returns ``(b, y0, x0, bin_h, bin_w, g_h, g_w)``."""
        b = int(rois[r, 0])
        offset = HALF if aligned else ZERO       # NOTE: the half-pixel offset (aligned=True)
        x0 = rois[r, 1] * spatial_scale - offset
        y0 = rois[r, 2] * spatial_scale - offset
        roi_w = rois[r, 3] * spatial_scale - offset - x0
        roi_h = rois[r, 4] * spatial_scale - offset - y0
        if not aligned:                          # legacy: force RoIs to >= 1 cell
            roi_w = max(roi_w, ONE)
            roi_h = max(roi_h, ONE)
        bin_h = roi_h / T(out_h)
        bin_w = roi_w / T(out_w)
        if sampling_ratio > 0:
            g_h = sampling_ratio
            g_w = sampling_ratio
        else:                                    # adaptive: ceil(roi / out) samples per bin and axis
            g_h = int(math.ceil(roi_h / T(out_h)))
            g_w = int(math.ceil(roi_w / T(out_w)))
        return b, y0, x0, bin_h, bin_w, g_h, g_w

    @cuda.jit(device=True)
    def axis_corners(coord, size):
        """One axis of a bilinear sample (reference: ``_axis_samples``): ``(lo, hi, h, l)``, the two
        corner indices and their weights ``h = 1 - l``, ``l = coord - lo``; clamped at the far border."""
        c = max(coord, ZERO)
        lo = int(math.floor(c))
        if lo >= size - 1:                       # clamp at the far border: both corners = last cell
            return size - 1, size - 1, ONE, ZERO
        frac = c - T(lo)
        return lo, lo + 1, ONE - frac, frac

    @cuda.jit
    def forward(features, rois, spatial_scale, sampling_ratio, aligned, out):
        _, n_c, h, w = features.shape
        out_h, out_w = out.shape[2], out.shape[3]
        i = cuda.grid(1)
        if i >= out.size:
            return
        pw = i % out_w                           # i = ((r * C + c) * out_h + ph) * out_w + pw
        ph = (i // out_w) % out_h
        c = (i // (out_w * out_h)) % n_c
        r = i // (out_w * out_h * n_c)
        b, y0, x0, bin_h, bin_w, g_h, g_w = roi_geometry(rois, r, spatial_scale, sampling_ratio,
                                                         aligned, out_h, out_w)
        if g_h <= 0 or g_w <= 0:                 # empty RoI (aligned, zero size): output 0
            out[r, c, ph, pw] = ZERO
            return
        acc = ZERO
        for iy in range(g_h):
            y = y0 + T(ph) * bin_h + (T(iy) + HALF) * bin_h / T(g_h)
            if y < -ONE or y > T(h):             # beyond [-1, H]: this sample contributes 0
                continue
            y_lo, y_hi, hy, ly = axis_corners(y, h)
            for ix in range(g_w):
                x = x0 + T(pw) * bin_w + (T(ix) + HALF) * bin_w / T(g_w)
                if x < -ONE or x > T(w):
                    continue
                x_lo, x_hi, hx, lx = axis_corners(x, w)
                acc += (hy * hx * features[b, c, y_lo, x_lo] + hy * lx * features[b, c, y_lo, x_hi]
                        + ly * hx * features[b, c, y_hi, x_lo] + ly * lx * features[b, c, y_hi, x_hi])
        out[r, c, ph, pw] = acc / T(g_h * g_w)   # the bin's mean

    @cuda.jit
    def backward(dout, rois, spatial_scale, sampling_ratio, aligned, dfeatures):
        _, n_c, h, w = dfeatures.shape
        out_h, out_w = dout.shape[2], dout.shape[3]
        i = cuda.grid(1)
        if i >= dout.size:
            return
        pw = i % out_w
        ph = (i // out_w) % out_h
        c = (i // (out_w * out_h)) % n_c
        r = i // (out_w * out_h * n_c)
        b, y0, x0, bin_h, bin_w, g_h, g_w = roi_geometry(rois, r, spatial_scale, sampling_ratio,
                                                         aligned, out_h, out_w)
        if g_h <= 0 or g_w <= 0:
            return
        g = dout[r, c, ph, pw] / T(g_h * g_w)    # d(mean)/d(sample) = 1 / count
        for iy in range(g_h):
            y = y0 + T(ph) * bin_h + (T(iy) + HALF) * bin_h / T(g_h)
            if y < -ONE or y > T(h):
                continue
            y_lo, y_hi, hy, ly = axis_corners(y, h)
            for ix in range(g_w):
                x = x0 + T(pw) * bin_w + (T(ix) + HALF) * bin_w / T(g_w)
                if x < -ONE or x > T(w):
                    continue
                x_lo, x_hi, hx, lx = axis_corners(x, w)
                # NOTE: atomics, because other threads (neighbouring bins, other RoIs) may be adding
                # to the same four cells right now; a plain += could lose their updates.
                cuda.atomic.add(dfeatures, (b, c, y_lo, x_lo), hy * hx * g)
                cuda.atomic.add(dfeatures, (b, c, y_lo, x_hi), hy * lx * g)
                cuda.atomic.add(dfeatures, (b, c, y_hi, x_lo), ly * hx * g)
                cuda.atomic.add(dfeatures, (b, c, y_hi, x_hi), ly * lx * g)

    return SimpleNamespace(forward=forward, backward=backward)


@register("numba-cuda", "roi_align_forward")
def roi_align_forward(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Same arguments and result as :func:`mrcnn_np.ops.roi_align.roi_align_forward`."""
    xp = array_module()
    out_h, out_w = pair("output_size", output_size)
    T = features.dtype.type
    args = (T(spatial_scale), int(sampling_ratio), bool(aligned))
    out = xp.empty((rois.shape[0], features.shape[1], out_h, out_w), dtype=features.dtype)
    launch(_kernels(features.dtype).forward, out.size, features, rois, *args, out)
    return out, (rois, features.shape, args)


@register("numba-cuda", "roi_align_backward")
def roi_align_backward(dout, cache):
    """dout: (R, C, out_h, out_w) -> ``dfeatures`` (N, C, H, W)."""
    rois, shape, args = cache
    xp = array_module()
    dout = dout.astype(rois.dtype, copy=False)          # the kernel is compiled for the forward's dtype
    dfeatures = xp.zeros(shape, dtype=rois.dtype)
    launch(_kernels(rois.dtype).backward, dout.size, dout, rois, *args, dfeatures)
    return dfeatures
