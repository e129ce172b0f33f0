"""conv2d and conv_transpose2d: Numba im2col / col2im around one BLAS GEMM each
(reference: :mod:`mrcnn_np.ops.conv`, whose docstring has the equations)::

    conv2d:            y[k, i, j] = b[k] + sum_{c, u, v} w[k, c, u, v] * x_pad[c, s*i + u, s*j + v]
    conv_transpose2d:  the adjoint of conv2d in x

Every conv is ``cols @ W`` with ``cols[(n, i, j), (u, v, c)] = x_pad[n, s*i + u, s*j + v, c]``
(NHWC, so each (u, v) block of a row is one contiguous channel vector). The GEMMs stay in BLAS
(``numpy.matmul``); Numba does the two memory-bound parts the reference does with slice loops:

* ``_im2col``: parallel over output rows ``(n, i)``; reads the input, writes its own rows of
  ``cols``; the padding is produced as zeros on the fly (no padded copy of the input).
  It runs on chunks of images (``cols`` of ~4 MiB), each chunk followed by its GEMM, so ``cols``
  stays in cache and is never one huge allocation (the mask head's would be ~60 MB); the backward
  rebuilds each chunk's ``cols`` (cheap next to the GEMMs) rather than keeping them all.
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


_CHUNK_ELEMENTS = 1 << 20      # numbers in one chunk's cols (4 MiB in float32): stays in cache


@kernel
def _im2col(x, n0, n1, kh, kw, s, p, out_h, out_w):
    """Images n0..n1-1 of x (N, H, W, C) NHWC -> cols ((n1-n0)*out_h*out_w, kh*kw*C), zero where
    the window leaves x."""
    _, h, w, c_n = x.shape
    cols = np.empty(((n1 - n0) * out_h * out_w, kh * kw * c_n), dtype=x.dtype)
    for task in prange((n1 - n0) * out_h):
        m, i = task // out_h, task % out_h
        n = n0 + m
        for j in range(out_w):
            row = (m * out_h + i) * out_w + j
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
def _col2im(cols, kh, kw, s, p, out_h, out_w, out):
    """The adjoint of :func:`_im2col`: cols (M*out_h*out_w, kh*kw*C) -> out (M, h, w, C), each pixel
    the sum of the entries that read it."""
    n_n, h, w, c_n = out.shape
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


def _nhwc(a):
    """(N, C, H, W) -> contiguous (N, H, W, C); free for an NCHW view of an NHWC buffer."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _image_chunks(n, numbers_per_image):
    """Slices of whole images whose cols hold about _CHUNK_ELEMENTS numbers."""
    step = max(1, _CHUNK_ELEMENTS // max(numbers_per_image, 1))
    for n0 in range(0, n, step):
        yield n0, min(n, n0 + step)


def _is_1x1(kh, kw, stride, padding):
    return kh == kw == 1 and stride == 1 and padding == 0


@register("numba", "conv2d_forward", any_layout=True)
def conv2d_forward(x, w, b, stride=1, padding=0):
    stride, padding = check_conv2d_args(x, w, b, stride, padding)
    n, c, h, wd = x.shape
    cout, _, kh, kw = w.shape
    out_h, out_w = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    x_nhwc = _nhwc(x)
    w2d = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(cout, kh * kw * c)  # (u, v, c) order
    rows = out_h * out_w                                          # output pixels per image
    if _is_1x1(kh, kw, stride, padding):
        out = x_nhwc.reshape(n * h * wd, c) @ w2d.T               # a 1x1 conv needs no gather
    else:
        # NOTE: chunks of images keep each cols block in cache (and under the allocator's reuse
        # threshold); the backward rebuilds cols the same way instead of keeping them.
        out = np.empty((n * rows, cout), dtype=x.dtype)
        for n0, n1 in _image_chunks(n, rows * kh * kw * c):
            cols = _im2col(x_nhwc, n0, n1, kh, kw, stride, padding, out_h, out_w)
            np.matmul(cols, w2d.T, out=out[n0 * rows : n1 * rows])     # (rows, C_out) per image
    if b is not None:
        out += b
    out = out.reshape(n, out_h, out_w, cout).transpose(0, 3, 1, 2)
    return out, (x_nhwc, w2d, w.shape, stride, padding, b is not None)


@register("numba", "conv2d_backward", any_layout=True)
def conv2d_backward(dout, cache):
    x_nhwc, w2d, (cout, c, kh, kw), stride, padding, has_bias = cache
    n, h, wd, _ = x_nhwc.shape
    _, _, out_h, out_w = dout.shape
    rows = out_h * out_w
    d2 = _nhwc(dout.astype(x_nhwc.dtype, copy=False)).reshape(n * rows, cout)
    db = d2.sum(axis=0) if has_bias else None
    if _is_1x1(kh, kw, stride, padding):
        x2d = x_nhwc.reshape(n * h * wd, c)
        dw2d, dx = d2.T @ x2d, (d2 @ w2d).reshape(n, h, wd, c)
    else:
        dw2d = np.zeros((cout, kh * kw * c), dtype=x_nhwc.dtype)
        dx = np.empty_like(x_nhwc)
        for n0, n1 in _image_chunks(n, rows * kh * kw * c):
            cols = _im2col(x_nhwc, n0, n1, kh, kw, stride, padding, out_h, out_w)
            d = d2[n0 * rows : n1 * rows]
            dw2d += d.T @ cols                                     # dW = dY^T cols
            _col2im(d @ w2d, kh, kw, stride, padding, out_h, out_w, dx[n0:n1])  # dX = col2im(dY W)
    dw = dw2d.reshape(cout, kh, kw, c).transpose(0, 3, 1, 2)
    return dx.transpose(0, 3, 1, 2), np.ascontiguousarray(dw), db


@register("numba", "conv_transpose2d_forward", any_layout=True)
def conv_transpose2d_forward(x, w, b, stride=1, padding=0):
    stride, padding = check_conv_transpose2d_args(x, w, b, stride, padding)
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    out_h, out_w = (h - 1) * stride + kh - 2 * padding, (wd - 1) * stride + kw - 2 * padding
    x2d = _nhwc(x).reshape(n * h * wd, cin)
    w2d = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(cin, kh * kw * cout)
    out = np.empty((n, out_h, out_w, cout), dtype=x.dtype)
    rows = h * wd
    for n0, n1 in _image_chunks(n, rows * kh * kw * cout):
        cols = x2d[n0 * rows : n1 * rows] @ w2d   # what each input pixel scatters, (u, v, c_out)
        # output pixel (y, x) gathers from input pixels (i, j) with y + p = s*i + u: the col2im of
        # a conv2d whose "output grid" is this layer's input
        _col2im(cols, kh, kw, stride, padding, h, wd, out[n0:n1])
    if b is not None:
        out += b
    return out.transpose(0, 3, 1, 2), (x2d, w2d, w.shape, x.shape, stride, padding, b is not None)


@register("numba", "conv_transpose2d_backward", any_layout=True)
def conv_transpose2d_backward(dout, cache):
    x2d, w2d, (cin, cout, kh, kw), (n, _, h, wd), stride, padding, has_bias = cache
    d = _nhwc(dout.astype(x2d.dtype, copy=False))                 # (N, Ho, Wo, C_out)
    db = d.sum(axis=(0, 1, 2)) if has_bias else None
    dx = np.empty((n * h * wd, cin), dtype=x2d.dtype)
    dw2d = np.zeros((cin, kh * kw * cout), dtype=x2d.dtype)
    rows = h * wd
    for n0, n1 in _image_chunks(n, rows * kh * kw * cout):
        dcols = _im2col(d, n0, n1, kh, kw, stride, padding, h, wd)        # (rows, kh*kw*C_out)
        np.matmul(dcols, w2d.T, out=dx[n0 * rows : n1 * rows])
        dw2d += x2d[n0 * rows : n1 * rows].T @ dcols
    dx = dx.reshape(n, h, wd, cin).transpose(0, 3, 1, 2)
    dw = dw2d.reshape(cin, kh, kw, cout).transpose(0, 3, 1, 2)
    return dx, np.ascontiguousarray(dw), db
