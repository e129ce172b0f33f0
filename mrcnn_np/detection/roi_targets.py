"""RoI-head training targets: which proposals are which object, and how far their boxes are off.

For one image with proposals ``(P, 4)`` and ground truth boxes ``(G, 4)`` with classes ``(G,)``::

    proposals <- [proposals; gt boxes]            (each gt is its own perfect proposal, so every
                                                   object has at least one positive from step one)
    match     = Matcher(0.5, 0.5)(IoU(gt, proposals))                  (no ignored band)
    label_r   = class of gt[match_r] if match_r >= 0, else 0 (background)
    sample 512 RoIs, up to 25 % positive
    t_r       = encode(gt[match_r], proposal_r), weights (10, 10, 5, 5)   (positives; 0 otherwise)

The targets are *class-specific* in the sense of the box head: the head predicts four deltas per
class, ``(R, 4(K+1))``, and the box loss for RoI ``r`` compares ``t_r`` with the four columns of the
class ``label_r`` only (``pred.reshape(R, K+1, 4)[pos, labels[pos]]``); background RoIs have no box
loss. ``matched_gt`` carries, for positives, the index of the matched object in the caller's lists,
which is what the mask targets need.

Sampled RoIs are ordered positives first (``rois[:num_pos]``), then negatives, so the mask head can
take the first ``num_pos`` rows.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_array_module
from ..functional import box_iou
from .boxes import BoxCoder, check_boxes
from .ground_truth import clean_ground_truth
from .matcher import Matcher
from .sampler import BalancedPositiveNegativeSampler

__all__ = ["RoITargets", "build_roi_targets", "build_roi_targets_batch"]


@dataclass
class RoITargets:
    """Sampled RoIs of one image, positives first.

    rois ``(S, 4)``; labels ``(S,)`` int64 (class ``>= 1`` for positives, 0 background);
    regression_targets ``(S, 4)`` (zeros for background); matched_gt ``(S,)`` int64 index into the
    caller's ``gt_boxes`` (-1 for background); num_pos the number of positives.
    """

    rois: object
    labels: object
    regression_targets: object
    matched_gt: object
    num_pos: int


def build_roi_targets(proposals, gt_boxes, gt_labels, rng=None, matcher=None, sampler=None,
                      box_coder=None, add_gt_as_proposals: bool = True):
    """proposals ``(P, 4)``, gt_boxes ``(G, 4)``, gt_labels ``(G,)`` -> :class:`RoITargets`.

    Defaults: ``Matcher(0.5, 0.5)``, ``BalancedPositiveNegativeSampler(512, 0.25)``,
    ``BoxCoder((10, 10, 5, 5))``; ``rng`` seeds the sampler. Zero-area gt boxes are dropped with a
    warning; a box with ``x2 < x1`` raises ``ValueError``. With no objects, every sampled RoI is
    background.
    """
    return build_roi_targets_batch([proposals], [gt_boxes], [gt_labels], rng, matcher, sampler,
                                   box_coder, add_gt_as_proposals)[0]


def build_roi_targets_batch(proposals_list, gt_boxes_list, gt_labels_list, rng=None, matcher=None,
                            sampler=None, box_coder=None, add_gt_as_proposals: bool = True):
    """:func:`build_roi_targets` for every image of a batch, sampled together (the sampler reads its
    counts once for the batch)."""
    matcher = matcher or Matcher(0.5, 0.5, allow_low_quality_matches=False)
    sampler = sampler or BalancedPositiveNegativeSampler(512, 0.25)
    box_coder = box_coder or BoxCoder((10.0, 10.0, 5.0, 5.0))
    matched = [_label_rois(p, b, l, matcher, add_gt_as_proposals)
               for p, b, l in zip(proposals_list, gt_boxes_list, gt_labels_list)]
    samples = sampler.sample_batch([cls for _, cls, _, _, _ in matched], rng)
    return [_targets(box_coder, *m, pos_idx, neg_idx) for m, (pos_idx, neg_idx) in zip(matched, samples)]


def _label_rois(proposals, gt_boxes, gt_labels, matcher, add_gt_as_proposals):
    """Before sampling: ``(rois, cls, match, keep, gt)``; cls the class of each RoI, 0 background,
    -1 ignored."""
    check_boxes("proposals", proposals)
    xp = get_array_module(proposals)
    keep, gt, labels = clean_ground_truth(gt_boxes, gt_labels, name="gt_boxes")
    dt = proposals.dtype
    # NOTE: proposals are constants here: the RoI heads' losses do not flow back into the RPN through
    # the box coordinates (only through the shared features), as in Faster R-CNN's approximate joint
    # training.
    rois = xp.concatenate([proposals, gt.astype(dt)], axis=0) if add_gt_as_proposals else proposals
    match = matcher(box_iou(gt, rois))                             # (P + G,) into the kept gt
    cls = xp.where(match >= 0, labels[xp.maximum(match, 0)] if gt.shape[0] else 0, 0)
    cls = xp.where(match == Matcher.BETWEEN_THRESHOLDS, -1, cls).astype(xp.int64)  # ignored: -1
    return rois, cls, match, keep, gt


def _targets(box_coder, rois, cls, match, keep, gt, pos_idx, neg_idx):
    """After sampling: the :class:`RoITargets` of one image, positives first."""
    xp = get_array_module(rois)
    dt = rois.dtype
    idx = xp.concatenate([pos_idx, neg_idx])
    num_pos = int(pos_idx.shape[0])
    out_rois = rois[idx]
    out_labels = cls[idx]
    out_labels[num_pos:] = 0
    targets = xp.zeros((idx.shape[0], 4), dtype=dt)
    matched = xp.full(idx.shape[0], -1, dtype=xp.int64)
    if num_pos:
        m = match[pos_idx]
        targets[:num_pos] = box_coder.encode(gt[m].astype(dt), rois[pos_idx]).astype(dt)
        matched[:num_pos] = keep[m]
    return RoITargets(out_rois, out_labels, targets, matched, num_pos)
