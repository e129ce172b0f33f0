"""conv2d and conv_transpose2d on the GPU: ``kernels/conv.cu``'s im2col / col2im around
``cupy.matmul`` (cuBLAS). Mirrors :mod:`mrcnn_np.ops.conv` (which does the same with NHWC im2col
for strided convs; here every conv goes through im2col, whose copy is cheap on a GPU).

``cols`` is ``(N*H_out*W_out, C*kh*kw)`` with columns ordered ``(c, u, v)``, the order of
``w.reshape(C_out, C*kh*kw)``::

    conv2d:            out = cols(x) @ w2d.T + b           dw = dY^T @ cols      dx = col2im(dY @ w2d)
    conv_transpose2d:  out = col2im(x2d @ w2d) + b         (the adjoint of conv2d in x)
                       dx = im2col(dout) @ w2d.T           dw = x2d^T @ im2col(dout)
"""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ...ops.conv import check_conv2d_args, check_conv_transpose2d_args
from ._module import function, launch

_SRC = "conv.cu"


def _geometry(batch, channels, height, width, kh, kw, stride, pad, out_h, out_w):
    return tuple(np.int32(v) for v in (batch, channels, height, width, kh, kw, stride, pad, out_h,
                                       out_w))


def _im2col(x, kh, kw, stride, pad, out_h, out_w):
    """x (N, C, H, W) -> cols (N*out_h*out_w, C*kh*kw)."""
    n, c, h, w = x.shape
    cols = cupy.empty((n * out_h * out_w, c * kh * kw), dtype=x.dtype)
    launch(function(_SRC, "im2col", x.dtype), cols.size,
           (x,) + _geometry(n, c, h, w, kh, kw, stride, pad, out_h, out_w) + (cols,))
    return cols


def _col2im(cols, shape, kh, kw, stride, pad, out_h, out_w):
    """cols (N*out_h*out_w, C*kh*kw) -> x (N, C, H, W) = shape, the adjoint of :func:`_im2col`."""
    n, c, h, w = shape
    x = cupy.empty(shape, dtype=cols.dtype)
    launch(function(_SRC, "col2im", cols.dtype), x.size,
           (cols,) + _geometry(n, c, h, w, kh, kw, stride, pad, out_h, out_w) + (x,))
    return x


def _nchw(rows, n, h, w):
    """(N*H*W, C) rows -> a contiguous (N, C, H, W) array."""
    return cupy.ascontiguousarray(rows.reshape(n, h, w, rows.shape[1]).transpose(0, 3, 1, 2))


@register("cupy", "conv2d_forward")
def conv2d_forward(x, w, b, stride=1, padding=0):
    stride, padding = check_conv2d_args(x, w, b, stride, padding)   # ints (already checked)
    n, c, h, wd = x.shape
    cout, _, kh, kw = w.shape
    out_h, out_w = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    cols = _im2col(x, kh, kw, stride, padding, out_h, out_w)
    w2d = w.reshape(cout, c * kh * kw)
    out2d = cupy.matmul(cols, w2d.T)                                 # (N*Ho*Wo, C_out)
    if b is not None:
        out2d += b
    cache = (cols, w2d, w.shape, x.shape, stride, padding, b is not None, out_h, out_w)
    return _nchw(out2d, n, out_h, out_w), cache


@register("cupy", "conv2d_backward")
def conv2d_backward(dout, cache):
    cols, w2d, w_shape, x_shape, stride, padding, has_bias, out_h, out_w = cache
    cout, c, kh, kw = w_shape
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dout2d = dout.transpose(0, 2, 3, 1).reshape(-1, cout)            # (N*Ho*Wo, C_out)
    dw = cupy.matmul(dout2d.T, cols).reshape(w_shape)                # dW = dY^T cols
    dcols = cupy.matmul(dout2d, w2d)                                 # (N*Ho*Wo, C*kh*kw)
    dx = _col2im(dcols, x_shape, kh, kw, stride, padding, out_h, out_w)
    return dx, dw, db


@register("cupy", "conv_transpose2d_forward")
def conv_transpose2d_forward(x, w, b, stride=1, padding=0):
    stride, padding = check_conv_transpose2d_args(x, w, b, stride, padding)
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    out_h, out_w = (h - 1) * stride + kh - 2 * padding, (wd - 1) * stride + kw - 2 * padding
    x2d = cupy.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * h * wd, cin)
    w2d = w.reshape(cin, cout * kh * kw)                             # columns (c_out, u, v)
    cols = cupy.matmul(x2d, w2d)                                     # what each pixel scatters
    # The output is the "input" of a conv with this kernel, stride and padding whose output grid is
    # x's (h, wd): col2im adds each pixel's contributions back, the crop by `padding` included.
    out = _col2im(cols, (n, cout, out_h, out_w), kh, kw, stride, padding, h, wd)
    if b is not None:
        out += b.reshape(1, cout, 1, 1)
    return out, (x2d, w2d, w.shape, x.shape, stride, padding, b is not None)


@register("cupy", "conv_transpose2d_backward")
def conv_transpose2d_backward(dout, cache):
    x2d, w2d, w_shape, x_shape, stride, padding, has_bias = cache
    n, cin, h, wd = x_shape
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dcols = _im2col(dout, w_shape[2], w_shape[3], stride, padding, h, wd)   # (N*H*W, C_out*kh*kw)
    dx = _nchw(cupy.matmul(dcols, w2d.T), n, h, wd)
    dw = cupy.matmul(x2d.T, dcols).reshape(w_shape)
    return dx, dw, db
