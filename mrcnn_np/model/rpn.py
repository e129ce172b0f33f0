"""Region Proposal Network: objectness and box deltas for every anchor of every FPN level.

Head (shared by all levels):  t = ReLU(conv3x3(P_k));  objectness = conv1x1(t) (A channels);
deltas = conv1x1(t) (4A channels).  The outputs are flattened in the anchors' order (H, W, A):

    objectness (N, A, H, W)   -> (N, H, W, A)    -> (N, H*W*A)
    deltas     (N, A*4, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, H*W*A, 4)

Losses, over the anchors sampled per image (256 by default, half positive at most; anchors centred in
the padding are never sampled, see :mod:`mrcnn_np.detection.rpn_targets`), pooled over the batch:  loss_rpn_cls = mean BCE(objectness, label);  loss_rpn_box = sum_pos SmoothL1_{1/9}(delta -
target) / (number of sampled anchors).  Proposals are decoded from the detached outputs.
"""
from __future__ import annotations

import itertools

from .. import functional as F
from .. import nn
from ..backend import get_array_module
from ..detection.anchors import AnchorGenerator
from ..detection.boxes import BoxCoder
from ..detection.matcher import Matcher
from ..detection.proposals import ProposalSettings, generate_proposals
from ..detection.rpn_targets import build_rpn_targets_batch
from ..detection.sampler import BalancedPositiveNegativeSampler


class RPNHead(nn.Module):
    def __init__(self, channels, num_anchors, rng, dtype):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, rng=rng, dtype=dtype, std=0.01)
        self.relu = nn.ReLU(inplace=True)
        self.cls = nn.Conv2d(channels, num_anchors, 1, rng=rng, dtype=dtype, std=0.01)
        self.bbox = nn.Conv2d(channels, 4 * num_anchors, 1, rng=rng, dtype=dtype, std=0.01)

    def forward(self, x):
        t = self.relu(self.conv(x))
        return self.cls(t), self.bbox(t)

    def backward(self, d_cls, d_bbox):
        dt = self.cls.backward(d_cls) + self.bbox.backward(d_bbox)
        return self.conv.backward(self.relu.backward(dt))


def _flatten(obj, deltas):
    n, a, h, w = obj.shape
    o = obj.transpose(0, 2, 3, 1).reshape(n, h * w * a)                          # (N, H*W*A)
    d = deltas.reshape(n, a, 4, h, w).transpose(0, 3, 4, 1, 2).reshape(n, h * w * a, 4)
    return o, d


def _unflatten(d_o, d_d, shape):
    n, a, h, w = shape
    d_obj = d_o.reshape(n, h, w, a).transpose(0, 3, 1, 2)                        # (N, A, H, W)
    d_del = d_d.reshape(n, h, w, a, 4).transpose(0, 3, 4, 1, 2).reshape(n, a * 4, h, w)
    return d_obj, d_del


