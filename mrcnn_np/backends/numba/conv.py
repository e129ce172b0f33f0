"""conv2d and conv_transpose2d: Numba im2col / col2im around one BLAS GEMM each
(reference: :mod:`mrcnn_np.ops.conv`, whose docstring has the equations)::

    conv2d:            y[k, i, j] = b[k] + sum_{c, u, v} w[k, c, u, v] * x_pad[c, s*i + u, s*j + v]
    conv_transpose2d:  the adjoint of conv2d in x

Every conv is ``cols @ W`` with ``cols[(n, i, j), (u, v, c)] = x_pad[n, s*i + u, s*j + v, c]``
(NHWC, so each (u, v) block of a row is one contiguous channel vector). The GEMMs stay in BLAS
(``numpy.matmul``); Numba does the two memory-bound parts the reference does with slice loops:

* ``_im2col``: parallel over output rows ``(n, i)``; reads the input, writes its own rows of
  ``cols``; the padding is produced as zeros on the fly (no padded copy of the input).
  It runs on chunks of output rows (``cols`` of ~4 MiB, at least 1,024 GEMM rows), each chunk
  followed by its GEMM, so ``cols`` stays in cache and is never one huge allocation (ResNet-50's P2
  would need 370 MB); the backward rebuilds each chunk's ``cols`` (cheap next to the GEMMs) rather
  than keeping them all, and adds its ``dY W`` back with ``_col2im_rows_add``. A layer whose whole
  ``cols`` is small (``_KEEP_COLS_ELEMENTS``: every conv of the toy presets) keeps them instead.
* ``_col2im``, the adjoint (add every column entry back to the pixel it came from), written as a
  *gather*: parallel over input rows ``(n, y)``, each pixel sums the (at most kh*kw) entries that
  read it, ``y + p = s*i + u``. Each task writes only its own pixels: no races, no atomics, and the
  padding border is never computed (the reference builds the padded gradient, then crops it).

* 3x3 stride-1 convs that are big and wide enough (ResNet-50's P2 level, the mask head of 100 RoIs)
  run by Winograd's F(2x2, 3x3) instead (:mod:`.winograd`): 2.25x fewer multiplications.

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

from . import winograd
from ._jit import kernel


_CHUNK_ELEMENTS = 1 << 20      # numbers in one chunk's cols (4 MiB in float32): stays in cache
_MIN_CHUNK_ROWS = 1024         # ...but at least this many GEMM rows, which BLAS needs to run at speed
# a layer whose whole cols hold at most this many numbers keeps them for its backward instead of
# gathering them again (the toy presets: 30 convs, 51 MB in all, a step ~5 % faster); above it (a
# ResNet-50 level: hundreds of MB) the backward rebuilds each chunk
_KEEP_COLS_ELEMENTS = 1 << 21


@kernel
def _im2col(x, r0, r1, kh, kw, s, p, out_h, out_w):
    """Output rows r0..r1-1 (row ``n * out_h + i``) of x (N, H, W, C) NHWC -> cols
    ((r1 - r0) * out_w, kh*kw*C), zero where the window leaves x.

    The kw taps of one kernel row read kw neighbouring pixels, i.e. ``kw * C`` consecutive numbers of
    the NHWC input when the stride is 1 and the window is inside: that run is copied as one block."""
    _, h, w, c_n = x.shape
    seg = kw * c_n
    flat = x.reshape(-1)
    cols = np.empty(((r1 - r0) * out_w, kh * seg), dtype=x.dtype)
    for task in prange((r1 - r0) * out_w):
        r = r0 + task // out_w
        n, i, j = r // out_h, r % out_h, task % out_w
        x0 = s * j - p
        for u in range(kh):
            y = s * i + u - p
            k0 = u * seg
            if y < 0 or y >= h:
                for t in range(seg):
                    cols[task, k0 + t] = 0
            elif s == 1 and x0 >= 0 and x0 + kw <= w:
                base = ((n * h + y) * w + x0) * c_n
                for t in range(seg):
                    cols[task, k0 + t] = flat[base + t]
            else:
                for v in range(kw):
                    xx = x0 + v
                    kv = k0 + v * c_n
                    if 0 <= xx < w:
                        base = ((n * h + y) * w + xx) * c_n
                        for c in range(c_n):
                            cols[task, kv + c] = flat[base + c]
                    else:
                        for c in range(c_n):
                            cols[task, kv + c] = 0
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


@kernel
def _col2im_rows_add(dcols, r0, r1, kh, kw, s, p, out_h, out_w, out):
    """:func:`_col2im` for output rows r0..r1-1 only (``dcols`` holds their ``(r1 - r0) * out_w``
    rows), *added* into ``out`` (N, h, w, C): the backward's chunked form. Parallel over the input
    rows that those output rows read, each task gathering into its own pixels (no races)."""
    _, h, w, c_n = out.shape
    i0, i1 = r0 % out_h, (r1 - 1) % out_h
    g0 = (r0 // out_h) * h + max(0, s * i0 - p)                     # first input row (n * h + y) read
    g1 = ((r1 - 1) // out_h) * h + min(h - 1, s * i1 - p + kh - 1)   # last
    for task in prange(g1 - g0 + 1):
        g = g0 + task
        n, y = g // h, g % h
        for u in range(kh):
            ty = y + p - u                       # = s * i for the output row i that read us
            if ty < 0 or ty % s != 0 or ty // s >= out_h:
                continue
            r = n * out_h + ty // s
            if r < r0 or r >= r1:
                continue
            for xx in range(w):
                for v in range(kw):
                    tx = xx + p - v
                    if tx < 0 or tx % s != 0 or tx // s >= out_w:
                        continue
                    row = (r - r0) * out_w + tx // s
                    k0 = (u * kw + v) * c_n
                    for c in range(c_n):
                        out[n, y, xx, c] += dcols[row, k0 + c]


def _nhwc(a):
    """(N, C, H, W) -> contiguous (N, H, W, C); free for an NCHW view of an NHWC buffer."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _row_chunks(n, out_h, out_w, k):
    """Slices ``(r0, r1)`` of the output rows (``n * out_h + i``) whose cols hold about
    _CHUNK_ELEMENTS numbers, and at least _MIN_CHUNK_ROWS GEMM rows: whole images for the toy presets'
    small maps, a few rows of one image for a 1,200-pixel-wide ResNet-50 level."""
    rows = n * out_h
    step = max(1, _CHUNK_ELEMENTS // max(out_w * k, 1), -(-_MIN_CHUNK_ROWS // max(out_w, 1)))
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


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
    has_bias = b is not None
    rows = out_h * out_w                                          # output pixels per image
    kept = None                                                   # the cols, where they are kept
    if _is_1x1(kh, kw, stride, padding):
        out = x_nhwc.reshape(n * h * wd, c) @ w2d.T               # a 1x1 conv needs no gather
    elif winograd.applies(n, c, cout, out_h, out_w, kh, kw, stride, padding):
        out = winograd.conv3x3(x_nhwc, w, b)                      # big 3x3 convs: winograd.py
        b = None                                                  # (its output transform added it)
    else:
        # NOTE: chunks of output rows keep each cols block near the cache (and under the allocator's
        # reuse threshold) instead of one (H*W, 9C) matrix per image (560 MB for a 3x3 conv on
        # ResNet-50's P2); the backward rebuilds cols the same way instead of keeping them.
        out = np.empty((n * rows, cout), dtype=x.dtype)
        kept = [] if n * rows * kh * kw * c <= _KEEP_COLS_ELEMENTS else None
        for r0, r1 in _row_chunks(n, out_h, out_w, kh * kw * c):
            cols = _im2col(x_nhwc, r0, r1, kh, kw, stride, padding, out_h, out_w)
            np.matmul(cols, w2d.T, out=out[r0 * out_w : r1 * out_w])   # (pixels, C_out)
            if kept is not None:
                kept.append(cols)
    if b is not None:
        out += b
    out = out.reshape(n, out_h, out_w, cout).transpose(0, 3, 1, 2)
    return out, (x_nhwc, w2d, w.shape, stride, padding, has_bias, kept)


@register("numba", "conv2d_backward", any_layout=True)
def conv2d_backward(dout, cache):
    x_nhwc, w2d, (cout, c, kh, kw), stride, padding, has_bias, kept = cache
    n, h, wd, _ = x_nhwc.shape
    _, _, out_h, out_w = dout.shape
    rows = out_h * out_w
    d2 = _nhwc(dout.astype(x_nhwc.dtype, copy=False)).reshape(n * rows, cout)
    db = d2.sum(axis=0) if has_bias else None
    if _is_1x1(kh, kw, stride, padding):
        x2d = x_nhwc.reshape(n * h * wd, c)
        dw2d, dx = d2.T @ x2d, (d2 @ w2d).reshape(n, h, wd, c)
    else:
        # NOTE: in the forward's chunks of output rows: a whole image's cols at ResNet-50's P2 would
        # be 370 MB, and dY W as much again (this was the training step's peak memory)
        dw2d = np.zeros((cout, kh * kw * c), dtype=x_nhwc.dtype)
        dx = np.zeros_like(x_nhwc)
        for chunk, (r0, r1) in enumerate(_row_chunks(n, out_h, out_w, kh * kw * c)):
            cols = (kept[chunk] if kept is not None
                    else _im2col(x_nhwc, r0, r1, kh, kw, stride, padding, out_h, out_w))
            d = d2[r0 * out_w : r1 * out_w]
            dw2d += d.T @ cols                                     # dW = dY^T cols
            _col2im_rows_add(d @ w2d, r0, r1, kh, kw, stride, padding, out_h, out_w, dx)  # dX += col2im(dY W)
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
        dcols = _im2col(d, n0 * h, n1 * h, kh, kw, stride, padding, h, wd)  # (rows, kh*kw*C_out)
        np.matmul(dcols, w2d.T, out=dx[n0 * rows : n1 * rows])
        dw2d += x2d[n0 * rows : n1 * rows].T @ dcols
    dx = dx.reshape(n, h, wd, cin).transpose(0, 3, 1, 2)
    dw = dw2d.reshape(cin, kh, kw, cout).transpose(0, 3, 1, 2)
    return dx, np.ascontiguousarray(dw), db
