"""The RoI heads: a box head (classification + box regression) and a mask head, in parallel.

Box head (notes, section 2):  RoIAlign 7x7 -> flatten -> FC -> ReLU -> FC -> ReLU ->
    class logits (K+1) and class-specific deltas (4(K+1)).
Mask head (notes, section 4, fully convolutional):  RoIAlign 14x14 -> 4 x (conv3x3 -> ReLU) ->
    transposed conv 2x2 stride 2 -> ReLU -> conv1x1 -> K x 28 x 28 mask logits, one per class.

Losses (notes, section 5), over the RoIs sampled per image (positives first):
    loss_cls  = mean CE(class logits, label)
    loss_box  = sum_{positives} SmoothL1_{1/9}(deltas[label] - target) / (number of sampled RoIs)
    loss_mask = mean BCE(mask logits[label], mask target)   over positives only, on the channel of the
                ground-truth class (notes, section 6: no competition between classes' masks).

The paper's ablations are config options (``configs.py``): ``mask_loss="softmax"`` gives the head K+1
channels and a per-pixel softmax over them (``softmax_mask_cross_entropy_*``, target class
``label * M(p)``; Table 2b); ``mask_head="fc"`` swaps in :class:`MaskHeadFC` (Table 2e);
``pooler``/``pool_level`` change how both heads pool (Table 2c, 2d). ``mask_background_channel``
gives the sigmoid head K+1 channels of which channel ``c`` is class ``c`` (torchvision's layout,
channel 0 unused), so ``r50_fpn`` loads torchvision's 91-channel predictor as it is.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..ops import losses as L
from ..backend import get_array_module
from ..detection.boxes import BoxCoder
from ..detection.mask_targets import build_mask_targets
from ..detection.matcher import Matcher
from ..detection.postprocess import postprocess_boxes_batch, select_class_masks
from ..detection.roi_targets import build_roi_targets_batch
from ..detection.sampler import BalancedPositiveNegativeSampler
from .mask_head_fc import MaskHeadFC
from .poolers import MultiScaleRoIAlign


class BoxHead(nn.Module):
    def __init__(self, in_features, fc, num_classes, rng, dtype):
        super().__init__()
        # NOTE: U(+-1/sqrt(fan_in)) for weights and biases (PyTorch's nn.Linear default, which the
        # torchvision baseline has), together with the backbone's and the FPN's init scales: the
        # three measured together closed the box-AP gap (docs/training.md, "Box accuracy"); this one alone,
        # in place of He-normal fc layers and detectron2's N(0, 0.01) / N(0, 0.001) predictors, did
        # not move AP.
        self.fc6 = nn.Linear(in_features, fc, rng=rng, dtype=dtype, bound=in_features ** -0.5)
        self.fc7 = nn.Linear(fc, fc, rng=rng, dtype=dtype, bound=fc ** -0.5)
        self.relu6, self.relu7 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.cls_score = nn.Linear(fc, num_classes + 1, rng=rng, dtype=dtype, bound=fc ** -0.5)
        self.bbox_pred = nn.Linear(fc, 4 * (num_classes + 1), rng=rng, dtype=dtype, bound=fc ** -0.5)

    def forward(self, pooled):
        r, c, h, w = pooled.shape
        x = self.relu6(self.fc6(pooled.reshape(r, c * h * w)))  # (R, C, 7, 7) -> (R, C*49); R may be 0
        x = self.relu7(self.fc7(x))
        return self.cls_score(x), self.bbox_pred(x)

    def backward(self, d_cls, d_box, pooled_shape):
        dx = self.cls_score.backward(d_cls) + self.bbox_pred.backward(d_box)
        dx = self.fc6.backward(self.relu6.backward(self.fc7.backward(self.relu7.backward(dx))))
        return dx.reshape(pooled_shape)


class MaskHead(nn.Module):
    def __init__(self, in_channels, channels, n_convs, num_classes, rng, dtype):
        super().__init__()
        self.convs = [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, rng=rng,
                                dtype=dtype) for i in range(n_convs)]
        self.relus = [nn.ReLU(inplace=True) for _ in range(n_convs + 1)]
        self.deconv = nn.ConvTranspose2d(channels, channels, 2, stride=2, rng=rng, dtype=dtype)
        self.logits = nn.Conv2d(channels, num_classes, 1, rng=rng, dtype=dtype, std=0.001)

    def forward(self, x):
        for conv, relu in zip(self.convs, self.relus):
            x = relu(conv(x))
        return self.logits(self.relus[-1](self.deconv(x)))    # (R, K, 28, 28)

    def backward(self, dout):
        d = self.deconv.backward(self.relus[-1].backward(self.logits.backward(dout)))
        for conv, relu in zip(reversed(self.convs), reversed(self.relus[:-1])):
            d = conv.backward(relu.backward(d))
        return d


class RoIHeads(nn.Module):
    def __init__(self, cfg, rng):
        super().__init__()
        c, k, dt = cfg.fpn_channels, cfg.num_classes, cfg.dtype
        self.cfg = cfg
        pool = dict(op=getattr(cfg, "pooler", "roi_align"), level=getattr(cfg, "pool_level", 0))
        pool["aligned"] = cfg.roi_aligned
        self.box_pooler = MultiScaleRoIAlign(cfg.box_pool, cfg.sampling_ratio, cfg.canonical_scale,
                                             cfg.canonical_level, **pool)
        self.mask_pooler = MultiScaleRoIAlign(cfg.mask_pool, cfg.sampling_ratio, cfg.canonical_scale,
                                              cfg.canonical_level, **pool)
        self.box_head = BoxHead(c * cfg.box_pool ** 2, cfg.box_fc, k, rng, dt)
        self.softmax_masks = getattr(cfg, "mask_loss", "sigmoid") == "softmax"
        # a background channel: the softmax needs one; torchvision's sigmoid head has one unused
        self.background_channel = self.softmax_masks or cfg.mask_background_channel
        k_mask = k + 1 if self.background_channel else k
        if getattr(cfg, "mask_head", "fcn") == "fc":
            self.mask_head = MaskHeadFC(c, cfg.mask_pool, cfg.mask_fc, k_mask, cfg.mask_size, rng, dt)
        else:
            self.mask_head = MaskHead(c, cfg.mask_channels, cfg.mask_convs, k_mask, rng, dt)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.matcher = Matcher(cfg.roi_iou, cfg.roi_iou, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(cfg.roi_batch_per_image, cfg.roi_positive_fraction)

    def forward_train(self, feats, proposals, targets, rng):
        """Returns the three losses; keeps what ``backward`` needs."""
        xp = get_array_module(feats[0])
        k1 = self.cfg.num_classes + 1
        rois, labels, reg, pos_rois, pos_labels, mask_targets, pos = [], [], [], [], [], [], []
        samples = build_roi_targets_batch(proposals, [t["boxes"] for t in targets],
                                          [t["labels"] for t in targets], rng, self.matcher,
                                          self.sampler, self.box_coder)
        offset = 0
        for i, (s, t) in enumerate(zip(samples, targets)):
            # each image's positives come first: their rows are known from the counts, on the host
            pos.append(np.arange(offset, offset + s.num_pos))
            offset += len(s.labels)
            rois.append(xp.concatenate([xp.full((len(s.labels), 1), i, s.rois.dtype), s.rois], 1))
            labels.append(s.labels)
            reg.append(s.regression_targets)
            pos_rois.append(rois[-1][: s.num_pos])
            pos_labels.append(s.labels[: s.num_pos])
            mask_targets.append(build_mask_targets(t["masks"], s.rois[: s.num_pos], s.matched_gt[: s.num_pos],
                                                   self.cfg.mask_size, dtype=s.rois.dtype))
        rois, labels, reg = xp.concatenate(rois), xp.concatenate(labels), xp.concatenate(reg)
        pos = xp.asarray(np.concatenate(pos))                                # rows with labels > 0

        pooled = self.box_pooler.forward(feats, rois)                        # (R, C, 7, 7)
        cls_logits, box_deltas = self.box_head(pooled)
        loss_cls, c_cls = F.softmax_cross_entropy_forward(cls_logits, labels)
        picked = box_deltas.reshape(-1, k1, 4)[pos, labels[pos]]             # (P, 4): own class only
        loss_box, c_box = F.smooth_l1_forward(picked, reg[pos], beta=1 / 9)
        n_rois = max(rois.shape[0], 1)

        pos_rois, pos_labels = xp.concatenate(pos_rois), xp.concatenate(pos_labels)
        mask_targets = xp.concatenate(mask_targets)
        loss_mask, c_mask = 0.0, None
        if pos_rois.shape[0]:
            mask_logits = self.mask_head(self.mask_pooler.forward(feats, pos_rois))  # (P, K, 28, 28)
            if self.softmax_masks:          # per-pixel class: the RoI's label on the mask, 0 off it
                pixel_class = (pos_labels[:, None, None] * (mask_targets > 0.5)).astype(xp.int64)
                loss_mask, c_mask = L.softmax_mask_cross_entropy_forward(mask_logits, pixel_class)
            else:
                own = mask_logits[xp.arange(len(pos_labels)), self._channel(pos_labels)]  # (P, 28, 28)
                loss_mask, c_mask = F.sigmoid_bce_with_logits_forward(own, mask_targets)
            self._mask_shape = mask_logits.shape
        self._cache = (c_cls, c_box, c_mask, pos, labels, n_rois, box_deltas.shape, pooled.shape,
                       pos_labels, [p.shape for p in feats])
        return loss_cls, loss_box / n_rois, loss_mask

    def backward(self, d_cls=1.0, d_box=1.0, d_mask=1.0):
        """Returns d[P2..P5] from the three losses (through both RoIAligns)."""
        c_cls, c_box, c_mask, pos, labels, n_rois, box_shape, pooled_shape, pos_labels, shapes = self._cache
        xp = get_array_module(labels)
        k1 = self.cfg.num_classes + 1
        d_logits = F.softmax_cross_entropy_backward(d_cls, c_cls)
        d_deltas = xp.zeros(box_shape, dtype=d_logits.dtype).reshape(-1, k1, 4)
        d_deltas[pos, labels[pos]] = F.smooth_l1_backward(d_box / n_rois, c_box)
        d_pooled = self.box_head.backward(d_logits, d_deltas.reshape(box_shape), pooled_shape)
        d_feats = self.box_pooler.backward(d_pooled)
        if c_mask is not None:
            if self.softmax_masks:
                d_mask_logits = L.softmax_mask_cross_entropy_backward(d_mask, c_mask)
            else:
                d_mask_logits = xp.zeros(self._mask_shape, dtype=d_logits.dtype)
                d_mask_logits[xp.arange(len(pos_labels)), self._channel(pos_labels)] = \
                    F.sigmoid_bce_with_logits_backward(d_mask, c_mask)
            d_mask_feats = self.mask_pooler.backward(self.mask_head.backward(d_mask_logits))
            d_feats = [a + b for a, b in zip(d_feats, d_mask_feats)]
        return d_feats

    def _channel(self, labels):
        """The mask channel of each label: ``label`` with a background channel, else ``label - 1``."""
        return labels if self.background_channel else labels - 1

    def predict(self, feats, proposals, image_sizes):
        """Inference: per image ``{boxes (D, 4), scores, labels, mask_probs (D, m, m)}``, boxes in input
        pixels clipped to the image's valid area ``image_sizes[i] = (h, w)`` (empty ones removed
        before NMS); ``mask_probs`` the sigmoid of the mask head's channel of each box's class.

        All images go through each stage together (one pooling, one head call, one NMS for the
        batch; the RoIs carry their image's index): the same detections as image by image, with a
        few reads back from a GPU per batch instead of per image."""
        xp = get_array_module(feats[0])
        counts = [int(p.shape[0]) for p in proposals]
        dt = proposals[0].dtype
        rois = xp.concatenate([xp.concatenate([xp.full((c, 1), i, dt), p.astype(dt, copy=False)], 1)
                               for i, (c, p) in enumerate(zip(counts, proposals))])
        cls_logits, box_deltas = self.box_head(self.box_pooler.forward(feats, rois))
        dets = postprocess_boxes_batch(cls_logits, box_deltas, rois[:, 1:], counts, image_sizes,
                                       self.cfg.score_thresh, self.cfg.nms_thresh,
                                       self.cfg.detections_per_img, box_coder=self.box_coder)
        found = [int(d["boxes"].shape[0]) for d in dets]
        channels = self.cfg.num_classes + self.background_channel
        if sum(found):
            mrois = xp.concatenate([xp.concatenate([xp.full((c, 1), i, dt), d["boxes"].astype(dt)], 1)
                                    for i, (c, d) in enumerate(zip(found, dets))])
            mask_logits = self.mask_head(self.mask_pooler.forward(feats, mrois))
        else:
            mask_logits = xp.zeros((0, channels, self.cfg.mask_size, self.cfg.mask_size), dtype=dt)
        if self.softmax_masks:          # the class must win the per-pixel softmax (argmax)
            mask_logits = softmax_winner_margin(mask_logits)
        labels = xp.concatenate([d["labels"] for d in dets])
        probs = select_class_masks(mask_logits, labels, background_channel=self.background_channel)
        results, start = [], 0
        for c, d in zip(found, dets):
            results.append({**d, "boxes": d["boxes"].astype(dt), "mask_probs": probs[start:start + c]})
            start += c
        return results


def softmax_winner_margin(logits):
    """(D, C, m, m) logits -> (D, C, m, m) margins ``z_c - max_{k != c} z_k``.

    With a per-pixel softmax over classes, a pixel belongs to the mask of class c when c wins the
    softmax there (the argmax, as FCNs label pixels). The margin is positive exactly where c wins, so
    handing it to ``select_class_masks`` as a logit (``sigmoid(margin) >= 0.5``) pastes that rule, with
    smooth edges for the bilinear resize. With two channels it is the plain logit difference and
    ``sigmoid(margin)`` is the softmax probability itself.
    """
    xp = get_array_module(logits)
    if logits.shape[1] < 2:
        return logits
    top2 = -xp.partition(-logits, 1, axis=1)[:, :2]                  # (D, 2, m, m): best, second best
    best, second = top2[:, :1], top2[:, 1:]
    return logits - xp.where(logits >= best, second, best)            # ties give 0: no winner
