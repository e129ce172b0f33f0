"""RoIAlign forward and backward as Numba CPU kernels (reference: :mod:`mrcnn_np.ops.roi_align`).

The math is the reference's docstring, line for line (torchvision's C++ kernel): per RoI the start,
bin size and samples per bin ``g`` of each axis; per sample the two bilinear corners and weights
(``1/g`` and the "beyond [-1, size] gives 0" test folded in); per output bin the weighted sum of
``4 g_h g_w`` corner values.

How it is shaped:

1. ``_axis_samples`` builds, per axis, the table the reference's ``_axis_samples`` builds:
   corner indices ``idx (R, pooled, G, 2)`` and weights ``w (R, pooled, G, 2)`` (``G`` = the largest
   ``g``; rows past a RoI's own ``g`` are unused). It runs in the features' dtype, with the
   reference's order of operations, so the sample points are the same numbers. It is O(R * pooled * G)
   work, so it runs serially (no fork/join).
2. Forward, parallel over ``(RoI, output row)``: each task owns its output row, so no two threads
   write the same number. The features are read from an NHWC copy, so every corner is one contiguous
   run of C channels (the inner loop vectorises).
3. Backward is a scatter (several bins share a corner). No sort, no atomics: the RoIs are split into
   one contiguous slice per thread, each thread adds into its *own* NHWC gradient buffer, and a
   second parallel loop (over pixels) sums the per-thread buffers. The extra memory is
   ``threads x`` one feature map, which is small next to the RoI work.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from mrcnn_np.dispatch import register
from mrcnn_np.ops.roi_align import _check_args

from ._jit import kernel, num_threads, serial


@serial
def _axis_samples(start, bin_size, grid, pooled, size, gmax):
    """start, bin_size: (R,) float; grid: (R,) int64 samples per bin. Returns ``idx`` (R, pooled,
    gmax, 2) int64 corners ``(lo, hi)`` and ``w`` (same shape) their weights ``(h, l) / g``."""
    T = start.dtype.type
    r_n = start.shape[0]
    idx = np.zeros((r_n, pooled, gmax, 2), dtype=np.int64)
    w = np.zeros((r_n, pooled, gmax, 2), dtype=start.dtype)
    for r in range(r_n):
        g = grid[r]
        for p in range(pooled):
            for i in range(g):
                # sample i of bin p:  start + p * bin + (i + 0.5) * bin / g
                coord = start[r] + T(p) * bin_size[r] + (T(i) + T(0.5)) * bin_size[r] / T(g)
                if coord < T(-1.0) or coord > T(size):       # beyond the map: contributes 0
                    continue
                c = max(coord, T(0))
                lo = np.int64(np.floor(c))
                if lo >= size - 1:                           # clamp at the far border
                    lo_, hi_, frac = size - 1, size - 1, T(0)
                else:
                    lo_, hi_, frac = lo, lo + 1, T(c - T(lo))
                scale = T(1) / T(g)
                idx[r, p, i, 0], idx[r, p, i, 1] = lo_, hi_
                w[r, p, i, 0], w[r, p, i, 1] = (T(1) - frac) * scale, frac * scale
    return idx, w


@kernel
def _forward(fmap, bidx, gh, gw, iy, wy, ix, wx, out):
    """fmap (N, H, W, C); tables from :func:`_axis_samples`; writes out (R, C, out_h, out_w)."""
    c_n = fmap.shape[3]
    r_n, _, out_h, out_w = out.shape
    for task in prange(r_n * out_h):
        r, ph = task // out_h, task % out_h
        b = bidx[r]
        acc = np.empty(c_n, dtype=fmap.dtype)
        for pw in range(out_w):
            acc[:] = 0
            for i in range(gh[r]):
                y_lo, y_hi = iy[r, ph, i, 0], iy[r, ph, i, 1]
                hy, ly = wy[r, ph, i, 0], wy[r, ph, i, 1]
                for j in range(gw[r]):
                    x_lo, x_hi = ix[r, pw, j, 0], ix[r, pw, j, 1]
                    hx, lx = wx[r, pw, j, 0], wx[r, pw, j, 1]
                    w1, w2, w3, w4 = hy * hx, hy * lx, ly * hx, ly * lx
                    for ch in range(c_n):
                        acc[ch] += (w1 * fmap[b, y_lo, x_lo, ch] + w2 * fmap[b, y_lo, x_hi, ch]
                                    + w3 * fmap[b, y_hi, x_lo, ch] + w4 * fmap[b, y_hi, x_hi, ch])
            for ch in range(c_n):
                out[r, ch, ph, pw] = acc[ch]


@kernel
def _backward(dout, bidx, gh, gw, iy, wy, ix, wx, n, h, w, threads):
    """dout (R, C, out_h, out_w) -> dfmap (N, H, W, C): per-thread buffers, then their sum."""
    r_n, c_n, out_h, out_w = dout.shape
    buf = np.zeros((threads, n, h, w, c_n), dtype=dout.dtype)
    per = (r_n + threads - 1) // threads
    for t in prange(threads):                       # thread t scatters RoIs [t*per, (t+1)*per)
        d = np.empty(c_n, dtype=dout.dtype)
        for r in range(t * per, min(r_n, (t + 1) * per)):
            b = bidx[r]
            for ph in range(out_h):
                for pw in range(out_w):
                    for ch in range(c_n):           # gather this bin's gradient once (C,)
                        d[ch] = dout[r, ch, ph, pw]
                    for i in range(gh[r]):
                        y_lo, y_hi = iy[r, ph, i, 0], iy[r, ph, i, 1]
                        hy, ly = wy[r, ph, i, 0], wy[r, ph, i, 1]
                        for j in range(gw[r]):
                            x_lo, x_hi = ix[r, pw, j, 0], ix[r, pw, j, 1]
                            hx, lx = wx[r, pw, j, 0], wx[r, pw, j, 1]
                            w1, w2, w3, w4 = hy * hx, hy * lx, ly * hx, ly * lx
                            for ch in range(c_n):
                                buf[t, b, y_lo, x_lo, ch] += w1 * d[ch]
                                buf[t, b, y_lo, x_hi, ch] += w2 * d[ch]
                                buf[t, b, y_hi, x_lo, ch] += w3 * d[ch]
                                buf[t, b, y_hi, x_hi, ch] += w4 * d[ch]
    out = np.empty((n, h, w, c_n), dtype=dout.dtype)
    flat_buf = buf.reshape(threads, n * h * w, c_n)
    flat_out = out.reshape(n * h * w, c_n)
    for k in prange(n * h * w):                      # reduction over the threads' buffers
        for ch in range(c_n):
            s = flat_buf[0, k, ch]
            for t in range(1, threads):
                s += flat_buf[t, k, ch]
            flat_out[k, ch] = s
    return out


def _roi_params(features, rois, out_h, out_w, spatial_scale, sampling_ratio, aligned):
    """Per RoI and axis: start, bin size and samples per bin, exactly as the reference's ``_plan``
    computes them (O(R) NumPy; the per-sample work is in the kernels)."""
    dt = features.dtype
    boxes = rois[:, 1:].astype(dt) * dt.type(spatial_scale)
    offset = dt.type(0.5) if aligned else dt.type(0)
    x0, y0 = boxes[:, 0] - offset, boxes[:, 1] - offset
    roi_w, roi_h = boxes[:, 2] - offset - x0, boxes[:, 3] - offset - y0
    if not aligned:                                             # legacy: force RoIs to >= 1 cell
        roi_w, roi_h = np.maximum(roi_w, 1), np.maximum(roi_h, 1)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    if sampling_ratio > 0:
        gh = np.full(rois.shape[0], sampling_ratio, dtype=np.int64)
        gw = gh.copy()
    else:
        gh = np.ceil(roi_h / out_h).astype(np.int64)
        gw = np.ceil(roi_w / out_w).astype(np.int64)
    return y0, bin_h, gh, x0, bin_w, gw


@register("numba", "roi_align_forward", any_layout=True)
def roi_align_forward(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    bidx, out_h, out_w = _check_args(features, rois, output_size, spatial_scale, sampling_ratio)
    n, c, h, w = features.shape
    # NHWC rows (free when features is an NCHW view of an NHWC buffer, as conv outputs are)
    fmap = np.ascontiguousarray(features.transpose(0, 2, 3, 1))
    rois = np.ascontiguousarray(rois)
    y0, bin_h, gh, x0, bin_w, gw = _roi_params(features, rois, out_h, out_w, spatial_scale,
                                               sampling_ratio, aligned)
    r = rois.shape[0]
    gmax_h = int(gh.max(initial=1)) if r else 1
    gmax_w = int(gw.max(initial=1)) if r else 1
    iy, wy = _axis_samples(y0, bin_h, gh, out_h, h, max(gmax_h, 1))
    ix, wx = _axis_samples(x0, bin_w, gw, out_w, w, max(gmax_w, 1))
    out = np.zeros((r, c, out_h, out_w), dtype=features.dtype)
    if r:
        _forward(fmap, bidx, gh, gw, iy, wy, ix, wx, out)
    return out, (bidx, gh, gw, iy, wy, ix, wx, features.shape, features.dtype)


@register("numba", "roi_align_backward")
def roi_align_backward(dout, cache):
    bidx, gh, gw, iy, wy, ix, wx, (n, c, h, w), dt = cache
    dout = np.ascontiguousarray(dout, dtype=dt)
    if bidx.shape[0] == 0:
        return np.zeros((n, c, h, w), dtype=dt)
    threads = max(1, min(num_threads(), bidx.shape[0]))
    dfmap = _backward(dout, bidx, gh, gw, iy, wy, ix, wx, n, h, w, threads)
    return dfmap.transpose(0, 3, 1, 2)                          # (N, C, H, W) view of NHWC
