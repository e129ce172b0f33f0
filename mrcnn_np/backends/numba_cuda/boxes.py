"""Pairwise IoU as a ``@cuda.jit`` kernel: one thread per pair ``(i, j)``.

Reference: :func:`mrcnn_np.ops.boxes.box_iou`::

    inter = max(0, min(a.x2, b.x2) - max(a.x1, b.x1)) * max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    IoU   = inter / (area(a) + area(b) - inter),  0 where that union is 0 (never NaN)

computed in the inputs' (promoted) float dtype, integers as float64, in the reference's order.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ...dispatch import register
from ._launch import array_module, launch, unfused_multiply

__all__ = ["box_iou"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"
    ZERO = T(0)
    mul = unfused_multiply(dtype)                # no FMA: rounded as the reference (bit for bit)

    @cuda.jit
    def iou(a, b, out):
        """a (N, 4), b (M, 4) -> out (N, M)."""
        k = cuda.grid(1)
        if k >= out.size:
            return
        m = out.shape[1]
        i, j = k // m, k % m
        w = max(min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]), ZERO)
        h = max(min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]), ZERO)
        inter = mul(w, h)
        area_a = mul(a[i, 2] - a[i, 0], a[i, 3] - a[i, 1])
        area_b = mul(b[j, 2] - b[j, 0], b[j, 3] - b[j, 1])
        union = area_a + area_b - inter
        out[i, j] = inter / union if union > ZERO else ZERO     # NOTE: 0, not NaN, for 0/0

    return iou


@register("numba-cuda", "box_iou")
def box_iou(a, b):
    """Same arguments and result as :func:`mrcnn_np.ops.boxes.box_iou`."""
    xp = array_module()
    dt = np.result_type(a.dtype, b.dtype)
    dt = dt if dt.kind == "f" else np.dtype(np.float64)         # integer boxes: float64 IoUs
    a = xp.ascontiguousarray(a.astype(dt, copy=False))
    b = xp.ascontiguousarray(b.astype(dt, copy=False))
    out = xp.empty((a.shape[0], b.shape[0]), dtype=dt)
    launch(_kernels(dt), out.size, a, b, out)
    return out
