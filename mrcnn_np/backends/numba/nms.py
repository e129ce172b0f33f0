"""Greedy NMS and per-label NMS as Numba kernels (reference: :mod:`mrcnn_np.ops.nms`).

Semantics of ``torchvision.ops.nms`` (the reference's docstring): boxes in stable descending score
order (ties: lower index first); a box survives unless a *kept*, higher-ranked box has
``IoU > iou_threshold`` (strict), the IoU computed in the boxes' dtype in torchvision's order and
compared with the threshold as float64.

How it is shaped: this is the scalar loop of torchvision's CPU kernel (``_greedy``), compiled, with
the boxes' coordinates gathered once into contiguous arrays in score order. Each kept box then
compares itself with *every* later box of its label in one branch-free loop (marking a suppressed box
again changes nothing), which the compiler vectorises: it does more IoUs than the scalar loop that
skips dead boxes, but each costs a fraction of a nanosecond. The loop is sequential by nature
(whether box j is kept depends on every earlier decision), so this kernel is not ``parallel``: with
``prange`` over the inner loop the fork/join per kept box would cost more than the IoUs.

``batched_nms``: boxes of different labels never suppress each other. The sorted boxes are grouped
by label (a stable sort, so each group keeps its score order) and the greedy loop runs on each
group's boxes alone, which also skips every cross-label pair; the survivors are listed back in
global score order (score descending, ties by index, as the stable sort gives them).
"""
from __future__ import annotations

import numpy as np

from mrcnn_np.dispatch import register
from mrcnn_np.ops.nms import _check_inputs

from ._jit import serial


@serial
def _greedy(x1, y1, x2, y2, area, start, stop, t, keep):
    """Greedy NMS over positions start..stop-1 of the coordinate arrays (one label's boxes, in score
    order, best first); sets ``keep[m] = True`` for the survivors. ``t``: the threshold as float64."""
    T = x1.dtype.type
    dead = np.zeros(stop - start, dtype=np.uint8)
    for a in range(start, stop):
        if dead[a - start]:
            continue
        keep[a] = True
        ax1, ay1, ax2, ay2, a_area = x1[a], y1[a], x2[a], y2[a], area[a]
        # NOTE: no branch in this loop (a suppressed box is simply marked again), so it runs over
        # contiguous arrays and the compiler vectorises it; 0/0 = NaN compares False, as in the
        # reference
        for b in range(a + 1, stop):
            w = min(ax2, x2[b]) - max(ax1, x1[b])
            h = min(ay2, y2[b]) - max(ay1, y1[b])
            w = w if w > T(0) else T(0)
            h = h if h > T(0) else T(0)
            inter = w * h
            iou = inter / (a_area + area[b] - inter)
            dead[b - start] |= np.uint8(np.float64(iou) > t)


@serial
def _per_label(x1, y1, x2, y2, area, labels, t, keep):
    """Run :func:`_greedy` on each run of equal ``labels`` (the boxes grouped by label, each group in
    score order)."""
    n = labels.shape[0]
    s = 0
    while s < n:
        e = s + 1
        while e < n and labels[e] == labels[s]:
            e += 1
        _greedy(x1, y1, x2, y2, area, s, e, t, keep)
        s = e


def _columns(boxes, order):
    """Contiguous x1, y1, x2, y2, area of ``boxes[order]`` (float; integer boxes become float64)."""
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
    _greedy(*_columns(boxes, order), 0, n, np.float64(t), keep)
    return order[keep].astype(np.int64)


@register("numba", "batched_nms")
def batched_nms(boxes, scores, labels, iou_threshold):
    _, t = _check_inputs(boxes, scores, iou_threshold, labels)
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    # group by label, each group still in score order (a stable sort of the score-sorted labels)
    order = order[np.argsort(labels[order], kind="stable")]
    keep = np.zeros(n, dtype=np.bool_)
    _per_label(*_columns(boxes, order), np.ascontiguousarray(labels[order]).astype(np.int64),
               np.float64(t), keep)
    kept = order[keep]
    # back to decreasing score order across labels (ties: lower index first)
    return kept[np.lexsort((kept, -scores[kept]))].astype(np.int64)
