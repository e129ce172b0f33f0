"""Model configurations: one dataclass, named presets.

Every width and size of the model lives here, so a preset name (``demo``, ``small``, ``tiny``)
fully describes a model; checkpoints store the whole dict and refuse to load into another.

Presets
-------
``tiny``   a few channels, 64-pixel inputs: unit tests and the whole-model gradient check (float64).
``demo``   128-pixel inputs (128x128 shapes images) on a 2-core CPU in minutes (``mrcnn-np demo``).
``small``  256-pixel inputs, wider everywhere: a start for real data on a CPU, or for a GPU.

``image_size`` is the *longer side* of the model input, like torchvision's ``max_size``: a 640x480
photo goes in as 128x96 under ``demo``, not as a 128x128 canvas a quarter of which is padding.
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

    # backbone: a ResNet-style stem (stride 2) and four stages of basic blocks, strides 4..32 (C2..C5)
    stem_channels: int = 16
    stage_channels: tuple = (32, 48, 64, 96)
    blocks_per_stage: tuple = (1, 1, 1, 1)
    gn_groups: int = 8                      # GroupNorm groups everywhere (must divide every width)

    # FPN: P2..P5, one width
    fpn_channels: int = 64

    # anchors, one size per level (P2..P5), three aspect ratios; centred in their cells
    anchor_sizes: tuple = (16, 32, 64, 128)
    aspect_ratios: tuple = (0.5, 1.0, 2.0)

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
    box_pool: int = 7
    box_fc: int = 256
    mask_pool: int = 14
    mask_channels: int = 32
    mask_convs: int = 4
    mask_size: int = 28                     # = 2 * mask_pool (the transposed conv doubles it)

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

    def __post_init__(self):
        self.stage_channels = tuple(self.stage_channels)
        self.blocks_per_stage = tuple(self.blocks_per_stage)
        self.anchor_sizes = tuple(self.anchor_sizes)
        self.aspect_ratios = tuple(self.aspect_ratios)
        if self.image_size % 32:
            raise ValueError(f"image_size: expected a multiple of 32 (the C5 stride), got {self.image_size}")
        if len(self.stage_channels) != 4 or len(self.blocks_per_stage) != 4 or len(self.anchor_sizes) != 4:
            raise ValueError("stage_channels, blocks_per_stage, anchor_sizes: expected 4 entries each "
                             "(C2..C5 / P2..P5)")
        widths = (self.stem_channels, *self.stage_channels, self.fpn_channels, self.mask_channels)
        bad = [w for w in widths if w % self.gn_groups]
        if bad:
            raise ValueError(f"gn_groups: {self.gn_groups} must divide every width, but not {bad}")
        if self.mask_size != 2 * self.mask_pool:
            raise ValueError(f"mask_size: expected 2 * mask_pool = {2 * self.mask_pool}, got {self.mask_size}")
        for name, allowed in (("mask_loss", ("sigmoid", "softmax")), ("mask_head", ("fcn", "fc")),
                              ("pooler", ("roi_align", "roi_pool"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
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
