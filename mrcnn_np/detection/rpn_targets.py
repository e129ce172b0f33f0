"""RPN training targets: which anchors are objects, and the deltas that would move them onto their object.

For one image with anchors ``(A, 4)`` and ground truth ``(G, 4)``::

    match   = Matcher(0.7, 0.3, allow_low_quality_matches=True)(IoU(gt, anchors))    # (A,)
    label_a = 1 if match_a >= 0,  0 if match_a == -1,  -1 (ignored) if match_a == -2
    sample 256 anchors, up to 50 % positive; the rest of the labels become -1 (not in the loss)
    t_a     = encode(gt[match_a], anchor_a)  with weights (1, 1, 1, 1)   (used for positives only)

The objectness loss is taken over the sampled anchors (``labels >= 0``), the box loss over the sampled
positives (``labels == 1``). An image without objects yields only negatives.

Padding. In a batch, an image may fill only the top-left ``(h, w)`` of the padded input (its *valid
area*). Given ``image_size = (h, w)``, anchors whose centre lies outside ``[0, w) x [0, h)`` are
ignored (label -1: never sampled, neither positive nor negative), before sampling::

    label_a = -1   if not (0 <= c_x(a) < w and 0 <= c_y(a) < h)

# NOTE: this is our choice, not torchvision's: torchvision labels every anchor of the padded batch,
# so anchors over the padding become easy negatives that use up part of the 256 samples per image.
# Ignoring them spends the samples on the image itself. The rule looks at centres (not Detectron's
# "straddle" test on the whole anchor) so that anchors overhanging the border, which large objects
# near the edge need, still count. An unpadded image (h, w = the input) has every centre inside (the
# anchors sit at cell centres), so square inputs train exactly as without the rule.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_array_module
from ..functional import box_iou
from .boxes import BoxCoder, _image_size, check_boxes
from .ground_truth import clean_ground_truth
from .matcher import Matcher
from .sampler import BalancedPositiveNegativeSampler

__all__ = ["RPNTargets", "build_rpn_targets", "build_rpn_targets_batch"]


@dataclass
class RPNTargets:
    """labels ``(A,)`` int64: 1 sampled positive, 0 sampled negative, -1 not in the loss;
    regression_targets ``(A, 4)`` (zeros except at positives); matched_gt ``(A,)`` int64 index into
    the caller's ``gt_boxes`` for positives, -1 elsewhere; pos_idx, neg_idx the sampled indices."""

    labels: object
    regression_targets: object
    matched_gt: object
    pos_idx: object
    neg_idx: object


def build_rpn_targets(anchors, gt_boxes, rng=None, matcher=None, sampler=None, box_coder=None,
                      image_size=None):
    """anchors ``(A, 4)`` (all levels concatenated), gt_boxes ``(G, 4)`` -> :class:`RPNTargets`.

    Defaults: ``Matcher(0.7, 0.3, True)``, ``BalancedPositiveNegativeSampler(256, 0.5)``,
    ``BoxCoder((1, 1, 1, 1))``; ``rng`` seeds the sampler (see :mod:`.sampler`). ``image_size``
    ``(h, w)``, the valid area: anchors centred outside it are ignored (module docstring).
    """
    return build_rpn_targets_batch(anchors, [gt_boxes], rng, matcher, sampler, box_coder,
                                   None if image_size is None else [image_size])[0]


def build_rpn_targets_batch(anchors, gt_boxes_list, rng=None, matcher=None, sampler=None, box_coder=None,
                            image_sizes=None):
    """:func:`build_rpn_targets` for every image of a batch (one ``(G_i, 4)`` per image, and its
    ``(h, w)`` in ``image_sizes``), sampled together: the sampler reads its counts once for the
    batch (:meth:`~.sampler.BalancedPositiveNegativeSampler.sample_batch`)."""
    check_boxes("anchors", anchors)
    matcher = matcher or Matcher(0.7, 0.3, allow_low_quality_matches=True)
    sampler = sampler or BalancedPositiveNegativeSampler(256, 0.5)
    box_coder = box_coder or BoxCoder((1.0, 1.0, 1.0, 1.0))
    sizes = image_sizes if image_sizes is not None else [None] * len(gt_boxes_list)
    matched = [_label_anchors(anchors, gt_boxes, matcher, size)
               for gt_boxes, size in zip(gt_boxes_list, sizes)]
    samples = sampler.sample_batch([labels for labels, _, _, _ in matched], rng)
    return [_targets(anchors, box_coder, *m[1:], pos_idx, neg_idx)
            for m, (pos_idx, neg_idx) in zip(matched, samples)]


def _label_anchors(anchors, gt_boxes, matcher, image_size):
    """Before sampling: ``(labels (A,), match (A,), keep, gt)``, labels 1 / 0 / -1."""
    xp = get_array_module(anchors)
    keep, gt, _ = clean_ground_truth(gt_boxes, name="gt_boxes")
    match = matcher(box_iou(gt, anchors))                           # (A,) into the kept gt
    labels = xp.where(match >= 0, 1, xp.where(match == Matcher.BELOW_LOW_THRESHOLD, 0, -1))
    if image_size is not None:
        h, w = _image_size(tuple(image_size))
        half = anchors.dtype.type(0.5)
        cx = half * (anchors[:, 0] + anchors[:, 2])                   # (A,)
        cy = half * (anchors[:, 1] + anchors[:, 3])
        outside = (cx < 0) | (cx >= w) | (cy < 0) | (cy >= h)
        labels = xp.where(outside, -1, labels)
    return labels, match, keep, gt


def _targets(anchors, box_coder, match, keep, gt, pos_idx, neg_idx):
    """After sampling: the :class:`RPNTargets` of one image."""
    xp = get_array_module(anchors)
    n = anchors.shape[0]
    sampled = xp.full(n, -1, dtype=xp.int64)
    sampled[pos_idx] = 1
    sampled[neg_idx] = 0
    targets = xp.zeros((n, 4), dtype=anchors.dtype)
    matched_gt = xp.full(n, -1, dtype=xp.int64)
    if pos_idx.shape[0]:
        targets[pos_idx] = box_coder.encode(gt[match[pos_idx]].astype(anchors.dtype),
                                            anchors[pos_idx]).astype(anchors.dtype)
        matched_gt[pos_idx] = keep[match[pos_idx]]
    return RPNTargets(sampled, targets, matched_gt, pos_idx, neg_idx)
