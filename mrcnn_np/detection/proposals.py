"""Proposals: turn the RPN's dense per-anchor outputs into a few thousand candidate boxes per image.

Inputs per FPN level ``l`` (with ``n_l = H_l W_l A`` anchors, ordered ``(H, W, A)`` as in
:mod:`.anchors`): objectness logits ``(N, n_l)``, deltas ``(N, n_l, 4)`` and anchors ``(n_l, 4)``.
For each image::

    for each level l:
        keep the pre_nms_top_n anchors with the highest logit (ties: lower anchor index first)
        boxes = decode(deltas, anchors)           (BoxCoder weights (1, 1, 1, 1))
    concatenate the levels;  p = sigmoid(logit)
    boxes = clip(boxes, image size);  drop boxes with a side < min_size;  drop p < score_thresh
    keep = batched_nms(boxes, p, level, nms_thresh)      (NMS within each level, not across)
    keep the post_nms_top_n best (by p)

``pre_nms_top_n`` is per level and ``post_nms_top_n`` per image (torchvision's convention). Training
and testing differ only in these numbers, so they live in :class:`ProposalSettings`, with the presets
``ProposalSettings.train()`` (2000 / 2000) and ``ProposalSettings.test()`` (1000 / 1000).

# NOTE: proposals carry no gradient. They are computed from the RPN's outputs but treated as fixed
# boxes by the RoI heads; nothing in this module has a backward, and the RPN learns only from its
# own losses (anchor targets), not from how useful its proposals turned out to be downstream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from .boxes import BoxCoder, clip_boxes, remove_small_boxes
from ..functional import batched_nms

__all__ = ["ProposalSettings", "generate_proposals", "top_k_indices"]


@dataclass(frozen=True)
class ProposalSettings:
    """pre_nms_top_n: candidates kept per level before NMS; post_nms_top_n: proposals kept per image
    after NMS; nms_thresh: IoU above which a lower-scored box is suppressed; min_size: smallest side
    (pixels) of a kept box; score_thresh: smallest objectness probability kept."""

    pre_nms_top_n: int = 2000
    post_nms_top_n: int = 2000
    nms_thresh: float = 0.7
    min_size: float = 1e-3
    score_thresh: float = 0.0

    @classmethod
    def train(cls, **overrides) -> "ProposalSettings":
        """Training preset (torchvision: 2000 per level before NMS, 2000 per image after)."""
        return cls(**{"pre_nms_top_n": 2000, "post_nms_top_n": 2000, **overrides})

    @classmethod
    def test(cls, **overrides) -> "ProposalSettings":
        """Testing preset (torchvision: 1000 per level before NMS, 1000 per image after)."""
        return cls(**{"pre_nms_top_n": 1000, "post_nms_top_n": 1000, **overrides})

    def __post_init__(self):
        for name in ("pre_nms_top_n", "post_nms_top_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")


def top_k_indices(scores, k: int):
    """Indices of the ``k`` largest of ``scores`` ``(n,)``, highest first; equal scores are taken and
    ordered by lower index first. Uses a partition, so it costs O(n + k log k), not O(n log n)."""
    xp = get_array_module(scores)
    n = scores.shape[0]
    if k >= n:
        cand = xp.arange(n)
    else:
        kth = scores[xp.argpartition(-scores, k - 1)[k - 1]]      # the k-th largest value
        above = xp.nonzero(scores > kth)[0]
        ties = xp.nonzero(scores == kth)[0][: k - above.shape[0]]  # fill with the lowest indices
        cand = xp.sort(xp.concatenate([above, ties]))
    order = xp.argsort(-scores[cand], kind="stable")            # cand is ascending: ties by index
    return cand[order].astype(xp.int64)


def _sigmoid(x):
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))                      # never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _check(objectness, deltas, anchors, image_sizes):
    if not (len(objectness) == len(deltas) == len(anchors)) or len(objectness) == 0:
        raise ValueError(f"objectness, deltas, anchors: expected one array per level each, got "
                         f"{len(objectness)}, {len(deltas)} and {len(anchors)}")
    n = objectness[0].shape[0]
    for lvl, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
        if o.ndim != 2 or o.shape[0] != n:
            raise ValueError(f"objectness[{lvl}]: expected shape (N={n}, H*W*A), got {tuple(o.shape)}")
        if tuple(d.shape) != (n, o.shape[1], 4):
            raise ValueError(f"deltas[{lvl}]: expected shape {(n, o.shape[1], 4)}, got {tuple(d.shape)}")
        if tuple(a.shape) != (o.shape[1], 4):
            raise ValueError(f"anchors[{lvl}]: expected shape {(o.shape[1], 4)}, got {tuple(a.shape)}")
    if len(image_sizes) != n:
        raise ValueError(f"image_sizes: expected {n} (h, w) pairs (one per image), got {len(image_sizes)}")
    return n


def generate_proposals(objectness, deltas, anchors, image_sizes, settings: ProposalSettings | None = None,
                       box_coder: BoxCoder | None = None):
    """RPN outputs -> proposals, per image.

    objectness: list over levels of ``(N, n_l)`` logits; deltas: list of ``(N, n_l, 4)``; anchors:
    list of ``(n_l, 4)`` (shared by the images of the batch); image_sizes: ``N`` pairs ``(h, w)`` (the
    real image sizes, before padding; boxes are clipped to them).
    Returns a list of ``N`` tuples ``(boxes (P_i, 4), scores (P_i,))``, ``P_i <= post_nms_top_n``,
    scores the objectness probabilities, in decreasing order.
    """
    settings = settings or ProposalSettings.train()
    box_coder = box_coder or BoxCoder((1.0, 1.0, 1.0, 1.0))
    n = _check(objectness, deltas, anchors, image_sizes)
    xp = get_array_module(objectness[0])
    results = []
    for i in range(n):
        boxes, logits, levels = [], [], []
        for lvl, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
            top = top_k_indices(o[i], min(settings.pre_nms_top_n, o.shape[1]))   # (k,)
            boxes.append(box_coder.decode(d[i][top], xp.asarray(a)[top]))     # (k, 4)
            logits.append(o[i][top])
            levels.append(xp.full(top.shape[0], lvl, dtype=xp.int64))
        boxes = clip_boxes(xp.concatenate(boxes), tuple(image_sizes[i]))
        scores = _sigmoid(xp.concatenate(logits))
        levels = xp.concatenate(levels)
        keep = remove_small_boxes(boxes, settings.min_size)
        keep = keep[scores[keep] >= settings.score_thresh]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, settings.nms_thresh)[: settings.post_nms_top_n]
        results.append((boxes[keep], scores[keep]))
    return results
