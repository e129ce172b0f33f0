"""Bilinear resizing (reference: :mod:`mrcnn_np.ops.interpolate`, torch's ``interpolate(mode="bilinear",
align_corners=False)``): the same taps and weights, computed once per axis on the host by
``linear_taps``; the kernel runs over (channel, output row), each output pixel blending its four
source pixels rows first, then columns, as the reference does (so results are the same to the bit)."""
from __future__ import annotations

import numpy as np
from numba import prange

from mrcnn_np.dispatch import register
from mrcnn_np.ops.interpolate import check_interpolate_args, linear_taps

from ._jit import kernel


@kernel
def _resize(x, y0, y1, wy0, wy1, x0, x1, wx0, wx1, out):
    c_n, h, w = out.shape
    for task in prange(c_n * h):
        c, i = task // h, task % h
        a, b = y0[i], y1[i]
        p, q = wy0[i], wy1[i]
        for j in range(w):
            s, t = x0[j], x1[j]
            top = x[c, a, s] * p + x[c, b, s] * q              # the two source rows, column s
            bottom = x[c, a, t] * p + x[c, b, t] * q           # ... and column t
            out[c, i, j] = top * wx0[j] + bottom * wx1[j]


@register("numba", "interpolate_bilinear")
def interpolate_bilinear(x, size):
    h, w = check_interpolate_args(x, size)
    _, H, W = x.shape
    if (h, w) == (H, W):
        return x.copy()
    dt = x.dtype
    y0, y1, wy0, wy1 = linear_taps(H, h)
    x0, x1, wx0, wx1 = linear_taps(W, w)
    out = np.empty((x.shape[0], h, w), dt)
    _resize(x, y0, y1, wy0.astype(dt), wy1.astype(dt), x0, x1, wx0.astype(dt), wx1.astype(dt), out)
    return out
