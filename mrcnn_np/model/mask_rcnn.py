"""Mask R-CNN (notes, section 2): image -> transform -> backbone -> FPN -> RPN -> RoIAlign -> heads.

One training step, as the code reads:

    C = backbone(images);  P = fpn(C)
    proposals, rpn_out = rpn(P)                  # proposals carry no gradient
    loss_rpn_cls, loss_rpn_box = rpn.loss(rpn_out, anchors, gt)
    loss_cls, loss_box, loss_mask = roi_heads(P, proposals, gt)
    L = loss_rpn_cls + loss_rpn_box + loss_cls + loss_box + loss_mask     (notes, section 5, lambda = 1)

and backward, in reverse: the RoI heads' gradients come back through RoIAlign into the P levels, meet
the RPN's gradients there, go down the FPN and the backbone.

Sizes. A batch is ``(N, 3, Hb, Wb)`` with ``Hb, Wb`` multiples of 32; image ``i`` occupies its top-left
``(h_i, w_i)`` (its *valid area*, ``resized_size`` in the loader's targets) and the rest is zero
padding. The valid area travels with the batch: anchors whose centre lies outside it are ignored by
the RPN's loss, and proposals and detections are clipped to it (empty boxes removed before NMS and
top-k), so nothing is ever detected in the padding. ``predict`` can map its results straight to each
image's original size (boxes scaled, masks pasted from the ``m x m`` head output at that size).

From raw images. :meth:`MaskRCNN.detect` takes images as they come (``uint8 (H, W, 3)``, any sizes),
runs the model's own :class:`~mrcnn_np.model.transform.ImageTransform` (resize, normalise, pad, as the
preset says), predicts, and returns each image's detections at its original size. It is the Python
entry point of ``mrcnn-np predict``:

    model, meta = mrcnn_np.load_model("r50_coco.npz")
    det = model.detect(image)[0]      # boxes (D, 4), labels (D,), scores (D,), masks (D, H, W) bool
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..backend import get_array_module, to_numpy
from ..detection.ground_truth import clean_ground_truth
from ..detection.postprocess import detections_to_original
from .backbone import Backbone
from .configs import ModelConfig
from .fpn import FPN
from .roi_heads import RoIHeads
from .rpn import RPN
from .transform import SIZE_DIVISIBILITY, ImageTransform

LOSS_NAMES = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")


def _to_host(dets: list) -> list:
    """The batch's detections as NumPy arrays, in two copies from a GPU whatever the batch size: one
    for the numbers (boxes, scores, labels, as float64, exact for each) and one for the masks."""
    if not dets or all(isinstance(v, np.ndarray) for d in dets for v in d.values()):
        return [{k: np.asarray(v) for k, v in d.items()} for d in dets]
    xp = get_array_module(dets[0]["boxes"])
    out = [dict() for _ in dets]
    groups = [[k for k in dets[0] if k not in ("masks", "mask_probs")],
              [k for k in dets[0] if k in ("masks", "mask_probs")]]
    for keys in groups:
        if not keys:
            continue
        pieces = [(o, k, d[k]) for o, d in zip(out, dets) for k in keys]
        dtype = xp.float64 if len(keys) > 1 else pieces[0][2].dtype
        flat = to_numpy(xp.concatenate([p.reshape(-1).astype(dtype) for _, _, p in pieces]))  # one copy
        start = 0
        for o, k, p in pieces:
            o[k] = flat[start:start + p.size].astype(p.dtype).reshape(p.shape)
            start += p.size
    return out


def _clean(target: dict) -> dict:
    """Ground truth validated and its zero-area boxes dropped while it is still on the host (free
    there), so the model never reads target values back from a GPU."""
    boxes, labels = target.get("boxes"), target.get("labels")
    if not isinstance(boxes, np.ndarray) or (labels is not None and not isinstance(labels, np.ndarray)):
        return target
    keep, boxes, labels = clean_ground_truth(boxes, labels, name="gt_boxes")
    if len(keep) == len(target["boxes"]):
        return target
    g = len(target["boxes"])
    out = {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == g else v)
           for k, v in target.items()}                       # masks and any other per-object field
    out["boxes"] = boxes
    if labels is not None:
        out["labels"] = labels
    return out


class MaskRCNN(nn.Module):
    def __init__(self, config: ModelConfig, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.config = config
        self.transform = ImageTransform(config)
        self.backbone = Backbone(config, rng)
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels, rng, config.dtype,
                       extra=config.fpn_extra)
        self.rpn = RPN(config, rng)
        self.roi_heads = RoIHeads(config, rng)

    def trainable_parameters(self) -> dict:
        """``named_parameters()`` less those of the frozen backbone pieces
        (``config.trainable_backbone_layers``): what the optimizer updates and clipping measures."""
        frozen = tuple("backbone." + p for p in self.backbone.frozen_prefixes())
        return {n: p for n, p in self.named_parameters().items() if not n.startswith(frozen)}

    def _to_model_arrays(self, images, targets=None):
        """Move a batch to where the parameters live (the GPU under ``cupy``): the loader makes host
        arrays, and this is the one place they cross over, once per step."""
        xp = get_array_module(self.backbone.stem.conv.weight.data)   # where the parameters live
        images = xp.asarray(images)
        if targets is not None:
            targets = [{k: (xp.asarray(v) if hasattr(v, "dtype") else v) for k, v in _clean(t).items()}
                       for t in targets]
        return images, targets

    @staticmethod
    def _sizes(name, sizes, images, default):
        """``N`` pairs ``(h, w)`` of positive ints; ``default`` (the input's own size) where None."""
        n, H, W = images.shape[0], images.shape[2], images.shape[3]
        if sizes is None:
            return [default] * n
        sizes = [tuple(int(v) for v in s) for s in sizes]
        if len(sizes) != n or any(len(s) != 2 or min(s) < 1 for s in sizes):
            raise ValueError(f"{name}: expected {n} pairs (h, w) of positive integers (one per image), "
                             f"got {sizes!r}")
        if name == "image_sizes":
            bad = [s for s in sizes if s[0] > H or s[1] > W]
            if bad:
                raise ValueError(f"image_sizes: {bad[0]} is larger than the input {H}x{W}; the valid "
                                 f"area of an image is the part of the padded input it occupies")
        return sizes

    def _image_sizes(self, images, targets):
        h, w = images.shape[2:]
        if targets is None:
            return [(h, w)] * images.shape[0]
        return [tuple(t.get("resized_size", (h, w))) for t in targets]

    def _check_images(self, images):
        d = SIZE_DIVISIBILITY
        if (getattr(images, "ndim", None) != 4 or images.shape[1] != 3 or images.shape[2] % d
                or images.shape[3] % d or min(images.shape[2:]) == 0):
            raise ValueError(f"images: expected shape (N, 3, H, W) with H and W positive multiples of "
                             f"{d} (pad the batch, e.g. with mrcnn_np.data.pad_batch), got "
                             f"{getattr(images, 'shape', type(images).__name__)}")

    def forward_train(self, images, targets, rng=None, proposals=None, host: bool = True):
        """images (N, 3, Hb, Wb); targets: per image {boxes (M, 4), labels (M,), masks (M, Hb, Wb),
        and optionally resized_size (h, w), the valid area (default: the whole input)}.
        ``rng`` seeds the samplers; ``proposals`` (a list of (P_i, 4)) replaces the RPN's, which makes
        the loss a smooth function of the parameters (the gradient check uses it).
        Returns {loss name: float}, or with ``host=False`` {loss name: 0-d array} where the parameters
        live (no read back to the host: the training loop reads all terms at once); call
        :meth:`backward` next."""
        self._check_images(images)
        images, targets = self._to_model_arrays(images, targets)
        rng = rng if rng is not None else np.random.default_rng(0)
        images = images.astype(self.config.dtype, copy=False)
        feats = self.fpn(self.backbone(images))
        sizes = self._image_sizes(images, targets)
        rpn_props, outs, anchors = self.rpn.forward(feats, sizes, True, input_size=images.shape[2:])
        props = [p for p, _ in rpn_props] if proposals is None else proposals
        loss_rpn_cls, loss_rpn_box = self.rpn.loss(outs, anchors, [t["boxes"] for t in targets], rng,
                                                   sizes)
        loss_cls, loss_box, loss_mask = self.roi_heads.forward_train(feats, props, targets, rng)
        values = (loss_rpn_cls, loss_rpn_box, loss_cls, loss_box, loss_mask)
        if not host:
            return dict(zip(LOSS_NAMES, values))
        return {name: float(v) for name, v in zip(LOSS_NAMES, values)}

    def backward(self):
        """Accumulate d(sum of the losses)/d(parameter) into every Parameter.grad."""
        d_feats = self.rpn.backward()
        d_roi = self.roi_heads.backward()
        for k, d in enumerate(d_roi):                          # the two branches meet in P2..P5
            d_feats[k] = d_feats[k] + d                        # (P6, if any, is the RPN's alone)
        self.backbone.backward(self.fpn.backward(d_feats))

    def predict(self, images, image_sizes=None, original_sizes=None, paste: bool = True):
        """Detections and masks for a batch.

        images ``(N, 3, Hb, Wb)``; image_sizes: ``N`` pairs ``(h_i, w_i)``, each image's valid area
        (default: the whole input); original_sizes: ``N`` pairs ``(H_i, W_i)`` to map the results to
        (default: the valid area itself, i.e. input pixels).

        Returns per image ``{boxes (D, 4), scores (D,), labels (D,) in 1..K, masks (D, H_i, W_i) bool}``:
        boxes are detected inside the valid area, then scaled by ``(W_i / w_i, H_i / h_i)``; masks are
        the mask head's ``m x m`` probabilities pasted (bilinear, threshold 0.5) straight at the
        original size, within each box (:func:`mrcnn_np.detection.postprocess.paste_masks`).
        ``paste=False`` gives ``mask_probs (D, m, m)`` instead of ``masks``, so that a caller can paste
        and encode one detection at a time (a 4000x3000 image would need 12 MB per dense mask).
        """
        self._check_images(images)
        images, _ = self._to_model_arrays(images)
        h_in, w_in = images.shape[2:]
        sizes = self._sizes("image_sizes", image_sizes, images, (h_in, w_in))
        originals = self._sizes("original_sizes", original_sizes, images, None)
        images = images.astype(self.config.dtype, copy=False)
        with nn.no_cache():
            feats = self.fpn(self.backbone(images))
            proposals, _, _ = self.rpn.forward(feats, sizes, False, input_size=images.shape[2:])
            dets = self.roi_heads.predict(feats, [p for p, _ in proposals], sizes)
        # NOTE: boxes are scaled and masks pasted where the detections are (the device, under a GPU
        # backend): the (D, m, m) probabilities never travel, only the finished masks do. Then the
        # results move to the host, where they live.
        dets = [detections_to_original(det, size, orig, paste, mode=self.config.paste)
                for det, size, orig in zip(dets, sizes, originals)]
        return _to_host(dets)

    def detect(self, images, paste: bool = True):
        """Detections for raw images, at their original sizes.

        images: one ``uint8 (H, W, 3)`` RGB array or a list of them (any sizes; float ``(3, H, W)``
        in ``[0, 1]`` also works). The model's transform resizes, normalises and pads them (the
        preset's rule), then :meth:`predict` runs. Returns per image ``{boxes (D, 4) float32 in the
        image's pixels, scores (D,), labels (D,) in 1..K, masks (D, H, W) bool}`` by decreasing
        score (``paste=False``: ``mask_probs (D, m, m)`` instead of ``masks``).
        """
        batch, sizes, originals = self.transform(images)
        return self.predict(batch, sizes, originals, paste=paste)


def build_model(config: ModelConfig, seed: int = 0) -> MaskRCNN:
    return MaskRCNN(config, seed)
