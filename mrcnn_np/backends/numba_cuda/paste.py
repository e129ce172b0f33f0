"""Mask pasting as a ``@cuda.jit`` kernel: one thread per image pixel of each detection.

NOT registered: :func:`mrcnn_np.detection.postprocess.paste_masks` (the reference, and its semantics
here) is being rewritten; the lead wires a kernel in after that lands. Semantics of the current
reference (see its module docstring)::

    pixel (px, py) has its centre at (px + 0.5, py + 0.5)
    inside = x1 <= px + 0.5 < x2  and  y1 <= py + 0.5 < y2
    u = clip((px + 0.5 - x1) m_w / (x2 - x1) - 0.5, 0, m_w - 1)     (the same for v, y, m_h)
    M[d, py, px] = inside and bilinear(mask_d, v, u) >= threshold

The reference computes, per box, only a window of pixels, as ``R_y @ mask @ R_x^T`` with two bilinear
weights per row of ``R``. Here each thread evaluates its pixel's two weights per axis the same way
(coordinates in float64, weights cast to the mask's dtype) and combines the four cells in the order
that product adds them, so the values agree to rounding; a pixel outside the box is simply False.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ...detection.boxes import _image_size
from ._launch import array_module, launch

__all__ = ["paste_masks"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"

    @cuda.jit(device=True)
    def axis(p, lo, hi, m):
        """Pixel ``p`` on one axis of box ``[lo, hi)`` with ``m`` mask cells: ``(inside, i0, i1, w0, w1)``
        (reference: ``_axis_weights``; coordinates in float64 as there)."""
        c = p + 0.5                              # the pixel's centre
        if not (c >= lo and c < hi):             # half-open: adjacent boxes share no pixel
            return False, 0, 0, T(0), T(0)
        u = (c - lo) * (m / (hi - lo)) - 0.5     # mask-cell coordinate
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
        # (R_y @ mask) first, then @ R_x^T, as the reference's product
        t0 = wy0 * masks[d, i0, j0] + wy1 * masks[d, i1, j0]
        t1 = wy0 * masks[d, i0, j1] + wy1 * masks[d, i1, j1]
        out[d, py, px] = t0 * wx0 + t1 * wx1 >= threshold

    return paste


def paste_masks(masks, boxes, image_size, threshold: float = 0.5):
    """Same arguments and result as :func:`mrcnn_np.detection.postprocess.paste_masks` (its current
    semantics): masks ``(D, m_h, m_w)`` probabilities, boxes ``(D, 4)``, image_size ``(h, w)`` ->
    ``(D, h, w)`` bool, on the backend's array module."""
    xp = array_module()
    if getattr(boxes, "ndim", None) != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected an (N, 4) array of (x1, y1, x2, y2) boxes, got shape "
                         f"{getattr(boxes, 'shape', type(boxes).__name__)}")
    if getattr(masks, "ndim", None) != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks: expected shape ({boxes.shape[0]}, m, m) (one per box), got "
                         f"{getattr(masks, 'shape', type(masks).__name__)}")
    h, w = (int(v) for v in _image_size(image_size))
    dt = masks.dtype if masks.dtype.kind == "f" else np.dtype(np.float32)
    masks = xp.ascontiguousarray(xp.asarray(masks).astype(dt, copy=False))
    boxes = xp.ascontiguousarray(xp.asarray(boxes).astype(xp.float64))
    out = xp.empty((masks.shape[0], h, w), dtype=bool)
    launch(_kernels(dt), out.size, masks, boxes, dt.type(threshold), out)
    return out
