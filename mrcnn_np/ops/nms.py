"""Non-maximum suppression: keep the best box of each cluster of overlapping boxes.

Greedy NMS (the semantics of ``torchvision.ops.nms``)::

    order boxes by score, highest first (ties: lower index first)
    for each box b in that order:
        if no box kept so far has IoU(kept, b) > iou_threshold:  keep b

A box is suppressed only when its IoU with a kept, higher-ranked box is *strictly* greater than the
threshold. The result is the kept indices (int64) in decreasing score order.

How it is vectorised. The greedy loop is sequential, but its expensive part, the IoUs, is not.
The sorted boxes are taken in blocks of ``B``:

1. the block's still-alive boxes are compared with each other: a ``(c, c)`` boolean matrix
   ``S[i, j] = IoU(i, j) > t`` for ``i < j`` (upper triangle);
2. a greedy pass over ``S`` decides which of them survive (the only Python loop, over rows, on a
   small boolean matrix; on a GPU this matrix is copied to the host, like torchvision's CUDA kernel
   copies its bit mask);
3. the block's kept boxes then suppress, in one ``(k, r)`` IoU matrix, every later box still alive.

So each kept box is compared once with every later alive box, as in the scalar loop, but the work is
done by array operations. IoUs are computed in the input dtype in the same order of operations as
torchvision's CPU kernel and compared with the threshold as a float64 number, so results agree
exactly, ties at the threshold included.

``batched_nms`` runs NMS separately per label (class, or FPN level) in one pass: boxes with different
labels never suppress each other.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_numpy
from ._check import values_on_host
from .boxes import check_boxes

__all__ = ["nms", "batched_nms", "batched_nms_coordinate_trick", "check_nms_args",
           "check_batched_nms_args"]

_BLOCK = 128            # boxes decided per greedy block (128-256 measured best at 4,000 boxes)


def _check_inputs(boxes, scores, iou_threshold, labels=None):
    check_boxes("boxes", boxes)
    xp = get_array_module(boxes)
    if getattr(scores, "ndim", None) != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores: expected shape ({boxes.shape[0]},) (one per box), got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    if labels is not None and (getattr(labels, "ndim", None) != 1 or labels.shape[0] != boxes.shape[0]):
        raise ValueError(f"labels: expected shape ({boxes.shape[0]},) (one per box), got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")
    try:
        t = float(iou_threshold)
    except (TypeError, ValueError):
        raise ValueError(f"iou_threshold: expected a number, got {iou_threshold!r}") from None
    if t != t:
        raise ValueError("iou_threshold: expected a number, got NaN")
    if scores.shape[0] and values_on_host(scores) and bool(xp.isnan(scores).any()):
        raise ValueError("scores: contains NaN (its place in the score order is undefined)")
    return xp, t


def check_nms_args(boxes, scores, iou_threshold):
    """The argument check of :func:`nms` (kernels get it too)."""
    _check_inputs(boxes, scores, iou_threshold)


def check_batched_nms_args(boxes, scores, labels, iou_threshold):
    """The argument check of :func:`batched_nms` (kernels get it too)."""
    _check_inputs(boxes, scores, iou_threshold, labels)


def _stable_argsort_desc(xp, scores):
    """Indices that sort ``scores`` from high to low; equal scores keep their index order."""
    # NOTE: negating and sorting stably keeps ties in index order, which is what torchvision's stable
    # descending sort does; a plain argsort()[::-1] would reverse them. (CuPy's sort is always stable
    # and accepts kind="stable".)
    return xp.argsort(-scores, kind="stable")


def _suppression(x1, y1, x2, y2, area, i, j, t, labels):
    """Boolean ``(len(i), len(j))``: IoU(box i, box j) > t (and, if given, same label)."""
    xp = get_array_module(x1)
    w = xp.minimum(x2[i][:, None], x2[j][None, :])
    w -= xp.maximum(x1[i][:, None], x1[j][None, :])
    xp.maximum(w, 0, out=w)
    h = xp.minimum(y2[i][:, None], y2[j][None, :])
    h -= xp.maximum(y1[i][:, None], y1[j][None, :])
    xp.maximum(h, 0, out=h)
    inter = w
    inter *= h                                                   # (k, r)
    union = area[i][:, None] + area[j][None, :]
    union -= inter
    inter /= union                                               # IoU; 0/0 = NaN never suppresses
    out = inter > t                                              # t is a float64 scalar
    if labels is not None:
        out &= labels[i][:, None] == labels[j][None, :]
    return out


def _greedy_rows(s):
    """Greedy pass over an upper-triangular host boolean matrix ``s`` (c, c): which rows survive."""
    c = s.shape[0]
    alive = np.ones(c, dtype=bool)
    for r in range(c - 1):
        if alive[r]:
            alive[r + 1:] &= ~s[r, r + 1:]
    return alive


def _nms_sorted(boxes, order, t, labels):
    """Greedy NMS on ``boxes[order]``; returns positions into ``order`` of the kept boxes."""
    xp = get_array_module(boxes)
    n = order.shape[0]
    b = boxes[order]
    if b.dtype.kind != "f":                                      # integer boxes: IoUs need floats
        b = b.astype(xp.float64)
    x1, y1, x2, y2 = (xp.ascontiguousarray(b[:, k]) for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    lab = labels[order] if labels is not None else None
    t = np.float64(t)
    alive = xp.ones(n, dtype=bool)
    kept = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in range(0, n, _BLOCK):
            e = min(s + _BLOCK, n)
            cand = xp.nonzero(alive[s:e])[0] + s                 # alive boxes of this block
            if cand.shape[0] == 0:
                continue
            sup = xp.triu(_suppression(x1, y1, x2, y2, area, cand, cand, t, lab), 1)
            keep_b = cand[xp.asarray(_greedy_rows(to_numpy(sup)))]
            kept.append(keep_b)
            rest = xp.nonzero(alive[e:])[0] + e                  # later boxes still alive
            if rest.shape[0]:
                hit = _suppression(x1, y1, x2, y2, area, keep_b, rest, t, lab).any(axis=0)
                alive[rest[hit]] = False
    if not kept:
        return xp.zeros(0, dtype=xp.int64)
    return xp.concatenate(kept)


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression (semantics of ``torchvision.ops.nms``).

    boxes: ``(N, 4)`` ``(x1, y1, x2, y2)``; scores: ``(N,)``; iou_threshold: a box is dropped when its
    IoU with a kept higher-scored box is ``> iou_threshold``.
    Returns the kept indices, int64 ``(K,)``, in decreasing score order (ties: lower index first).
    """
    xp, t = _check_inputs(boxes, scores, iou_threshold)
    if boxes.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    order = _stable_argsort_desc(xp, scores)
    return order[_nms_sorted(boxes, order, t, None)].astype(xp.int64)


