"""Model configurations: one dataclass, named presets.

Every width and size of the model lives here, so a preset name (``demo``, ``small``, ``tiny``)
fully describes a model; checkpoints store the whole dict and refuse to load into another.

Presets
-------
``tiny``   a few channels, 64-pixel inputs: unit tests and the whole-model gradient check (float64).
``demo``   128-pixel inputs (128x128 shapes images) on a 2-core CPU in minutes (``mrcnn-np demo``).
``small``  256-pixel inputs, wider everywhere: a start for real data on a CPU, or for a GPU.
``r50_fpn`` the paper's model: torchvision's ``maskrcnn_resnet50_fpn`` (v1), ResNet-50 with frozen
           BatchNorm, FPN with P6, 91 COCO labels, images resized to a short side of 800 (long side
           at most 1,333) and normalised. Made of the same classes as the toy presets; the switches
           below (``block``, ``norm``, ``stem``, ``fpn_extra``, anchor and RoIAlign conventions,
           ``resize``, ``paste``) are what differ. Weights: ``mrcnn-np import-weights``.
``r50_tiny`` the ``r50_fpn`` topology with every width divided by 16 and 128-pixel inputs: tests.

``image_size`` is the *longer side* of the model input, like torchvision's ``max_size``: a 640x480
photo goes in as 128x96 under ``demo``, not as a 128x128 canvas a quarter of which is padding.
With ``resize="min_max"`` (``r50_fpn``) the rule is torchvision's instead: the short side becomes
``min_size`` unless that makes the long side exceed ``max_size`` (see :mod:`.transform`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["ModelConfig", "PRESETS", "get_config", "parse_overrides"]


@dataclass
class ModelConfig:
    name: str = "demo"
    num_classes: int = 3                    # K, not counting the background
    image_size: int = 128                   # longer side of the model input: images are resized so
                                            # that max(h, w) = image_size (aspect kept), then a batch
                                            # is padded to a multiple of 32 (a 4:3 photo -> 128 x 96)
    dtype: str = "float32"

    # input transform (model/transform.py): resize, normalise, pad to a multiple of 32
    resize: str = "longest"                 # "longest": max(h, w) = image_size (PIL bilinear);
                                            # "min_max": torchvision's min_size / max_size rule and
                                            # its bilinear interpolation, on the normalised image
    min_size: int = 800                     # "min_max" only
    max_size: int = 1333                    # "min_max" only
    pixel_mean: tuple = ()                  # per-channel (x - mean) / std on [0, 1] pixels; () = none
    pixel_std: tuple = ()

    # backbone: a ResNet-style stem and four stages of residual blocks, strides 4..32 (C2..C5)
    block: str = "basic"                    # "basic" (2 x conv3x3) or "bottleneck" (1x1, 3x3, 1x1)
    norm: str = "group"                     # "group" (GroupNorm) or "frozen_bn" (FrozenBatchNorm2d)
    stem: str = "conv3x3"                   # "conv3x3": 3x3/2 conv; "conv7x7_pool": 7x7/2 + 3x3/2 max-pool
    stem_channels: int = 16
    stage_channels: tuple = (32, 48, 64, 96)  # output channels of each stage (C2..C5)
    blocks_per_stage: tuple = (1, 1, 1, 1)
    bottleneck_expansion: int = 4           # bottleneck width = stage_channels / expansion
    gn_groups: int = 8                      # GroupNorm groups everywhere (must divide every width)
    frozen_bn_eps: float = 0.0              # torchvision's COCO v1 weights: 0 (see ops/norm.py)
    trainable_backbone_layers: int = 5      # torchvision's meaning: the top N of (conv1, layer1..4)
                                            # train, the rest are frozen (no gradient, no backward
                                            # computed); 5 = all. `train --init` defaults to 3

    # FPN: P2..P5, one width; "maxpool" adds P6 = P5[::2, ::2] (torchvision's LastLevelMaxPool),
    # seen by the RPN only
    fpn_channels: int = 64
    fpn_extra: str = "none"

    # anchors, one size per level (P2..P5, and P6 with fpn_extra), three aspect ratios
    anchor_sizes: tuple = (16, 32, 64, 128)
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    anchor_offset: float = 0.5              # centre in the cell ((x + 0.5) s); torchvision: 0 (x s)
    anchor_round: bool = False              # round the cell anchors to integers (torchvision)

    # RPN
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_train: int = 1000           # per level
    rpn_post_nms_train: int = 300           # per image
    rpn_pre_nms_test: int = 500
    rpn_post_nms_test: int = 100
    rpn_nms: float = 0.7

    # RoI heads
    roi_iou: float = 0.5
    roi_batch_per_image: int = 64
    roi_positive_fraction: float = 0.25
    canonical_scale: float = 64.0           # FPN level assignment: k = floor(k0 + log2(sqrt(wh)/s0))
    canonical_level: int = 3
    sampling_ratio: int = 2
    roi_aligned: bool = True                # RoIAlign's half-pixel offset (torchvision's v1: False)
    box_pool: int = 7
    box_fc: int = 256
    mask_pool: int = 14
    mask_channels: int = 32
    mask_convs: int = 4
    mask_size: int = 28                     # = 2 * mask_pool (the transposed conv doubles it)
    mask_background_channel: bool = False   # K+1 mask channels, channel = label (torchvision)

    # the paper's ablations (Table 2; notebooks 06-08, benchmarks/ablations.py); defaults = Mask R-CNN
    mask_loss: str = "sigmoid"              # "sigmoid": per-class sigmoid + BCE on the GT class's mask;
                                            # "softmax": per-pixel softmax over K+1 channels (2b)
    mask_head: str = "fcn"                  # "fcn": 4 convs + deconv; "fc": an MLP (2e)
    mask_fc: int = 256                      # hidden width of the "fc" mask head
    pooler: str = "roi_align"               # "roi_align" or "roi_pool" (2c), both heads
    pool_level: int = 0                     # 0: FPN level per RoI; 2..5: every RoI from P_k (2d: 5)

    # inference
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 50
    paste: str = "centres"                  # "centres": sub-pixel box, pixel-centre sampling;
                                            # "torchvision": its paste_masks_in_image (postprocess.py)

    def __post_init__(self):
        self.stage_channels = tuple(self.stage_channels)
        self.blocks_per_stage = tuple(self.blocks_per_stage)
        self.anchor_sizes = tuple(self.anchor_sizes)
        self.aspect_ratios = tuple(self.aspect_ratios)
        self.pixel_mean = tuple(self.pixel_mean)
        self.pixel_std = tuple(self.pixel_std)
        for name, allowed in (("resize", ("longest", "min_max")), ("block", ("basic", "bottleneck")),
                              ("norm", ("group", "frozen_bn")), ("stem", ("conv3x3", "conv7x7_pool")),
                              ("fpn_extra", ("none", "maxpool")), ("paste", ("centres", "torchvision"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if self.resize == "longest" and self.image_size % 32:
            raise ValueError(f"image_size: expected a multiple of 32 (the C5 stride), got {self.image_size}")
        if self.resize == "min_max" and not 0 < self.min_size <= self.max_size:
            raise ValueError(f"min_size, max_size: expected 0 < min_size <= max_size, got "
                             f"{self.min_size}, {self.max_size}")
        if len(self.pixel_mean) != len(self.pixel_std) or len(self.pixel_mean) not in (0, 3) \
                or not all(s > 0 for s in self.pixel_std):
            raise ValueError(f"pixel_mean, pixel_std: expected both empty or 3 numbers each (std > 0), "
                             f"got {self.pixel_mean}, {self.pixel_std}")
        n_levels = 5 if self.fpn_extra == "maxpool" else 4
        if len(self.stage_channels) != 4 or len(self.blocks_per_stage) != 4 \
                or len(self.anchor_sizes) != n_levels:
            raise ValueError(f"stage_channels, blocks_per_stage: expected 4 entries each (C2..C5); "
                             f"anchor_sizes: {n_levels} (one per RPN level, P2..P{n_levels + 1})")
        if self.norm == "group":
            widths = (self.stem_channels, *self.stage_channels, self.fpn_channels, self.mask_channels)
            if self.block == "bottleneck":
                widths += tuple(c // self.bottleneck_expansion for c in self.stage_channels)
            bad = [w for w in widths if w % self.gn_groups]
            if bad:
                raise ValueError(f"gn_groups: {self.gn_groups} must divide every width, but not {bad}")
        if self.block == "bottleneck" and any(c % self.bottleneck_expansion for c in self.stage_channels):
            raise ValueError(f"stage_channels: expected multiples of bottleneck_expansion "
                             f"{self.bottleneck_expansion}, got {self.stage_channels}")
        if self.mask_size != 2 * self.mask_pool:
            raise ValueError(f"mask_size: expected 2 * mask_pool = {2 * self.mask_pool}, got {self.mask_size}")
        for name, allowed in (("mask_loss", ("sigmoid", "softmax")), ("mask_head", ("fcn", "fc")),
                              ("pooler", ("roi_align", "roi_pool"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.trainable_backbone_layers, bool) or self.trainable_backbone_layers not in range(6):
            raise ValueError(f"trainable_backbone_layers: expected an integer 0..5 (how many of conv1, "
                             f"layer1..layer4 train, from the top), got {self.trainable_backbone_layers!r}")
        if self.pool_level not in (0, 2, 3, 4, 5):
            raise ValueError(f"pool_level: expected 0 (FPN assignment) or 2..5, got {self.pool_level!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config: unknown fields {unknown}")
        return cls(**d)


PRESETS = {
    "tiny": dict(name="tiny", image_size=64, stem_channels=4, stage_channels=(4, 8, 8, 8),
                 gn_groups=2, fpn_channels=8, anchor_sizes=(8, 16, 32, 64), rpn_batch_per_image=64,
                 rpn_pre_nms_train=200, rpn_post_nms_train=50, rpn_pre_nms_test=100,
                 rpn_post_nms_test=30, roi_batch_per_image=16, canonical_scale=32.0, box_fc=16,
                 mask_channels=4, detections_per_img=20),
    "demo": dict(name="demo"),
    "small": dict(name="small", image_size=256, stem_channels=32, stage_channels=(64, 96, 128, 192),
                  blocks_per_stage=(2, 2, 2, 2), gn_groups=16, fpn_channels=128,
                  anchor_sizes=(32, 64, 128, 256), rpn_pre_nms_train=2000, rpn_post_nms_train=1000,
                  rpn_pre_nms_test=1000, rpn_post_nms_test=500, roi_batch_per_image=256,
                  canonical_scale=112.0, box_fc=512, mask_channels=128, detections_per_img=100),
}

#: torchvision's ``maskrcnn_resnet50_fpn`` (v1), every number as its code sets it (notes on each in
#: ``../shared/r50-notes.md``): ResNet-50 v1.5 (stride on the 3x3 conv) with FrozenBN (eps 0 for the
#: COCO v1 weights), FPN 256 with LastLevelMaxPool, anchors 32..512 x (0.5, 1, 2) on the cells' corners
#: and rounded, RPN 2000/2000 (train) and 1000/1000 (test) with NMS 0.7, RoIAlign without the half-pixel
#: offset, level mapper k0 = 4 at 224, TwoMLPHead 1024, 91-way predictor (90 classes + background),
#: mask head 4 x 256 with a background channel, 100 detections, and torchvision's transform and paste.
_R50 = dict(
    name="r50_fpn", num_classes=90, image_size=1333, resize="min_max", min_size=800, max_size=1333,
    pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225),
    block="bottleneck", norm="frozen_bn", stem="conv7x7_pool", stem_channels=64,
    stage_channels=(256, 512, 1024, 2048), blocks_per_stage=(3, 4, 6, 3), frozen_bn_eps=0.0,
    fpn_channels=256, fpn_extra="maxpool",
    anchor_sizes=(32, 64, 128, 256, 512), anchor_offset=0.0, anchor_round=True,
    rpn_pre_nms_train=2000, rpn_post_nms_train=2000, rpn_pre_nms_test=1000, rpn_post_nms_test=1000,
    roi_batch_per_image=512, canonical_scale=224.0, canonical_level=4, roi_aligned=False,
    box_fc=1024, mask_channels=256, mask_background_channel=True, detections_per_img=100,
    paste="torchvision")
PRESETS["r50_fpn"] = _R50
PRESETS["r50_tiny"] = {**_R50, "name": "r50_tiny", "min_size": 128, "max_size": 192, "stem_channels": 4,
                       "stage_channels": (16, 32, 64, 128), "fpn_channels": 16,
                       "anchor_sizes": (8, 16, 32, 64, 128), "rpn_pre_nms_train": 200,
                       "rpn_post_nms_train": 50, "rpn_pre_nms_test": 100, "rpn_post_nms_test": 30,
                       "rpn_batch_per_image": 64, "roi_batch_per_image": 16, "canonical_scale": 56.0,
                       "box_fc": 64, "mask_channels": 16, "num_classes": 3, "detections_per_img": 20}


def get_config(name: str, **overrides) -> ModelConfig:
    """The preset ``name`` with ``overrides`` applied; unknown names list the presets."""
    if name not in PRESETS:
        raise ValueError(f"config: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def parse_overrides(items) -> dict:
    """``["mask_loss=softmax", "pool_level=5"]`` -> ``{"mask_loss": "softmax", "pool_level": 5}``,
    each value converted to its field's type (tuples as comma-separated lists); errors name the field."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    defaults = ModelConfig()
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE with NAME one of the config's fields "
                             f"({', '.join(sorted(fields))})")
        current = getattr(defaults, key)
        try:
            if isinstance(current, bool):
                if text.strip().lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError
                value = text.strip().lower() in ("1", "true", "yes")
            elif isinstance(current, tuple):
                kind = type(current[0]) if current else float
                value = tuple(kind(v) for v in text.split(",") if v.strip())
            else:
                value = type(current)(text.strip())
        except ValueError:
            raise ValueError(f"--set {item!r}: expected a {type(current).__name__} for {key}") from None
        out[key] = value
    return out
