"""Max pooling as ``@cuda.jit`` kernels.

Reference: :mod:`mrcnn_np.ops.pool`::

    y[n, c, i, j] = max_{u, v} x_pad[n, c, s*i + u, s*j + v]       (padding is -inf)
    dx receives dout at the position of that max: the FIRST one in row-major (u, v) order

Forward: one thread per output; it walks the window in row-major order with a strict ``>``, starting
from offset (0, 0) as the reference does, and keeps the offset ``u*kw + v`` of the max (int32).
Backward: one thread per *input* pixel, gathering: for each offset ``(u, v)`` at most one output
``(i, j)`` has its window's ``(u, v)`` cell on this pixel; it adds that output's ``dout`` if its argmax
is ``(u, v)``. Windows overlap when the stride is smaller than the kernel, so a scatter from the
outputs would need atomics; the gather needs none and is deterministic.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ...dispatch import register
from ...ops._check import pair
from ._launch import array_module, launch

__all__ = ["max_pool2d_forward", "max_pool2d_backward"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"
    ZERO, NEG_INF = T(0), T(-np.inf)

    @cuda.jit
    def forward(x, kh, kw, sh, sw, padding, out, arg):
        n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
        out_h, out_w = out.shape[2], out.shape[3]
        i = cuda.grid(1)
        if i >= out.size:
            return
        oj = i % out_w
        oi = (i // out_w) % out_h
        c = (i // (out_w * out_h)) % n_c
        n = i // (out_w * out_h * n_c)
        best = NEG_INF
        best_k = 0
        for u in range(kh):
            y = oi * sh + u - padding
            for v in range(kw):
                x_ = oj * sw + v - padding
                val = NEG_INF                    # the padding
                if 0 <= y < h and 0 <= x_ < w:
                    val = x[n, c, y, x_]
                if (u == 0 and v == 0) or val > best:     # strict '>': the first max wins
                    best = val
                    best_k = u * kw + v
        out[n, c, oi, oj] = best
        arg[n, c, oi, oj] = best_k

    @cuda.jit
    def backward(dout, arg, kh, kw, sh, sw, padding, dx):
        n_c, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
        out_h, out_w = dout.shape[2], dout.shape[3]
        i = cuda.grid(1)
        if i >= dx.size:
            return
        px = i % w
        py = (i // w) % h
        c = (i // (w * h)) % n_c
        n = i // (w * h * n_c)
        acc = ZERO
        for u in range(kh):
            ty = py + padding - u                # = oi * sh if output row oi has (u, .) on py
            if ty < 0 or ty % sh != 0 or ty // sh >= out_h:
                continue
            oi = ty // sh
            for v in range(kw):
                tx = px + padding - v
                if tx < 0 or tx % sw != 0 or tx // sw >= out_w:
                    continue
                oj = tx // sw
                if arg[n, c, oi, oj] == u * kw + v:
                    acc += dout[n, c, oi, oj]
        dx[n, c, py, px] = acc

    return SimpleNamespace(forward=forward, backward=backward)


@register("numba-cuda", "max_pool2d_forward")
def max_pool2d_forward(x, kernel_size, stride, padding):
    """Same arguments and result as :func:`mrcnn_np.ops.pool.max_pool2d_forward`."""
    xp = array_module()
    (kh, kw), (sh, sw) = pair("kernel_size", kernel_size), pair("stride", stride)
    n, c, h, w = x.shape
    out_h, out_w = (h + 2 * padding - kh) // sh + 1, (w + 2 * padding - kw) // sw + 1
    out = xp.empty((n, c, out_h, out_w), dtype=x.dtype)
    arg = xp.empty((n, c, out_h, out_w), dtype=xp.int32)      # offset u*kw + v of each max
    launch(_kernels(x.dtype).forward, out.size, x, kh, kw, sh, sw, int(padding), out, arg)
    return out, (arg, x.shape, (kh, kw), (sh, sw), int(padding))


@register("numba-cuda", "max_pool2d_backward")
def max_pool2d_backward(dout, cache):
    """dout (N, C, H_out, W_out) -> ``dx`` (N, C, H, W)."""
    xp = array_module()
    arg, x_shape, (kh, kw), (sh, sw), padding = cache
    dx = xp.empty(x_shape, dtype=dout.dtype)
    launch(_kernels(dout.dtype).backward, dx.size, dout, arg, kh, kw, sh, sw, padding, dx)
    return dx
