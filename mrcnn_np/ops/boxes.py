"""Box area and pairwise IoU, and the check every box argument gets: the box ops with kernels.

Boxes are ``(x1, y1, x2, y2)`` in continuous image coordinates (a box's width is ``x2 - x1``)::

    area(a)  = (x2 - x1) (y2 - y1)
    inter    = max(0, min(a.x2, b.x2) - max(a.x1, b.x1)) * max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    IoU(a,b) = inter / (area(a) + area(b) - inter)          (0 where the union is 0)

They live under ``ops`` (as in ``torchvision.ops``) because NMS builds on them and backends give them
kernels; :mod:`mrcnn_np.detection.boxes` adds clipping, filtering and the box coder on top.
"""
from __future__ import annotations

from ..backend import get_array_module, to_numpy
from ._check import values_on_host

__all__ = ["box_area", "box_iou", "check_boxes", "check_box_iou_args"]


def check_boxes(name: str, boxes, ordered: bool = False) -> None:
    """``boxes`` must be an ``(N, 4)`` array; with ``ordered=True`` also finite with ``x1 <= x2`` and
    ``y1 <= y2`` (ground truth). Raises ``ValueError`` naming ``name`` and the first offending box."""
    if getattr(boxes, "ndim", None) != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: expected an (N, 4) array of (x1, y1, x2, y2) boxes, got shape "
                         f"{getattr(boxes, 'shape', type(boxes).__name__)}")
    if not ordered or boxes.shape[0] == 0 or not values_on_host(boxes):
        return
    xp = get_array_module(boxes)
    finite = to_numpy(xp.isfinite(boxes).all(axis=1))
    if not finite.all():
        i = int(finite.argmin())
        raise ValueError(f"{name}: box {i} is not finite: {to_numpy(boxes[i]).tolist()}")
    bad = to_numpy((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"{name}: box {i} has x2 < x1 or y2 < y1: {to_numpy(boxes[i]).tolist()}; "
                         f"expected (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")


def box_area(boxes):
    """Area of each box: boxes ``(..., 4)`` -> ``(...)``, ``(x2 - x1) (y2 - y1)``."""
    if getattr(boxes, "ndim", 0) < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes: expected an array (..., 4), got shape "
                         f"{getattr(boxes, 'shape', type(boxes).__name__)}")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _float_dtype(xp, *arrays):
    dt = xp.result_type(*[a.dtype for a in arrays])
    return dt if dt.kind == "f" else xp.dtype(xp.float64)


def check_box_iou_args(a, b):
    """The argument check of :func:`box_iou` (kernels get it too)."""
    check_boxes("a", a)
    check_boxes("b", b)


def box_iou(a, b):
    """Pairwise intersection over union: a ``(N, 4)``, b ``(M, 4)`` -> ``(N, M)``.

    ``IoU[i, j] = inter(a_i, b_j) / (area(a_i) + area(b_j) - inter(a_i, b_j))``, computed in the
    order ``torchvision.ops.box_iou`` uses, so float32 results agree bit for bit. Integer boxes give
    float64 IoUs; float inputs keep their (promoted) dtype.

    # NOTE: where the union is 0 (two zero-area boxes) the IoU is defined as 0, not 0/0 = NaN: a
    # degenerate box overlaps nothing, and a NaN would poison every max/argmax taken over the matrix.
    """
    check_box_iou_args(a, b)
    xp = get_array_module(a, b)
    dt = _float_dtype(xp, a, b)
    a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    lt = xp.maximum(a[:, None, :2], b[None, :, :2])        # (N, M, 2) top-left of the intersection
    rb = xp.minimum(a[:, None, 2:], b[None, :, 2:])        # (N, M, 2) bottom-right
    wh = xp.maximum(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]                         # (N, M)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    positive = union > 0
    return xp.where(positive, inter / xp.where(positive, union, 1), 0).astype(dt, copy=False)
