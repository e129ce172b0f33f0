"""Checking ground truth before it meets the matcher.

A ground-truth box must be finite with ``x1 <= x2`` and ``y1 <= y2``; anything else is a bug in the
data or the transforms and raises ``ValueError`` naming the argument and the box index.
A box with zero width or height is legal but useless (it has no IoU with anything and no
log-size to regress to), so it is dropped with a ``UserWarning``.

``keep`` (the indices of the boxes that stay) lets callers report matches as indices into the
*original* list, so masks and labels indexed by the caller stay aligned.
"""
from __future__ import annotations

import warnings

from ..backend import get_array_module, to_numpy
from ..ops._check import values_on_host
from .boxes import check_boxes

__all__ = ["clean_ground_truth"]


def clean_ground_truth(boxes, labels=None, name: str = "gt_boxes"):
    """Validate ground truth and drop zero-area boxes.

    boxes: ``(G, 4)``; labels: ``(G,)`` class indices ``>= 1`` (0 is background), optional.
    Returns ``(keep, boxes[keep], labels[keep])`` with ``keep`` int64 ``(G',)`` ascending
    (``labels`` part is ``None`` when not given). Raises ``ValueError`` on a box with ``x2 < x1`` or
    ``y2 < y1`` or a non-finite box (naming ``name`` and the index), or on bad labels; warns
    (``UserWarning``) when zero-area boxes are dropped.

    On device arrays (a GPU backend) only the shapes are checked and every box is kept: reading the
    values would make the host wait for the GPU, so ground truth is cleaned on the host before it is
    uploaded (``MaskRCNN.forward_train`` does it for host targets).
    """
    check_boxes(name, boxes, ordered=True)
    xp = get_array_module(boxes)
    g = boxes.shape[0]
    if labels is not None:
        if getattr(labels, "ndim", None) != 1 or labels.shape[0] != g:
            raise ValueError(f"gt_labels: expected shape ({g},) (one label per box in {name}), got "
                             f"{getattr(labels, 'shape', type(labels).__name__)}")
    if not values_on_host(boxes, *([] if labels is None else [labels])):
        return xp.arange(g, dtype=xp.int64), boxes, labels
    if labels is not None:
        if g and int(to_numpy(labels).min()) < 1:
            i = int(to_numpy(labels).argmin())
            raise ValueError(f"gt_labels: label {i} is {int(to_numpy(labels)[i])}; expected class "
                             f"indices >= 1 (0 is background)")
    empty = to_numpy((boxes[:, 2] == boxes[:, 0]) | (boxes[:, 3] == boxes[:, 1]))
    if empty.any():
        bad = [int(i) for i in empty.nonzero()[0]]
        warnings.warn(f"{name}: dropping {len(bad)} zero-area box(es) at index {bad[:10]}"
                      f"{' ...' if len(bad) > 10 else ''}", UserWarning, stacklevel=3)
    keep = xp.asarray((~empty).nonzero()[0], dtype=xp.int64)
    return keep, boxes[keep], (labels[keep] if labels is not None else None)
