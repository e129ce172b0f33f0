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

from ..backend import get_array_module, to_numpy
from .boxes import BoxCoder, clip_boxes
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
    ordered by lower index first. Uses a partition, so it costs O(n + k log k), not O(n log n).

    ``scores`` ``(N, n)`` gives ``(N, k)``, row by row. On a GPU that is one stable sort of the
    whole batch (the same order): the partition's ``nonzero`` would make the host wait for the
    device twice per row."""
    xp = get_array_module(scores)
    if scores.ndim == 2:
        if not isinstance(scores, np.ndarray):
            return xp.argsort(0 - scores, axis=1, kind="stable")[:, :k].astype(xp.int64)
        return xp.stack([top_k_indices(row, k) for row in scores]) if scores.shape[0] else \
            xp.zeros((0, min(k, scores.shape[1])), dtype=xp.int64)
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
    tops = [top_k_indices(o, min(settings.pre_nms_top_n, o.shape[1])) for o in objectness]  # (N, k_l)
    levels = xp.concatenate([xp.full(t.shape[1], lvl, dtype=xp.int64) for lvl, t in enumerate(tops)])
    # every image's and level's candidates side by side, (N, K) with K = sum of k_l, decoded at once
    logits = xp.concatenate([xp.take_along_axis(o, t, axis=1) for t, o in zip(tops, objectness)], axis=1)
    picked = xp.concatenate([xp.take_along_axis(d, t[:, :, None], axis=1) for t, d in zip(tops, deltas)],
                            axis=1)                                                  # (N, K, 4)
    under = xp.concatenate([xp.asarray(a)[t] for t, a in zip(tops, anchors)], axis=1)   # (N, K, 4)
    decoded = box_coder.decode(picked.reshape(-1, 4), under.reshape(-1, 4)).reshape(picked.shape)
    scores_all = _sigmoid(logits)
    candidates, valid = [], []
    for i in range(n):
        boxes, scores = clip_boxes(decoded[i], tuple(image_sizes[i])), scores_all[i]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        valid.append((w >= settings.min_size) & (h >= settings.min_size)
                     & (scores >= settings.score_thresh))
        candidates.append((boxes, scores))
    # which candidates survive the size and score filters, for every image in one read (on a GPU,
    # filtering each image by a boolean mask would make the host wait for the device each time)
    valid = to_numpy(xp.stack(valid)) if n else np.zeros((0, 0), bool)
    results = []
    for i, (boxes, scores) in enumerate(candidates):
        keep = xp.asarray(np.flatnonzero(valid[i]))
        boxes, scores, lv = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, lv, settings.nms_thresh)[: settings.post_nms_top_n]
        results.append((boxes[keep], scores[keep]))
    return results
