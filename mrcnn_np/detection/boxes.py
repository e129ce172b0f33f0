"""Axis-aligned boxes: area, IoU, clipping, filtering, and the box coder of Faster R-CNN.

Boxes are ``(x1, y1, x2, y2)`` in continuous image coordinates: pixel ``(px, py)`` covers the square
``[px, px + 1) x [py, py + 1)``, so a box's width is ``x2 - x1`` (no ``+ 1``, unlike the original
Detectron) and its centre is ``x1 + w / 2``.

Area and overlap (for boxes ``a`` and ``b``)::

    area(a)  = (x2 - x1) (y2 - y1)
    inter    = max(0, min(a.x2, b.x2) - max(a.x1, b.x1)) * max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    IoU(a,b) = inter / (area(a) + area(b) - inter)          (0 where the union is 0)

Box coding (Faster R-CNN, eq. 2): a box ``g`` is described relative to a reference ``p`` (an anchor
or a proposal) by four numbers that do not depend on where ``p`` is or how big it is::

    t_x = w_x (g_cx - p_cx) / p_w        t_w = w_w log(g_w / p_w)
    t_y = w_y (g_cy - p_cy) / p_h        t_h = w_h log(g_h / p_h)

with weights ``(w_x, w_y, w_w, w_h)``: ``(1, 1, 1, 1)`` for the RPN and ``(10, 10, 5, 5)`` for the box
head (they scale the targets to roughly unit variance so one smooth-L1 beta suits both).
Decoding inverts it, with ``t_w, t_h`` clamped at ``log(1000 / 16)`` before the exponential so an
untrained head cannot produce ``inf`` boxes.

Every function runs on the array module of its inputs (NumPy or CuPy).
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from ..ops.boxes import _float_dtype, box_area, box_iou, check_boxes

__all__ = ["box_area", "box_iou", "clip_boxes", "remove_small_boxes", "check_boxes", "BoxCoder",
           "BBOX_XFORM_CLIP"]

#: Largest ``t_w`` / ``t_h`` fed to ``exp`` when decoding: a box can grow at most 1000/16 = 62.5x.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _image_size(image_size):
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size: expected (h, w), got {image_size!r}")
    h, w = image_size
    if not (h >= 0 and w >= 0):
        raise ValueError(f"image_size: expected non-negative (h, w), got {image_size!r}")
    return h, w


def clip_boxes(boxes, image_size):
    """Clip boxes ``(..., 4)`` to an image of ``image_size = (h, w)``: x to ``[0, w]``, y to ``[0, h]``.

    Returns a new array of the same shape (also works on class-specific boxes ``(R, K, 4)``)."""
    if getattr(boxes, "ndim", 0) < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes: expected an array (..., 4), got shape "
                         f"{getattr(boxes, 'shape', type(boxes).__name__)}")
    h, w = _image_size(image_size)
    xp = get_array_module(boxes)
    out = boxes.copy()
    out[..., 0::2] = xp.clip(boxes[..., 0::2], 0, w)
    out[..., 1::2] = xp.clip(boxes[..., 1::2], 0, h)
    return out


def remove_small_boxes(boxes, min_size: float):
    """Indices (int64, ascending) of the boxes ``(N, 4)`` whose width and height are both
    ``>= min_size``."""
    check_boxes("boxes", boxes)
    xp = get_array_module(boxes)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return xp.nonzero((w >= min_size) & (h >= min_size))[0].astype(xp.int64)


def _size_centre(boxes):
    """(R, 4) boxes -> widths, heights, centre x, centre y, each (R,): ``w = x2 - x1``, ``cx = x1 + w/2``."""
    half = boxes.dtype.type(0.5)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return w, h, boxes[:, 0] + half * w, boxes[:, 1] + half * h


class BoxCoder:
    """Encode boxes as deltas relative to reference boxes, and decode them back (see module doc).

    ``weights = (w_x, w_y, w_w, w_h)``; ``bbox_xform_clip`` caps ``t_w, t_h`` before ``exp``.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip: float = BBOX_XFORM_CLIP):
        if len(weights) != 4 or not all(float(v) > 0 for v in weights):
            raise ValueError(f"weights: expected four positive numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(v) for v in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self):
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, reference_boxes, proposals):
        """Deltas that turn ``proposals`` into ``reference_boxes``.

        reference_boxes: ``(N, 4)`` the targets (matched ground truth); proposals: ``(N, 4)`` the
        boxes they are measured from (anchors or proposals). Returns ``(N, 4)`` ``(t_x, t_y, t_w, t_h)``
        in the dtype of ``reference_boxes``::

            t_x = w_x (g_cx - p_cx) / p_w,   t_w = w_w log(g_w / p_w)   (same for y, h)

        Both sets need positive widths and heights (a zero-size box has no log-size).
        """
        check_boxes("reference_boxes", reference_boxes)
        check_boxes("proposals", proposals)
        if reference_boxes.shape[0] != proposals.shape[0]:
            raise ValueError(f"proposals: expected {reference_boxes.shape[0]} boxes (one per "
                             f"reference box), got {proposals.shape[0]}")
        xp = get_array_module(reference_boxes, proposals)
        dt = _float_dtype(xp, reference_boxes)
        g = reference_boxes.astype(dt, copy=False)
        p = proposals.astype(dt, copy=False)
        wx, wy, ww, wh = (dt.type(v) for v in self.weights)
        pw, ph, pcx, pcy = _size_centre(p)
        gw, gh, gcx, gcy = _size_centre(g)
        return xp.stack([wx * (gcx - pcx) / pw, wy * (gcy - pcy) / ph,
                         ww * xp.log(gw / pw), wh * xp.log(gh / ph)], axis=1)

    def decode(self, deltas, boxes):
        """Apply ``deltas`` to ``boxes``.

        boxes: ``(R, 4)``. deltas: ``(R, 4)``, class-specific ``(R, 4K)`` (four columns per class,
        class-major: ``[t_x^0, t_y^0, t_w^0, t_h^0, t_x^1, ...]``), or ``(R, K, 4)``.
        Returns boxes of the same shape as ``deltas``, in its dtype: ``(R, 4)``, ``(R, 4K)`` or
        ``(R, K, 4)`` (reshape an ``(R, 4K)`` result with ``.reshape(R, K, 4)`` to index class ``k``
        as ``[:, k]``)::

            c_x = t_x / w_x * p_w + p_cx          w = exp(min(t_w / w_w, clip)) * p_w
            box = (c_x - w/2, c_y - h/2, c_x + w/2, c_y + h/2)
        """
        check_boxes("boxes", boxes)
        xp = get_array_module(deltas, boxes)
        shape = tuple(deltas.shape)
        if deltas.ndim == 3 and shape[2] == 4:
            d = deltas.reshape(shape[0], -1)                    # (R, K, 4) -> (R, 4K)
        elif deltas.ndim == 2 and shape[1] % 4 == 0 and shape[1] > 0:
            d = deltas
        else:
            raise ValueError(f"deltas: expected (R, 4), (R, 4K) or (R, K, 4), got shape {shape}")
        if shape[0] != boxes.shape[0]:
            raise ValueError(f"deltas: expected {boxes.shape[0]} rows (one per box), got {shape[0]}")
        dt = _float_dtype(xp, deltas)
        d = d.astype(dt, copy=False)
        b = boxes.astype(dt, copy=False)
        wx, wy, ww, wh = (dt.type(v) for v in self.weights)
        half = dt.type(0.5)
        pw, ph, pcx, pcy = _size_centre(b)
        dx, dy = d[:, 0::4] / wx, d[:, 1::4] / wy              # (R, K) each
        dw = xp.minimum(d[:, 2::4] / ww, dt.type(self.bbox_xform_clip))
        dh = xp.minimum(d[:, 3::4] / wh, dt.type(self.bbox_xform_clip))
        cx = dx * pw[:, None] + pcx[:, None]
        cy = dy * ph[:, None] + pcy[:, None]
        half_w = half * (xp.exp(dw) * pw[:, None])
        half_h = half * (xp.exp(dh) * ph[:, None])
        out = xp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=2)  # (R, K, 4)
        return out.reshape(shape)
