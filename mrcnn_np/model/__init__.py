"""Mask R-CNN from the project's own layers: backbone, FPN, RPN, RoI heads, configs."""
from .configs import PRESETS, ModelConfig, get_config
from .mask_rcnn import LOSS_NAMES, MaskRCNN, build_model

__all__ = ["ModelConfig", "PRESETS", "get_config", "MaskRCNN", "build_model", "LOSS_NAMES"]
