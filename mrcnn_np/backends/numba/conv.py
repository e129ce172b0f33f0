"""conv2d and conv_transpose2d: Numba im2col / col2im around one BLAS GEMM each
(reference: :mod:`mrcnn_np.ops.conv`, whose docstring has the equations)::

    conv2d:            y[k, i, j] = b[k] + sum_{c, u, v} w[k, c, u, v] * x_pad[c, s*i + u, s*j + v]
    conv_transpose2d:  the adjoint of conv2d in x

Every conv is ``cols @ W`` with ``cols[(n, i, j), (u, v, c)] = x_pad[n, s*i + u, s*j + v, c]``
(NHWC, so each (u, v) block of a row is one contiguous channel vector). The GEMMs stay in BLAS
(``numpy.matmul``); Numba does the two memory-bound parts the reference does with slice loops:

* ``_im2col``: parallel over output rows ``(n, i)``; reads the input, writes its own rows of
  ``cols``; the padding is produced as zeros on the fly (no padded copy of the input).
* ``_col2im``, the adjoint (add every column entry back to the pixel it came from), written as a
  *gather*: parallel over input rows ``(n, y)``, each pixel sums the (at most kh*kw) entries that
  read it, ``y + p = s*i + u``. Each task writes only its own pixels: no races, no atomics, and the
  padding border is never computed (the reference builds the padded gradient, then crops it).

Compared with the reference's stride-1 scheme (one GEMM per kernel offset on the flattened input),
one GEMM with ``K = kh*kw*C`` runs BLAS at a better shape and the backward's ``dX`` becomes one GEMM
plus one gather instead of nine GEMMs and nine read-modify-write passes. Outputs are NCHW views of
NHWC buffers, as in the reference, so the next layer's NHWC read is free.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from mrcnn_np.dispatch import register
from mrcnn_np.ops.conv import check_conv2d_args, check_conv_transpose2d_args

from ._jit import kernel


@kernel
def _im2col(x, kh, kw, s, p, out_h, out_w):
    """x (N, H, W, C) NHWC -> cols (N*out_h*out_w, kh*kw*C), zero where the window leaves x."""
    n_n, h, w, c_n = x.shape
    cols = np.empty((n_n * out_h * out_w, kh * kw * c_n), dtype=x.dtype)
    for task in prange(n_n * out_h):
        n, i = task // out_h, task % out_h
        for j in range(out_w):
            row = (n * out_h + i) * out_w + j
            for u in range(kh):
                y = s * i + u - p
                for v in range(kw):
                    xx = s * j + v - p
                    k0 = (u * kw + v) * c_n
                    if 0 <= y < h and 0 <= xx < w:
                        for c in range(c_n):
                            cols[row, k0 + c] = x[n, y, xx, c]
                    else:
                        for c in range(c_n):
                            cols[row, k0 + c] = 0
    return cols


@kernel
def _col2im(cols, n_n, h, w, kh, kw, s, p, out_h, out_w):
    """The adjoint of :func:`_im2col`: cols (N*out_h*out_w, kh*kw*C) -> (N, h, w, C), each pixel the
    sum of the entries that read it."""
    c_n = cols.shape[1] // (kh * kw)
    out = np.empty((n_n, h, w, c_n), dtype=cols.dtype)
    for task in prange(n_n * h):
        n, y = task // h, task % h
        for xx in range(w):
            for c in range(c_n):
                out[n, y, xx, c] = 0
            for u in range(kh):
                ty = y + p - u                       # = s * i for the output row i that read us
                if ty < 0 or ty % s != 0 or ty // s >= out_h:
                    continue
                i = ty // s
                for v in range(kw):
                    tx = xx + p - v
                    if tx < 0 or tx % s != 0 or tx // s >= out_w:
                        continue
                    row = (n * out_h + i) * out_w + tx // s
                    k0 = (u * kw + v) * c_n
                    for c in range(c_n):
                        out[n, y, xx, c] += cols[row, k0 + c]
    return out


def _nhwc(a):
    """(N, C, H, W) -> contiguous (N, H, W, C); free for an NCHW view of an NHWC buffer."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


