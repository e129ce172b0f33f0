"""Convolution and transposed convolution: ``@cuda.jit`` im2col / col2im kernels around one GEMM.

Reference: :mod:`mrcnn_np.ops.conv`. On the GPU the textbook (Caffe) layout is the clearest::

    cols[(n*Ho + i)*Wo + j, (c*kh + u)*kw + v] = x_pad[n, c, s*i + u, s*j + v]       (im2col)
    conv2d:      out = cols @ w.reshape(C_out, C_in*kh*kw).T + b          (N*Ho*Wo, C_out)
    backward:    dw = dout2d.T @ cols,  dcols = dout2d @ w2d,  dx = col2im(dcols)

``im2col`` is one thread per entry of ``cols`` (zero where the receptive field hangs over the
padding). ``col2im``, its adjoint, is one thread per *input* pixel that gathers every column entry that
read it: for each kernel offset ``(u, v)`` there is at most one output pixel ``(i, j)`` with
``s*i + u - p = y`` and ``s*j + v - p = x``. Gathering instead of scattering needs no atomics, and the
sum's order is fixed, so the result is deterministic. The GEMMs are the array module's ``matmul``
(cuBLAS through CuPy on a GPU; NumPy under the simulator).

The transposed conv is the adjoint of the conv in ``x``, so it uses the same two kernels with their
roles swapped: its forward scatters with ``col2im`` and its backward gathers with ``im2col``.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ...dispatch import register
from ._launch import array_module, launch

__all__ = ["conv2d_forward", "conv2d_backward", "conv_transpose2d_forward",
           "conv_transpose2d_backward"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"
    ZERO = T(0)

    @cuda.jit
    def im2col(x, kh, kw, stride, padding, out_h, out_w, cols):
        """cols (N*Ho*Wo, C*kh*kw) from x (N, C, H, W): one thread per entry of cols."""
        n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
        i = cuda.grid(1)
        if i >= cols.size:
            return
        k = i % (n_c * kh * kw)                  # column: (c, u, v)
        m = i // (n_c * kh * kw)                 # row: (n, oy, ox)
        v = k % kw
        u = (k // kw) % kh
        c = k // (kw * kh)
        ox = m % out_w
        oy = (m // out_w) % out_h
        n = m // (out_w * out_h)
        y = oy * stride + u - padding            # the input pixel this entry reads
        x_ = ox * stride + v - padding
        if 0 <= y < h and 0 <= x_ < w:
            cols[m, k] = x[n, c, y, x_]
        else:
            cols[m, k] = ZERO                    # the zero padding

    @cuda.jit
    def col2im(cols, kh, kw, stride, padding, out_h, out_w, x):
        """x (N, C, H, W) = the sum of every cols entry that im2col read from each pixel: one thread
        per pixel of x, gathering (no two threads write the same pixel: no atomics)."""
        n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
        i = cuda.grid(1)
        if i >= x.size:
            return
        px = i % w
        py = (i // w) % h
        c = (i // (w * h)) % n_c
        n = i // (w * h * n_c)
        acc = ZERO
        for u in range(kh):
            ty = py + padding - u                # = oy * stride if an output row oy reads (py, u)
            if ty < 0 or ty % stride != 0:
                continue
            oy = ty // stride
            if oy >= out_h:
                continue
            for v in range(kw):
                tx = px + padding - v
                if tx < 0 or tx % stride != 0:
                    continue
                ox = tx // stride
                if ox >= out_w:
                    continue
                acc += cols[(n * out_h + oy) * out_w + ox, (c * kh + u) * kw + v]
        x[n, c, py, px] = acc

    return SimpleNamespace(im2col=im2col, col2im=col2im)


def _im2col(x, kh, kw, stride, padding, out_h, out_w):
    """x (N, C, H, W) -> cols (N*out_h*out_w, C*kh*kw)."""
    xp = array_module()
    n, c = x.shape[:2]
    cols = xp.empty((n * out_h * out_w, c * kh * kw), dtype=x.dtype)
    launch(_kernels(x.dtype).im2col, cols.size, x, kh, kw, stride, padding, out_h, out_w, cols)
    return cols


def _col2im(cols, shape, kh, kw, stride, padding, out_h, out_w):
    """cols (N*out_h*out_w, C*kh*kw) -> x (N, C, H, W) of ``shape``, the adjoint of :func:`_im2col`."""
    xp = array_module()
    x = xp.empty(shape, dtype=cols.dtype)
    launch(_kernels(cols.dtype).col2im, x.size, xp.ascontiguousarray(cols), kh, kw, stride, padding,
           out_h, out_w, x)
    return x


def _to_nchw(rows, n, h, w):
    """(N*H*W, C) rows -> a contiguous (N, C, H, W) array."""
    xp = array_module()
    return xp.ascontiguousarray(rows.reshape(n, h, w, rows.shape[1]).transpose(0, 3, 1, 2))


@register("numba-cuda", "conv2d_forward")
def conv2d_forward(x, w, b, stride=1, padding=0):
    """Same arguments and result as :func:`mrcnn_np.ops.conv.conv2d_forward`."""
    xp = array_module()
    n, c, h, wd = x.shape
    cout, _, kh, kw = w.shape
    out_h, out_w = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    cols = _im2col(x, kh, kw, stride, padding, out_h, out_w)          # (N*Ho*Wo, C*kh*kw)
    w2d = w.reshape(cout, c * kh * kw)                                  # columns ordered (c, u, v)
    out = xp.matmul(cols, w2d.T)                                        # (N*Ho*Wo, C_out)
    if b is not None:
        out += b
    return _to_nchw(out, n, out_h, out_w), (cols, w2d, w.shape, x.shape, stride, padding,
                                             b is not None)


@register("numba-cuda", "conv2d_backward")
def conv2d_backward(dout, cache):
    """dout (N, C_out, Ho, Wo) -> ``(dx, dw, db)``: dw = dout2d^T cols, dx = col2im(dout2d w2d)."""
    xp = array_module()
    cols, w2d, w_shape, x_shape, stride, padding, has_bias = cache
    _, _, kh, kw = w_shape
    n, cout, out_h, out_w = dout.shape
    dout = dout.astype(cols.dtype, copy=False)
    dout2d = dout.transpose(0, 2, 3, 1).reshape(n * out_h * out_w, cout)   # (N*Ho*Wo, C_out)
    dw = xp.matmul(dout2d.T, cols).reshape(w_shape)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dcols = xp.matmul(dout2d, w2d)                                      # (N*Ho*Wo, C*kh*kw)
    dx = _col2im(dcols, x_shape, kh, kw, stride, padding, out_h, out_w)
    return dx, dw, db


@register("numba-cuda", "conv_transpose2d_forward")
def conv_transpose2d_forward(x, w, b, stride=1, padding=0):
    """Same arguments and result as :func:`mrcnn_np.ops.conv.conv_transpose2d_forward`.

    The output (N, C_out, H_out, W_out) is the "input" of a conv2d whose output grid is x's H x W:
    every input pixel's ``x[n, :, i, j] @ w.reshape(C_in, C_out*kh*kw)`` is one row of that conv's
    cols, and col2im adds the rows into the output (cropping ``padding`` at each border)."""
    xp = array_module()
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    out_h, out_w = (h - 1) * stride - 2 * padding + kh, (wd - 1) * stride - 2 * padding + kw
    x2d = x.transpose(0, 2, 3, 1).reshape(n * h * wd, cin)              # (N*H*W, C_in)
    w2d = w.reshape(cin, cout * kh * kw)                                # columns ordered (c_out, u, v)
    cols = xp.matmul(x2d, w2d)                                          # (N*H*W, C_out*kh*kw)
    out = _col2im(cols, (n, cout, out_h, out_w), kh, kw, stride, padding, h, wd)
    if b is not None:
        out += b.reshape(1, cout, 1, 1)
    return out, (x2d, w2d, w.shape, x.shape, stride, padding, b is not None)


@register("numba-cuda", "conv_transpose2d_backward")
def conv_transpose2d_backward(dout, cache):
    """dout (N, C_out, H_out, W_out) -> ``(dx, dw, db)``: the backward of a transposed conv is a conv
    (im2col of dout, then GEMMs)."""
    xp = array_module()
    x2d, w2d, w_shape, x_shape, stride, padding, has_bias = cache
    n, cin, h, wd = x_shape
    _, cout, kh, kw = w_shape
    dout = dout.astype(x2d.dtype, copy=False)
    dcols = _im2col(dout, kh, kw, stride, padding, h, wd)               # (N*H*W, C_out*kh*kw)
    dx = _to_nchw(xp.matmul(dcols, w2d.T), n, h, wd)                    # (N*H*W, C_in) -> NCHW
    dw = xp.matmul(x2d.T, dcols).reshape(w_shape)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db
