"""Mask pasting as a ``@cuda.jit`` kernel: one thread per image pixel of each detection.

Reference: :mod:`mrcnn_np.ops.paste` (equations P1-P4 there)::

    pixel (px, py) has its centre at (px + 0.5, py + 0.5)
    inside = x1 <= px + 0.5 < x2  and  y1 <= py + 0.5 < y2                                  (P1)
    u = clip((px + 0.5 - x1) m_w / (x2 - x1) - 0.5, 0, m_w - 1)     (the same for v, y, m_h) (P2)
    t_j = (1 - b) mask[i0, j] + b mask[i1, j]  (j = j0, j1);  value = (1 - a) t_j0 + a t_j1  (P3)
    M[d, py, px] = inside and value >= threshold                                            (P4)

The reference computes, per box, only the window of pixels inside it; here every pixel of every
detection's plane is a thread (simple, fully parallel; a pixel outside its box is simply False).
Each thread evaluates its pixel's two weights per axis as the reference does (coordinates in float64
from the boxes as given, weights cast to the mask's dtype) and blends the four cells in the
reference's order, so the values agree to rounding (on a GPU, NVVM may fuse a multiply-add). A box
that is empty, NaN or infinitely large gives an empty mask, as there.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ...dispatch import register
from ...ops.paste import check_paste_args
from ._launch import array_module, launch

__all__ = ["paste_masks"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"

    @cuda.jit(device=True)
    def axis(p, lo, hi, m):
        """Pixel ``p`` on one axis of box ``[lo, hi)`` with ``m`` mask cells: ``(inside, i0, i1, w0, w1)``
        (reference: ``paste_window``; coordinates in float64 as there)."""
        c = p + 0.5                              # the pixel's centre
        if not (c >= lo and c < hi):             # (P1) half-open: adjacent boxes share no pixel
            return False, 0, 0, T(0), T(0)
        scale = m / (hi - lo)                    # mask cells per pixel; 0 for an infinite box
        if not scale > 0.0:
            return False, 0, 0, T(0), T(0)
        u = (c - lo) * scale - 0.5               # (P2) mask-cell coordinate
        u = min(max(u, 0.0), m - 1.0)            # edge cells extend to the border
        i0 = int(math.floor(u))
        i1 = min(i0 + 1, m - 1)
        frac = u - i0
        return True, i0, i1, T(1.0 - frac), T(frac)

    @cuda.jit
    def paste(masks, boxes, threshold, out):
        """masks (D, m_h, m_w); boxes (D, 4) float64; out (D, H, W) bool."""
        h, w = out.shape[1], out.shape[2]
        m_h, m_w = masks.shape[1], masks.shape[2]
        i = cuda.grid(1)
        if i >= out.size:
            return
        px = i % w
        py = (i // w) % h
        d = i // (w * h)
        in_x, j0, j1, wx0, wx1 = axis(px, boxes[d, 0], boxes[d, 2], m_w)
        in_y, i0, i1, wy0, wy1 = axis(py, boxes[d, 1], boxes[d, 3], m_h)
        if not (in_x and in_y):
            out[d, py, px] = False
            return
        # (P3) rows first, then columns, in the reference's order
        t0 = wy0 * masks[d, i0, j0] + wy1 * masks[d, i1, j0]
        t1 = wy0 * masks[d, i0, j1] + wy1 * masks[d, i1, j1]
        out[d, py, px] = t0 * wx0 + t1 * wx1 >= threshold

    return paste


@register("numba-cuda", "paste_masks")
def paste_masks(masks, boxes, image_size, threshold=0.5):
    """Same arguments and result as :func:`mrcnn_np.ops.paste.paste_masks`: masks ``(D, m_h, m_w)``
    float probabilities, boxes ``(D, 4)``, image_size ``(h, w)`` -> ``(D, h, w)`` bool, on the
    backend's array module (nothing is read back to the host)."""
    h, w = check_paste_args(masks, boxes, image_size, threshold)
    xp = array_module()
    dt = masks.dtype
    masks = xp.ascontiguousarray(masks)
    boxes = xp.ascontiguousarray(boxes.astype(xp.float64, copy=False))
    out = xp.empty((masks.shape[0], h, w), dtype=bool)
    launch(_kernels(dt), out.size, masks, boxes, dt.type(threshold), out)
    return out
