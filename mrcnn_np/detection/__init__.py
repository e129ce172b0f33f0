"""Detection machinery with no gradient that decides what the model learns and what it outputs.

One small module per piece, each stating its math and shapes:

* :mod:`.boxes` -- clipping, filtering, the box coder (IoU, area and NMS are ops:
  :mod:`mrcnn_np.ops.boxes`, :mod:`mrcnn_np.ops.nms`, dispatched through :mod:`mrcnn_np.functional`)
* :mod:`.anchors` -- multi-level FPN anchors;  :mod:`.matcher`, :mod:`.sampler` -- who learns what
* :mod:`.ground_truth` -- checking ground truth;  :mod:`.rpn_targets`, :mod:`.roi_targets`,
  :mod:`.mask_targets` -- training targets;  :mod:`.level_mapper` -- FPN level of a RoI
* :mod:`.proposals` -- RPN outputs to proposals;  :mod:`.postprocess` -- detections and pasted masks
"""
from .anchors import AnchorGenerator, cell_anchors, grid_anchors
from .boxes import BoxCoder, box_area, box_iou, check_boxes, clip_boxes, remove_small_boxes
from .ground_truth import clean_ground_truth
from .level_mapper import LevelMapper
from .mask_targets import build_mask_targets
from .matcher import Matcher
from .postprocess import paste_masks, postprocess_boxes, postprocess_masks, select_class_masks
from .proposals import ProposalSettings, generate_proposals, top_k_indices
from .roi_targets import RoITargets, build_roi_targets
from .rpn_targets import RPNTargets, build_rpn_targets
from .sampler import BalancedPositiveNegativeSampler, as_generator

__all__ = [
    "box_area", "box_iou", "clip_boxes", "remove_small_boxes", "check_boxes", "BoxCoder",
    "AnchorGenerator", "cell_anchors", "grid_anchors",
    "Matcher", "BalancedPositiveNegativeSampler", "as_generator", "clean_ground_truth",
    "RPNTargets", "build_rpn_targets", "RoITargets", "build_roi_targets", "build_mask_targets",
    "LevelMapper", "ProposalSettings", "generate_proposals", "top_k_indices",
    "postprocess_boxes", "select_class_masks", "paste_masks", "postprocess_masks",
]