def batched_nms(boxes, scores, labels, iou_threshold):
    """NMS done independently per label (semantics of ``torchvision.ops.batched_nms``).

    boxes: ``(N, 4)``; scores: ``(N,)``; labels: ``(N,)`` integers (class or FPN level).
    Returns int64 ``(K,)`` kept indices in decreasing score order (ties: lower index first); the same
    set as running :func:`nms` on each label's boxes and merging.

    # NOTE: torchvision gets per-label NMS from one NMS call by shifting each box by
    # ``label * (max coordinate + 1)`` so boxes of different labels cannot overlap (see
    # :func:`batched_nms_coordinate_trick`). In floating point the shift rounds the coordinates and
    # can move an IoU across the threshold, so here the pairwise test itself requires equal labels:
    # the exact result of the per-label loop (which torchvision also switches to on large CPU inputs).
    """
    xp, t = _check_inputs(boxes, scores, iou_threshold, labels)
    if boxes.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    order = _stable_argsort_desc(xp, scores)
    return order[_nms_sorted(boxes, order, t, labels)].astype(xp.int64)


def batched_nms_coordinate_trick(boxes, scores, labels, iou_threshold):
    """Per-label NMS with one plain NMS call: move each label's boxes to their own region.

    ``offset_i = labels_i * (max(boxes) + 1)``; ``nms(boxes + offset[:, None], scores, t)``. Boxes
    with different labels end up at least 1 apart, so they never overlap. Exact when the shifted
    coordinates are exactly representable (e.g. integer coordinates); otherwise the rounding of the
    shift can flip an IoU that sits at the threshold, which is why :func:`batched_nms` masks by label
    instead. Shapes and result as :func:`batched_nms`.
    """
    xp, t = _check_inputs(boxes, scores, iou_threshold, labels)
    if boxes.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    offsets = labels.astype(boxes.dtype) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, t)
