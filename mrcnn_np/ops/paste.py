"""Mask pasting (notes, section 4, inference): each detection's ``m x m`` mask probabilities, which
live in box coordinates, become a mask of image pixels.

Shapes: masks ``(D, m_h, m_w)`` float probabilities, boxes ``(D, 4)`` ``(x1, y1, x2, y2)`` in image
pixels, image_size ``(h, w)`` -> ``(D, h, w)`` bool.

A box of size ``(x2 - x1) x (y2 - y1)`` holds the ``m_h x m_w`` map; mask cell ``(i, j)`` has its
centre at ``(x1 + (j + 0.5) (x2 - x1) / m_w,  y1 + (i + 0.5) (y2 - y1) / m_h)``. Image pixel
``(px, py)`` is represented by its centre ``(px + 0.5, py + 0.5)`` (detectron2's choice)::

    inside(px, py) = x1 <= px + 0.5 < x2  and  y1 <= py + 0.5 < y2                      (P1)
                     (half-open: two boxes that touch share no pixel)
    u = clip((px + 0.5 - x1) m_w / (x2 - x1) - 0.5, 0, m_w - 1)                         (P2)
    v = clip((py + 0.5 - y1) m_h / (y2 - y1) - 0.5, 0, m_h - 1)
        (mask-cell coordinates; the clip makes the edge cells reach the box's border)
    j0 = floor(u),  j1 = min(j0 + 1, m_w - 1),  a = u - j0          (and i0, i1, b from v)
    t_j   = (1 - b) mask[i0, j] + b mask[i1, j]            for j = j0, j1   (rows first...)  (P3)
    value = (1 - a) t_j0 + a t_j1                                           (... then columns)
    M[d, py, px] = inside(px, py)  and  value >= threshold                                (P4)

Pixels outside the box are False; the parts of a box outside the image are cut off; a box too thin
to hold a pixel centre (or empty, ``x2 <= x1``, or NaN) gives an empty mask, and so does a box of
infinite size (``m / (x2 - x1) = 0``: no cell coordinates). Coordinates (P1, P2) are computed in
float64 from the boxes as given; the weights ``1 - a, a, 1 - b, b`` are then rounded to the masks'
dtype and (P3) is evaluated in that dtype, in the order written, as every kernel evaluates it.

The box's window. By (P1) the pixels inside a box are, along x, ``ceil(x1 - 0.5) <= px <
ceil(x2 - 0.5)`` (exact in float64: ``x - 0.5`` and ``px + 0.5`` are both exact), cut to ``[0, w)``;
likewise along y. Only that window is computed, so a detection costs its box's area, not the
image's: pasting 100 small boxes into a 4000 x 3000 photo reads and writes 100 small windows of a
zeroed ``(D, h, w)`` result. (P3) over a window is two gathers: the rows ``i0, i1`` of the mask
blended per pixel row, then the columns ``j0, j1`` of that blend per pixel column.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..backend import get_array_module, to_numpy
from ._check import check_float
from .boxes import check_boxes

__all__ = ["paste_masks", "check_paste_args", "paste_window"]


def check_paste_args(masks, boxes, image_size, threshold=0.5):
    """The argument check of :func:`paste_masks` (kernels get it too): shapes and dtypes only, no
    array value is read (on a GPU that would make the host wait). Returns ``(h, w)`` as ints."""
    check_boxes("boxes", boxes)
    if getattr(boxes, "dtype", None) is None or boxes.dtype.kind not in "fiu":
        raise ValueError(f"boxes: expected a float or integer array, got dtype "
                         f"{getattr(boxes, 'dtype', type(boxes).__name__)}")
    if getattr(masks, "ndim", None) != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks: expected shape ({boxes.shape[0]}, m, m) (one per box), got "
                         f"{getattr(masks, 'shape', type(masks).__name__)}")
    check_float("masks", masks)
    if masks.shape[0] and min(masks.shape[1:]) < 1:
        raise ValueError(f"masks: expected at least one cell per mask (D, m_h >= 1, m_w >= 1), got "
                         f"shape {tuple(masks.shape)}")
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size: expected (h, w), got {image_size!r}")
    for v in image_size:
        if (isinstance(v, bool) or not isinstance(v, numbers.Real)
                or not (math.isfinite(v) and v >= 0 and v == int(v))):
            raise ValueError(f"image_size: expected two whole numbers >= 0 (h, w), got {image_size!r}")
    # NOTE: numbers.Real, not float(threshold): a 0-d device array would be read back to the host
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(f"threshold: expected a number, got {type(threshold).__name__} {threshold!r}")
    return int(image_size[0]), int(image_size[1])


def paste_window(lo: float, hi: float, size: int, m: int):
    """One axis of one box ``[lo, hi)`` over an image axis of ``size`` pixels and ``m`` mask cells.

    Returns ``(start, stop, i0, i1, frac)``: the window ``start <= p < stop`` of the pixels whose
    centres lie in the box (P1), cut to ``[0, size)``, and per pixel of it the two mask cells and
    the weight ``frac`` of the second (P2), all NumPy (float64 coordinates). An empty window
    (``stop <= start``) when no pixel centre lies inside, or the box is empty, NaN or infinite."""
    scale = m / (hi - lo) if hi > lo else 0.0                  # mask cells per pixel
    if not scale > 0:                                         # empty, NaN, or infinitely large
        return 0, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    # NOTE: clamp before int(): ceil of a coordinate far outside the image needs no huge integer
    start = int(math.ceil(min(max(lo - 0.5, 0.0), size)))
    stop = int(math.ceil(min(max(hi - 0.5, 0.0), size)))
    c = np.arange(start, stop, dtype=np.float64) + 0.5        # pixel centres, all in [lo, hi)
    u = np.clip((c - lo) * scale - 0.5, 0, m - 1)             # (P2) mask-cell coordinates
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, m - 1)
    return start, stop, i0, i1, u - i0


def paste_masks(masks, boxes, image_size, threshold: float = 0.5):
    """Paste box-relative mask probabilities into the image (module docstring, P1-P4).

    masks ``(D, m_h, m_w)`` float probabilities; boxes ``(D, 4)`` ``(x1, y1, x2, y2)`` in pixels of
    the image (float or integer); image_size ``(h, w)``; threshold: a number.
    Returns ``(D, h, w)`` bool in the masks' array module:
    ``M[d, py, px] = inside(box_d, px, py) and bilinear(masks[d], v, u) >= threshold``.

    The loop is over detections; each visits only its box's window (:func:`paste_window`), so the
    work is the boxes' area. It reads every box on the host (one copy of ``(D, 4)`` numbers)."""
    h, w = check_paste_args(masks, boxes, image_size, threshold)
    xp = get_array_module(masks)
    dt = masks.dtype
    thr = dt.type(threshold)                                  # compared in the masks' dtype (P4)
    d_n, m_h, m_w = masks.shape
    out = xp.zeros((d_n, h, w), dtype=bool)
    for d, (x1, y1, x2, y2) in enumerate(to_numpy(boxes).astype(np.float64).tolist()):
        ys, ye, i0, i1, b = paste_window(y1, y2, h, m_h)      # rows of the window, (h',) each
        xs, xe, j0, j1, a = paste_window(x1, x2, w, m_w)      # columns of the window, (w',) each
        if ye <= ys or xe <= xs:
            continue                                          # no pixel centre inside: empty mask
        # the weights: 1 - frac in float64, then rounded to the masks' dtype (as the kernels do)
        wy0, wy1 = xp.asarray((1 - b).astype(dt)), xp.asarray(b.astype(dt))     # (h',)
        wx0, wx1 = xp.asarray((1 - a).astype(dt)), xp.asarray(a.astype(dt))     # (w',)
        i0, i1, j0, j1 = (xp.asarray(v) for v in (i0, i1, j0, j1))
        mask = masks[d]                                       # (m_h, m_w)
        # (P3), rows first: t[y, :] = (1 - b) mask[i0, :] + b mask[i1, :]       (h', m_w)
        t = wy0[:, None] * mask[i0, :] + wy1[:, None] * mask[i1, :]
        # ... then columns: value[y, x] = (1 - a) t[y, j0] + a t[y, j1]          (h', w')
        value = t[:, j0] * wx0[None, :] + t[:, j1] * wx1[None, :]
        out[d, ys:ye, xs:xe] = value >= thr                   # (P4); (P1) holds in the window
    return out
