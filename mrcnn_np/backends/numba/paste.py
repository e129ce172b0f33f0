"""Mask pasting as a Numba CPU kernel (reference: :mod:`mrcnn_np.ops.paste`, equations P1-P4).

For box ``(x1, y1, x2, y2)`` and an ``m_h x m_w`` probability map, image pixel ``(px, py)`` (centre
``(px + 0.5, py + 0.5)``)::

    inside = x1 <= px + 0.5 < x2  and  y1 <= py + 0.5 < y2                                  (P1)
    u = clip((px + 0.5 - x1) m_w / (x2 - x1) - 0.5, 0, m_w - 1),  v likewise                (P2)
    t_j = (1 - b) mask[i0, j] + b mask[i1, j]  (j = j0, j1);  value = (1 - a) t_j0 + a t_j1  (P3)
    M(px, py) = inside and value >= threshold                                               (P4)

How it is shaped: parallel over boxes; each task writes only its own ``(h, w)`` plane and visits only
the pixels of its box's window, ``ceil(x1 - 0.5) <= px < ceil(x2 - 0.5)`` cut to the image (as the
reference does), so there are no races and a detection costs its box's area. Coordinates are float64
(boxes read as given, as in the reference); the four weights are rounded to the masks' dtype and
(P3) runs in that dtype in the reference's order, so the result is the reference's, bit for bit
(no fastmath: LLVM fuses no multiply-add).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from mrcnn_np.dispatch import register
from mrcnn_np.ops.paste import check_paste_args

from ._jit import kernel

__all__ = ["paste_masks"]


@kernel
def _paste(masks, boxes, threshold, out):
    """masks (D, m_h, m_w); boxes (D, 4) float64; threshold in the masks' dtype; out (D, h, w) bool,
    zeroed: only each box's window is written."""
    T = masks.dtype.type
    d_n, mh, mw = masks.shape
    h, w = out.shape[1], out.shape[2]
    for d in prange(d_n):
        x1, y1, x2, y2 = boxes[d, 0], boxes[d, 1], boxes[d, 2], boxes[d, 3]
        if not (x2 > x1 and y2 > y1):
            continue                                          # empty (or NaN) box: empty mask
        sx, sy = mw / (x2 - x1), mh / (y2 - y1)               # mask cells per pixel
        if not (sx > 0.0 and sy > 0.0):
            continue                                          # infinitely large box: empty mask
        # the window: the pixels whose centres lie in the box (P1), cut to the image
        py0 = int(math.ceil(min(max(y1 - 0.5, 0.0), h)))
        py1 = int(math.ceil(min(max(y2 - 0.5, 0.0), h)))
        px0 = int(math.ceil(min(max(x1 - 0.5, 0.0), w)))
        px1 = int(math.ceil(min(max(x2 - 0.5, 0.0), w)))
        for py in range(py0, py1):
            v = min(max((py + 0.5 - y1) * sy - 0.5, 0.0), mh - 1.0)      # (P2)
            i0 = int(math.floor(v))
            i1 = min(i0 + 1, mh - 1)
            wy0, wy1 = T(1.0 - (v - i0)), T(v - i0)
            for px in range(px0, px1):
                u = min(max((px + 0.5 - x1) * sx - 0.5, 0.0), mw - 1.0)
                j0 = int(math.floor(u))
                j1 = min(j0 + 1, mw - 1)
                wx0, wx1 = T(1.0 - (u - j0)), T(u - j0)
                t0 = wy0 * masks[d, i0, j0] + wy1 * masks[d, i1, j0]     # (P3) rows first,
                t1 = wy0 * masks[d, i0, j1] + wy1 * masks[d, i1, j1]
                out[d, py, px] = t0 * wx0 + t1 * wx1 >= threshold         # then columns; (P4)


@register("numba", "paste_masks")
def paste_masks(masks, boxes, image_size, threshold=0.5):
    """Same arguments and result as :func:`mrcnn_np.ops.paste.paste_masks`: masks ``(D, m_h, m_w)``
    float probabilities, boxes ``(D, 4)``, image_size ``(h, w)`` -> ``(D, h, w)`` bool."""
    h, w = check_paste_args(masks, boxes, image_size, threshold)
    out = np.zeros((masks.shape[0], h, w), dtype=bool)
    if masks.shape[0] and h and w:
        _paste(np.ascontiguousarray(masks), np.ascontiguousarray(boxes, dtype=np.float64),
               masks.dtype.type(threshold), out)
    return out
