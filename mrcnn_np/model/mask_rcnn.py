"""Mask R-CNN (notes, section 2): image -> backbone -> FPN -> RPN -> RoIAlign -> box and mask heads.

One training step, as the code reads:

    C = backbone(images);  P = fpn(C)
    proposals, rpn_out = rpn(P)                  # proposals carry no gradient
    loss_rpn_cls, loss_rpn_box = rpn.loss(rpn_out, anchors, gt)
    loss_cls, loss_box, loss_mask = roi_heads(P, proposals, gt)
    L = loss_rpn_cls + loss_rpn_box + loss_cls + loss_box + loss_mask     (notes, section 5, lambda = 1)

and backward, in reverse: the RoI heads' gradients come back through RoIAlign into the P levels, meet
the RPN's gradients there, go down the FPN and the backbone.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..backend import get_array_module, to_numpy
from .backbone import Backbone
from .configs import ModelConfig
from .fpn import FPN
from .roi_heads import RoIHeads
from .rpn import RPN

LOSS_NAMES = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")


class MaskRCNN(nn.Module):
    def __init__(self, config: ModelConfig, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.config = config
        self.backbone = Backbone(config, rng)
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels, rng, config.dtype)
        self.rpn = RPN(config, rng)
        self.roi_heads = RoIHeads(config, rng)

    def _to_model_arrays(self, images, targets=None):
        """Move a batch to where the parameters live (the GPU under ``cupy``): the loader makes host
        arrays, and this is the one place they cross over, once per step."""
        xp = get_array_module(self.backbone.stem.conv.weight.data)
        images = xp.asarray(images)
        if targets is not None:
            targets = [{k: (xp.asarray(v) if hasattr(v, "dtype") else v) for k, v in t.items()}
                       for t in targets]
        return images, targets

    def _image_sizes(self, images, targets):
        h, w = images.shape[2:]
        if targets is None:
            return [(h, w)] * images.shape[0]
        return [tuple(t.get("resized_size", (h, w))) for t in targets]

    def _check_images(self, images):
        s = self.config.image_size
        if getattr(images, "ndim", None) != 4 or images.shape[1] != 3 or images.shape[2:] != (s, s):
            raise ValueError(f"images: expected shape (N, 3, {s}, {s}) for config {self.config.name!r}, "
                             f"got {getattr(images, 'shape', type(images).__name__)}")

    def forward_train(self, images, targets, rng=None, proposals=None):
        """images (N, 3, S, S); targets: per image {boxes (M, 4), labels (M,), masks (M, S, S)}.
        ``rng`` seeds the samplers; ``proposals`` (a list of (P_i, 4)) replaces the RPN's, which makes
        the loss a smooth function of the parameters (the gradient check uses it).
        Returns {loss name: float}; call :meth:`backward` next."""
        self._check_images(images)
        images, targets = self._to_model_arrays(images, targets)
        rng = rng if rng is not None else np.random.default_rng(0)
        images = images.astype(self.config.dtype, copy=False)
        feats = self.fpn(self.backbone(images))
        rpn_props, outs, anchors = self.rpn.forward(feats, self._image_sizes(images, targets), True)
        props = [p for p, _ in rpn_props] if proposals is None else proposals
        loss_rpn_cls, loss_rpn_box = self.rpn.loss(outs, anchors, [t["boxes"] for t in targets], rng)
        loss_cls, loss_box, loss_mask = self.roi_heads.forward_train(feats, props, targets, rng)
        values = (loss_rpn_cls, loss_rpn_box, loss_cls, loss_box, loss_mask)
        return {name: float(v) for name, v in zip(LOSS_NAMES, values)}

    def backward(self):
        """Accumulate d(sum of the losses)/d(parameter) into every Parameter.grad."""
        d_rpn = self.rpn.backward()
        d_roi = self.roi_heads.backward()
        d_feats = [a + b for a, b in zip(d_rpn, d_roi)]        # the two branches meet in P2..P5
        self.backbone.backward(self.fpn.backward(d_feats))

    def predict(self, images):
        """images (N, 3, S, S) -> per image {boxes (D, 4), scores (D,), labels (D,) in 1..K,
        masks (D, S, S) bool}, in input pixels, as host (NumPy) arrays whatever the backend."""
        self._check_images(images)
        images, _ = self._to_model_arrays(images)
        images = images.astype(self.config.dtype, copy=False)
        with nn.no_cache():
            feats = self.fpn(self.backbone(images))
            sizes = self._image_sizes(images, None)
            proposals, _, _ = self.rpn.forward(feats, sizes, False)
            results = self.roi_heads.predict(feats, [p for p, _ in proposals], sizes)
        return [{k: to_numpy(v) for k, v in r.items()} for r in results]


def build_model(config: ModelConfig, seed: int = 0) -> MaskRCNN:
    return MaskRCNN(config, seed)
