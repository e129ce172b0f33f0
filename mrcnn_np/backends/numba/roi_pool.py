"""RoIPool forward and backward as Numba kernels (reference: :mod:`mrcnn_np.ops.roi_pool`).

The quantised bin edges (``round`` half away from zero, then ``floor``/``ceil`` of ``q * bin``,
clipped to the map) are computed exactly as the reference does, O(R * pooled) in NumPy; the kernels
do the per-cell work:

* forward, parallel over ``(RoI, output row)``: each task owns its outputs; a running max with a
  strict ``>`` over the bin's cells in row-major order keeps the first maximum; an empty bin gives 0.
  The argmax is kept as the flat NHWC index of the cell (-1 for an empty bin), per channel.
* backward, a scatter (bins of different RoIs may share a cell): each thread adds a contiguous
  slice of the RoIs into its own gradient buffer; a parallel loop over pixels sums the buffers
  (as in :mod:`.roi_align`; no sort, no atomics).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from mrcnn_np.dispatch import register
from mrcnn_np.ops.roi_align import _check_args
from mrcnn_np.ops.roi_pool import _bin_edges, _round_half_away

from ._jit import kernel, num_threads


@kernel
def _forward(fmap, bidx, ylo, yhi, xlo, xhi, out, src):
    """fmap (N, H, W, C); bin edges (R, pooled); out (R, C, oh, ow); src (R, oh, ow, C) int64."""
    _, h, w, c_n = fmap.shape
    r_n, _, out_h, out_w = out.shape
    for task in prange(r_n * out_h):
        r, ph = task // out_h, task % out_h
        b = bidx[r]
        best = np.empty(c_n, dtype=fmap.dtype)
        for pw in range(out_w):
            first = True
            for y in range(ylo[r, ph], yhi[r, ph]):
                for x in range(xlo[r, pw], xhi[r, pw]):
                    row = (b * h + y) * w + x
                    for c in range(c_n):
                        v = fmap[b, y, x, c]
                        if first or v > best[c]:           # strict: the first max wins
                            best[c] = v
                            src[r, ph, pw, c] = row
                    first = False
            for c in range(c_n):
                if first:                                  # empty bin
                    out[r, c, ph, pw] = 0
                    src[r, ph, pw, c] = -1
                else:
                    out[r, c, ph, pw] = best[c]


@kernel
def _backward(dout, src, n_rows, threads):
    """dout (R, C, oh, ow), src (R, oh, ow, C) -> dfmap (n_rows, C) NHWC rows."""
    r_n, c_n, out_h, out_w = dout.shape
    buf = np.zeros((threads, n_rows, c_n), dtype=dout.dtype)
    per = (r_n + threads - 1) // threads
    for t in prange(threads):                           # thread t scatters RoIs [t*per, (t+1)*per)
        for r in range(t * per, min(r_n, (t + 1) * per)):
            for ph in range(out_h):
                for pw in range(out_w):
                    for c in range(c_n):
                        k = src[r, ph, pw, c]
                        if k >= 0:
                            buf[t, k, c] += dout[r, c, ph, pw]
    out = np.empty((n_rows, c_n), dtype=dout.dtype)
    for k in prange(n_rows):                            # reduction over the threads' buffers
        for c in range(c_n):
            s = buf[0, k, c]
            for t in range(1, threads):
                s += buf[t, k, c]
            out[k, c] = s
    return out


@register("numba", "roi_pool_forward", any_layout=True)
def roi_pool_forward(features, rois, output_size, spatial_scale):
    bidx, out_h, out_w = _check_args(features, rois, output_size, spatial_scale, 0)
    n, c, h, w = features.shape
    dt = features.dtype
    rois = np.ascontiguousarray(rois)
    q = _round_half_away(rois[:, 1:].astype(dt) * dt.type(spatial_scale)).astype(np.int64)
    ylo, yhi = _bin_edges(q[:, 1], q[:, 3], out_h, h)           # (R, out_h), as the reference
    xlo, xhi = _bin_edges(q[:, 0], q[:, 2], out_w, w)
    r = rois.shape[0]
    out = np.zeros((r, c, out_h, out_w), dtype=dt)
    src = np.full((r, out_h, out_w, c), -1, dtype=np.int64)
    if r:
        fmap = np.ascontiguousarray(features.transpose(0, 2, 3, 1))
        _forward(fmap, bidx, ylo, yhi, xlo, xhi, out, src)
    return out, (src, features.shape, dt)


@register("numba", "roi_pool_backward")
def roi_pool_backward(dout, cache):
    src, (n, c, h, w), dt = cache
    dout = np.ascontiguousarray(dout, dtype=dt)
    if src.shape[0] == 0:
        return np.zeros((n, c, h, w), dtype=dt)
    threads = max(1, min(num_threads(), src.shape[0]))
    rows = _backward(dout, src, n * h * w, threads)
    return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)