@register("numba", "conv2d_forward", any_layout=True)
def conv2d_forward(x, w, b, stride=1, padding=0):
    stride, padding = check_conv2d_args(x, w, b, stride, padding)
    n, c, h, wd = x.shape
    cout, _, kh, kw = w.shape
    out_h, out_w = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    x_nhwc = _nhwc(x)
    if kh == kw == 1 and stride == 1 and padding == 0:
        cols = x_nhwc.reshape(n * h * wd, c)                      # a 1x1 conv needs no gather
    else:
        cols = _im2col(x_nhwc, kh, kw, stride, padding, out_h, out_w)
    w2d = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(cout, kh * kw * c)  # (u, v, c) order
    out = cols @ w2d.T                                            # (N*Ho*Wo, C_out)
    if b is not None:
        out += b
    out = out.reshape(n, out_h, out_w, cout).transpose(0, 3, 1, 2)
    return out, (cols, w2d, w.shape, x.shape, stride, padding, b is not None)


@register("numba", "conv2d_backward", any_layout=True)
def conv2d_backward(dout, cache):
    cols, w2d, (cout, c, kh, kw), (n, _, h, wd), stride, padding, has_bias = cache
    _, _, out_h, out_w = dout.shape
    d2 = _nhwc(dout.astype(cols.dtype, copy=False)).reshape(n * out_h * out_w, cout)
    db = d2.sum(axis=0) if has_bias else None
    dw = (d2.T @ cols).reshape(cout, kh, kw, c).transpose(0, 3, 1, 2)
    dcols = d2 @ w2d                                              # (N*Ho*Wo, kh*kw*C)
    if kh == kw == 1 and stride == 1 and padding == 0:
        dx = dcols.reshape(n, h, wd, c)
    else:
        dx = _col2im(dcols, n, h, wd, kh, kw, stride, padding, out_h, out_w)
    return dx.transpose(0, 3, 1, 2), np.ascontiguousarray(dw), db


@register("numba", "conv_transpose2d_forward", any_layout=True)
def conv_transpose2d_forward(x, w, b, stride=1, padding=0):
    stride, padding = check_conv_transpose2d_args(x, w, b, stride, padding)
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    out_h, out_w = (h - 1) * stride + kh - 2 * padding, (wd - 1) * stride + kw - 2 * padding
    x2d = _nhwc(x).reshape(n * h * wd, cin)
    w2d = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(cin, kh * kw * cout)
    cols = x2d @ w2d                          # what each input pixel scatters, (u, v, c_out) order
    # output pixel (y, x) gathers from input pixels (i, j) with y + p = s*i + u: the col2im of a
    # conv2d whose "output grid" is this layer's input
    out = _col2im(cols, n, out_h, out_w, kh, kw, stride, padding, h, wd)
    if b is not None:
        out += b
    return out.transpose(0, 3, 1, 2), (x2d, w2d, w.shape, x.shape, stride, padding, b is not None)


@register("numba", "conv_transpose2d_backward", any_layout=True)
def conv_transpose2d_backward(dout, cache):
    x2d, w2d, (cin, cout, kh, kw), (n, _, h, wd), stride, padding, has_bias = cache
    d = _nhwc(dout.astype(x2d.dtype, copy=False))                 # (N, Ho, Wo, C_out)
    db = d.sum(axis=(0, 1, 2)) if has_bias else None
    dcols = _im2col(d, kh, kw, stride, padding, h, wd)            # (N*H*W, kh*kw*C_out)
    dx = (dcols @ w2d.T).reshape(n, h, wd, cin).transpose(0, 3, 1, 2)
    dw = (x2d.T @ dcols).reshape(cin, kh, kw, cout).transpose(0, 3, 1, 2)
    return dx, np.ascontiguousarray(dw), db
