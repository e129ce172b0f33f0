"""Max pooling forward and backward as Numba kernels (reference: :mod:`mrcnn_np.ops.pool`)::

    y[n, c, i, j] = max_{u, v} x_pad[n, c, s*i + u, s*j + v]          (padding is -inf)
    dx receives dout at the position of that max: the FIRST one in row-major (u, v) order

How it is shaped: NHWC rows (the layout the conv kernels produce; an NCHW view of an NHWC buffer
is read without a copy), so the innermost loop runs over contiguous channels.

* forward: parallel over output rows ``(n, i)``; each task writes its own outputs and their argmax
  (the kernel offset ``u*kw + v``, as the reference stores it). A running max with a strict ``>``
  keeps the first maximum; padded cells are skipped, which is what ``-inf`` padding does.
* backward, as a gather: parallel over input rows ``(n, y)``; each input pixel sums the ``dout`` of
  the (at most kh*kw) windows whose argmax points at it. No two tasks write the same pixel, so there
  are no races and no atomics, even where windows overlap (3x3 stride 2).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from mrcnn_np.dispatch import register
from mrcnn_np.ops.pool import check_max_pool2d_args

from ._jit import kernel


@kernel
def _forward(x, kh, kw, sh, sw, p, out_h, out_w):
    """x (N, H, W, C) -> (out (N, out_h, out_w, C), arg (same shape) int32 kernel offsets)."""
    n_n, h, w, c_n = x.shape
    out = np.empty((n_n, out_h, out_w, c_n), dtype=x.dtype)
    arg = np.zeros((n_n, out_h, out_w, c_n), dtype=np.int32)
    for task in prange(n_n * out_h):
        n, i = task // out_h, task % out_h
        for j in range(out_w):
            for c in range(c_n):
                out[n, i, j, c] = -np.inf
            for u in range(kh):
                y = sh * i + u - p
                if y < 0 or y >= h:
                    continue
                for v in range(kw):
                    xx = sw * j + v - p
                    if xx < 0 or xx >= w:
                        continue
                    k = u * kw + v
                    for c in range(c_n):
                        if x[n, y, xx, c] > out[n, i, j, c]:      # strict: the first max wins
                            out[n, i, j, c] = x[n, y, xx, c]
                            arg[n, i, j, c] = k
    return out, arg


@kernel
def _backward(dout, arg, h, w, kh, kw, sh, sw, p):
    """dout, arg (N, out_h, out_w, C) -> dx (N, h, w, C), a gather over the windows of each pixel."""
    n_n, out_h, out_w, c_n = dout.shape
    dx = np.zeros((n_n, h, w, c_n), dtype=dout.dtype)
    for task in prange(n_n * h):
        n, y = task // h, task % h
        for u in range(kh):
            ty = y + p - u                               # = sh * i for a window i containing y
            if ty < 0 or ty % sh != 0 or ty // sh >= out_h:
                continue
            i = ty // sh
            for xx in range(w):
                for v in range(kw):
                    tx = xx + p - v
                    if tx < 0 or tx % sw != 0 or tx // sw >= out_w:
                        continue
                    j = tx // sw
                    k = u * kw + v
                    for c in range(c_n):
                        if arg[n, i, j, c] == k:
                            dx[n, y, xx, c] += dout[n, i, j, c]
    return dx


@register("numba", "max_pool2d_forward", any_layout=True)
def max_pool2d_forward(x, kernel_size, stride, padding):
    (kh, kw), (sh, sw), p, (out_h, out_w) = check_max_pool2d_args(x, kernel_size, stride, padding)
    out, arg = _forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), kh, kw, sh, sw, p, out_h, out_w)
    return out.transpose(0, 3, 1, 2), (arg, x.shape, x.dtype, (kh, kw), (sh, sw), p)


@register("numba", "max_pool2d_backward", any_layout=True)
def max_pool2d_backward(dout, cache):
    arg, (n, c, h, w), dt, (kh, kw), (sh, sw), p = cache
    d = np.ascontiguousarray(dout.astype(dt, copy=False).transpose(0, 2, 3, 1))
    return _backward(d, arg, h, w, kh, kw, sh, sw, p).transpose(0, 3, 1, 2)
