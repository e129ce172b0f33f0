"""Greedy NMS and per-label NMS as Numba kernels (reference: :mod:`mrcnn_np.ops.nms`).

Semantics of ``torchvision.ops.nms`` (the reference's docstring): boxes in stable descending score
order (ties: lower index first); a box survives unless a *kept*, higher-ranked box has
``IoU > iou_threshold`` (strict), the IoU computed in the boxes' dtype in torchvision's order and
compared with the threshold as float64.

How it is shaped: this is the plain scalar loop of torchvision's CPU kernel (``_greedy``), compiled.
Each kept box is compared once with every later box that is still alive, and an IoU is a dozen
flops, so 1,000 boxes take well under a millisecond on one core. The loop is sequential by nature
(whether box j is kept depends on every earlier decision), so this kernel is not ``parallel``: with
``prange`` over the inner loop the fork/join per kept box would cost more than the IoUs.

``batched_nms``: boxes of different labels never suppress each other. The sorted boxes are grouped
by label (a stable sort, so each group keeps its score order) and the greedy loop runs on each
group's boxes alone, which also skips every cross-label pair; the survivors are listed back in
global score order.
"""
from __future__ import annotations

import numpy as np

from mrcnn_np.dispatch import register
from mrcnn_np.ops.nms import _check_inputs

from ._jit import serial


@serial
def _greedy(x1, y1, x2, y2, area, members, t, keep):
    """Greedy NMS over the boxes ``members`` (positions in score order, best first); sets
    ``keep[m] = True`` for the survivors. ``t``: the threshold as float64."""
    T = x1.dtype.type
    k = members.shape[0]
    dead = np.zeros(k, dtype=np.bool_)
    for a in range(k):
        if dead[a]:
            continue
        i = members[a]
        keep[i] = True
        for b in range(a + 1, k):
            if dead[b]:
                continue
            j = members[b]
            w = min(x2[i], x2[j]) - max(x1[i], x1[j])
            h = min(y2[i], y2[j]) - max(y1[i], y1[j])
            w = max(w, T(0))
            h = max(h, T(0))
            inter = w * h
            iou = inter / (area[i] + area[j] - inter)       # 0/0 = NaN: never suppresses
            if iou > t:
                dead[b] = True


@serial
def _per_label(x1, y1, x2, y2, area, labels_sorted, by_label, t, keep):
    """Run :func:`_greedy` on each run of equal labels in ``by_label`` (positions grouped by label,
    each group in score order)."""
    n = by_label.shape[0]
    s = 0
    while s < n:
        e = s + 1
        while e < n and labels_sorted[by_label[e]] == labels_sorted[by_label[s]]:
            e += 1
        _greedy(x1, y1, x2, y2, area, by_label[s:e], t, keep)
        s = e


def _sorted_columns(boxes, order):
    b = boxes[order]
    if b.dtype.kind != "f":                                  # integer boxes: IoUs need floats
        b = b.astype(np.float64)
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    return x1, y1, x2, y2, (x2 - x1) * (y2 - y1)


@register("numba", "nms")
def nms(boxes, scores, iou_threshold):
    _, t = _check_inputs(boxes, scores, iou_threshold)
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    keep = np.zeros(n, dtype=np.bool_)
    _greedy(*_sorted_columns(boxes, order), np.arange(n, dtype=np.int64), np.float64(t), keep)
    return order[keep].astype(np.int64)


@register("numba", "batched_nms")
def batched_nms(boxes, scores, labels, iou_threshold):
    _, t = _check_inputs(boxes, scores, iou_threshold, labels)
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    lab = np.ascontiguousarray(labels[order]).astype(np.int64)
    by_label = np.argsort(lab, kind="stable").astype(np.int64)   # grouped by label, score order kept
    keep = np.zeros(n, dtype=np.bool_)
    _per_label(*_sorted_columns(boxes, order), lab, by_label, np.float64(t), keep)
    return order[keep].astype(np.int64)