class RPN(nn.Module):
    def __init__(self, cfg, rng):
        super().__init__()
        n_levels = len(cfg.anchor_sizes)                       # P2..P5, or P2..P6
        self.anchor_gen = AnchorGenerator(sizes=cfg.anchor_sizes, aspect_ratios=cfg.aspect_ratios,
                                          strides=(4, 8, 16, 32, 64)[:n_levels],
                                          offset=cfg.anchor_offset, round_base=cfg.anchor_round)
        self.head = RPNHead(cfg.fpn_channels, len(cfg.aspect_ratios), rng, cfg.dtype)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(cfg.rpn_fg_iou, cfg.rpn_bg_iou, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(cfg.rpn_batch_per_image, cfg.rpn_positive_fraction)
        self.train_settings = ProposalSettings(cfg.rpn_pre_nms_train, cfg.rpn_post_nms_train, cfg.rpn_nms)
        self.test_settings = ProposalSettings(cfg.rpn_pre_nms_test, cfg.rpn_post_nms_test, cfg.rpn_nms)

    def forward(self, feats, image_sizes, training, input_size=None):
        """feats: [P2..P5] (or P2..P6); input_size: the padded input's ``(H, W)`` (default: 4 x P2's).
        Returns (proposals per image, flat outputs (obj, deltas) per level, anchors)."""
        outs, shapes = [], []
        for p in feats:
            o, d = self.head(p)
            shapes.append(o.shape)
            outs.append(_flatten(o, d))
        if input_size is None:
            input_size = (4 * feats[0].shape[2], 4 * feats[0].shape[3])    # P2 has stride 4
        anchors = self.anchor_gen([p.shape[2:] for p in feats], dtype=feats[0].dtype,
                                  xp=get_array_module(feats[0]), input_size=input_size)
        settings = self.train_settings if training else self.test_settings
        # NOTE: proposals are constants: no gradient flows back through the boxes they select.
        proposals = generate_proposals([o for o, _ in outs], [d for _, d in outs], anchors,
                                       image_sizes, settings, self.box_coder)
        self._shapes = shapes
        return proposals, outs, anchors

    def loss(self, outs, anchors, gt_boxes, rng, image_sizes=None):
        """Returns (loss_rpn_cls, loss_rpn_box) and keeps what backward needs. ``image_sizes``: the
        valid area ``(h, w)`` of each image; anchors centred outside it are not in the loss."""
        xp = get_array_module(outs[0][0])
        obj = xp.concatenate([o for o, _ in outs], axis=1)                   # (N, A_total)
        deltas = xp.concatenate([d for _, d in outs], axis=1)                # (N, A_total, 4)
        all_anchors = xp.concatenate(anchors)
        n_anchors = all_anchors.shape[0]
        ts = build_rpn_targets_batch(all_anchors, gt_boxes, rng, self.matcher, self.sampler,
                                     self.box_coder, image_sizes)
        labels, targets = xp.stack([t.labels for t in ts]), xp.stack([t.regression_targets for t in ts])
        # the sampled and the positive anchors as flat indices into (N * A_total): in image order and
        # ascending within an image, the order of labels[labels >= 0], without the boolean mask (on a
        # GPU that would be a wait for the device to count it)
        sampled = xp.concatenate([xp.sort(xp.concatenate([t.pos_idx, t.neg_idx])) + i * n_anchors
                                  for i, t in enumerate(ts)])
        pos = xp.concatenate([t.pos_idx + i * n_anchors for i, t in enumerate(ts)])
        n_sampled = max(int(sampled.shape[0]), 1)                           # a shape: known on the host
        loss_cls, c_cls = F.sigmoid_bce_with_logits_forward(obj.reshape(-1)[sampled],
                                                            labels.reshape(-1)[sampled].astype(obj.dtype))
        loss_box, c_box = F.smooth_l1_forward(deltas.reshape(-1, 4)[pos], targets.reshape(-1, 4)[pos],
                                              beta=1 / 9)
        self._loss_cache = (c_cls, c_box, sampled, pos, n_sampled, obj.shape, deltas.shape,
                            [o.shape[1] for o, _ in outs])
        return loss_cls, loss_box / n_sampled

    def backward(self, d_loss_cls=1.0, d_loss_box=1.0):
        """Returns d[P2..P5] from both RPN losses."""
        c_cls, c_box, sampled, pos, n_sampled, obj_shape, del_shape, sizes = self._loss_cache
        d_cls = F.sigmoid_bce_with_logits_backward(d_loss_cls, c_cls)  # (a kernel's cache is opaque)
        xp = get_array_module(d_cls)
        d_obj = xp.zeros(obj_shape, dtype=d_cls.dtype)
        d_obj.reshape(-1)[sampled] = d_cls
        d_del = xp.zeros(del_shape, dtype=d_obj.dtype)
        d_del.reshape(-1, 4)[pos] = F.smooth_l1_backward(d_loss_box / n_sampled, c_box)
        bounds = [0, *itertools.accumulate(sizes)]                          # level k: [b_k, b_k+1)
        d_feats = [None] * len(sizes)
        for k in range(len(sizes) - 1, -1, -1):                # the shared head pops in reverse order
            lo, hi = bounds[k], bounds[k + 1]
            d_feats[k] = self.head.backward(*_unflatten(d_obj[:, lo:hi], d_del[:, lo:hi], self._shapes[k]))
        return d_feats
