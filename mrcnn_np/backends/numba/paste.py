"""Mask pasting as a Numba kernel, standalone (reference: ``paste_masks`` in
:mod:`mrcnn_np.detection.postprocess`, whose docstring has the sampling). Not registered: the
reference is being rewritten (pasting at the original resolution); the lead wires this in after.

For box ``(x1, y1, x2, y2)`` of size ``w x h`` and an ``m_h x m_w`` probability map, image pixel
``(px, py)`` (centre ``(px + 0.5, py + 0.5)``)::

    inside = x1 <= px + 0.5 < x2  and  y1 <= py + 0.5 < y2
    u = clip((px + 0.5 - x1) m_w / w - 0.5, 0, m_w - 1),  v likewise      (mask-cell coordinates)
    M(px, py) = inside and bilinear(mask, v, u) >= threshold

How it is shaped: parallel over boxes; each task writes only its own ``(h, w)`` plane and visits only
the pixels of its box's window (as the reference does), so there are no races. The bilinear value
is the reference's two-row product ``R_y @ mask @ R_x^T`` restricted to its four non-zero terms,
computed in float64 (the reference uses the masks' dtype: a value within ~1e-7 of the threshold may
round the other way).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from mrcnn_np.detection.boxes import _image_size
from mrcnn_np.ops.boxes import check_boxes

from ._jit import kernel


@kernel
def _paste(masks, boxes, h, w, threshold, out):
    d_n, mh, mw = masks.shape
    for d in prange(d_n):
        x1, y1, x2, y2 = boxes[d, 0], boxes[d, 1], boxes[d, 2], boxes[d, 3]
        if not (x2 > x1 and y2 > y1):
            continue                                          # empty box: empty mask
        py0, py1 = max(math.floor(y1 - 0.5), 0), min(math.ceil(y2 - 0.5) + 1, h)
        px0, px1 = max(math.floor(x1 - 0.5), 0), min(math.ceil(x2 - 0.5) + 1, w)
        for py in range(py0, py1):
            cy = py + 0.5
            if not (y1 <= cy < y2):
                continue
            v = min(max((cy - y1) * (mh / (y2 - y1)) - 0.5, 0.0), mh - 1.0)
            i0 = int(math.floor(v))
            i1 = min(i0 + 1, mh - 1)
            fy = v - i0
            for px in range(px0, px1):
                cx = px + 0.5
                if not (x1 <= cx < x2):
                    continue
                u = min(max((cx - x1) * (mw / (x2 - x1)) - 0.5, 0.0), mw - 1.0)
                j0 = int(math.floor(u))
                j1 = min(j0 + 1, mw - 1)
                fx = u - j0
                top = (1 - fx) * masks[d, i0, j0] + fx * masks[d, i0, j1]
                bot = (1 - fx) * masks[d, i1, j0] + fx * masks[d, i1, j1]
                out[d, py, px] = (1 - fy) * top + fy * bot >= threshold


def paste_masks(masks, boxes, image_size, threshold: float = 0.5):
    """masks ``(D, m_h, m_w)`` probabilities, boxes ``(D, 4)``, image_size ``(h, w)`` -> ``(D, h, w)``
    bool, as the reference ``paste_masks``."""
    check_boxes("boxes", boxes)
    if getattr(masks, "ndim", None) != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks: expected shape ({boxes.shape[0]}, m, m) (one per box), got "
                         f"{getattr(masks, 'shape', type(masks).__name__)}")
    h, w = (int(v) for v in _image_size(image_size))
    out = np.zeros((masks.shape[0], h, w), dtype=bool)
    if masks.shape[0]:
        _paste(np.ascontiguousarray(masks, dtype=np.float64),
               np.ascontiguousarray(boxes, dtype=np.float64), h, w, float(threshold), out)
    return out
