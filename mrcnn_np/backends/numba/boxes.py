"""Pairwise IoU as a Numba kernel (reference: :func:`mrcnn_np.ops.boxes.box_iou`).

``IoU[i, j] = inter / (area_i + area_j - inter)``, 0 where the union is 0, in the reference's (and
torchvision's) order of operations, so float32 results agree bit for bit. One pass over the (N, M)
pairs with the areas computed once, not once per pair. Serial (``_jit.serial``): the matrices of a
training step (anchors x ground truth, proposals x ground truth) are small enough that a parallel
region's fork/join costs more than it saves.
"""
from __future__ import annotations

import numpy as np

from mrcnn_np.dispatch import register
from mrcnn_np.ops.boxes import _float_dtype, check_box_iou_args

from ._jit import serial


@serial
def _iou(a, b, out):
    T = a.dtype.type
    n, m = a.shape[0], b.shape[0]
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    for i in range(n):
        area_a = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
        for j in range(m):
            w = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0])
            h = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1])
            w = max(w, T(0))
            h = max(h, T(0))
            inter = w * h
            union = area_a + area_b[j] - inter
            out[i, j] = inter / union if union > 0 else T(0)


@register("numba", "box_iou")
def box_iou(a, b):
    check_box_iou_args(a, b)
    dt = _float_dtype(np, a, b)
    a = np.ascontiguousarray(a, dtype=dt)
    b = np.ascontiguousarray(b, dtype=dt)
    out = np.empty((a.shape[0], b.shape[0]), dtype=dt)
    if out.size:
        _iou(a, b, out)
    return out
