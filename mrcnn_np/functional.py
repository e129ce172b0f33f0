"""Every layer of Mask R-CNN as an explicit forward/backward pair, in one namespace.

``*_forward(...)`` returns ``(out, cache)``; ``*_backward(dout, cache)`` returns the gradients in the
order of the forward's array arguments (losses: the gradient of the predictions only). The code
lives in :mod:`mrcnn_np.ops` (one file per op family) and :mod:`mrcnn_np.detection`; this module only
gathers the names, which are a fixed interface.
"""
from .detection.boxes import box_iou
from .detection.nms import batched_nms, nms
from .ops.activation import relu_backward, relu_forward
from .ops.conv import (conv2d_backward, conv2d_forward, conv_transpose2d_backward,
                       conv_transpose2d_forward)
from .ops.linear import linear_backward, linear_forward
from .ops.losses import (sigmoid_bce_with_logits_backward, sigmoid_bce_with_logits_forward,
                         smooth_l1_backward, smooth_l1_forward, softmax_cross_entropy_backward,
                         softmax_cross_entropy_forward)
from .ops.norm import group_norm_backward, group_norm_forward
from .ops.pool import (max_pool2d_backward, max_pool2d_forward, upsample_nearest2d_backward,
                       upsample_nearest2d_forward)
from .ops.roi_align import roi_align_backward, roi_align_forward
from .ops.roi_pool import roi_pool_backward, roi_pool_forward

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
    "max_pool2d_forward", "max_pool2d_backward", "relu_forward", "relu_backward",
    "upsample_nearest2d_forward", "upsample_nearest2d_backward", "linear_forward", "linear_backward",
    "group_norm_forward", "group_norm_backward", "roi_align_forward", "roi_align_backward",
    "roi_pool_forward", "roi_pool_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "smooth_l1_forward", "smooth_l1_backward",
    "sigmoid_bce_with_logits_forward", "sigmoid_bce_with_logits_backward",
    "box_iou", "nms", "batched_nms",
]
