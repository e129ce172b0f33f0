"""Every layer of Mask R-CNN as an explicit forward/backward pair, in one namespace.

``*_forward(...)`` returns ``(out, cache)``; ``*_backward(dout, cache)`` returns the gradients in the
order of the forward's array arguments (losses: the gradient of the predictions only). The code
lives in :mod:`mrcnn_np.ops` (one file per op family, the NumPy reference); this module gathers the
names, which are a fixed interface, and routes each call through :mod:`mrcnn_np.dispatch`: the
active backend's kernel where it has one, the reference otherwise. ``f.reference`` is the
reference function behind a dispatched ``f``.
"""
from .dispatch import dispatch_op, dispatch_pair
from .ops import activation, boxes, conv, linear, losses, nms as _nms, norm, pool, roi_align as _ra
from .ops import interpolate as _interp
from .ops import paste as _paste
from .ops import roi_pool as _rp

conv2d_forward, conv2d_backward = dispatch_pair(
    "conv2d", conv.conv2d_forward, conv.conv2d_backward, conv.check_conv2d_args)
conv_transpose2d_forward, conv_transpose2d_backward = dispatch_pair(
    "conv_transpose2d", conv.conv_transpose2d_forward, conv.conv_transpose2d_backward,
    conv.check_conv_transpose2d_args)
max_pool2d_forward, max_pool2d_backward = dispatch_pair(
    "max_pool2d", pool.max_pool2d_forward, pool.max_pool2d_backward, pool.check_max_pool2d_args)
upsample_nearest2d_forward, upsample_nearest2d_backward = dispatch_pair(
    "upsample_nearest2d", pool.upsample_nearest2d_forward, pool.upsample_nearest2d_backward)
relu_forward, relu_backward = dispatch_pair(
    "relu", activation.relu_forward, activation.relu_backward)
linear_forward, linear_backward = dispatch_pair(
    "linear", linear.linear_forward, linear.linear_backward)
group_norm_forward, group_norm_backward = dispatch_pair(
    "group_norm", norm.group_norm_forward, norm.group_norm_backward, norm.check_group_norm_args)
frozen_batch_norm_forward, frozen_batch_norm_backward = dispatch_pair(
    "frozen_batch_norm", norm.frozen_batch_norm_forward, norm.frozen_batch_norm_backward,
    norm.check_frozen_batch_norm_args)
roi_align_forward, roi_align_backward = dispatch_pair(
    "roi_align", _ra.roi_align_forward, _ra.roi_align_backward, _ra.check_roi_align_args)
roi_pool_forward, roi_pool_backward = dispatch_pair(
    "roi_pool", _rp.roi_pool_forward, _rp.roi_pool_backward, _rp.check_roi_pool_args)
softmax_cross_entropy_forward, softmax_cross_entropy_backward = dispatch_pair(
    "softmax_cross_entropy", losses.softmax_cross_entropy_forward,
    losses.softmax_cross_entropy_backward, losses.check_softmax_cross_entropy_args)
smooth_l1_forward, smooth_l1_backward = dispatch_pair(
    "smooth_l1", losses.smooth_l1_forward, losses.smooth_l1_backward, losses.check_smooth_l1_args)
sigmoid_bce_with_logits_forward, sigmoid_bce_with_logits_backward = dispatch_pair(
    "sigmoid_bce_with_logits", losses.sigmoid_bce_with_logits_forward,
    losses.sigmoid_bce_with_logits_backward, losses.check_sigmoid_bce_with_logits_args)
box_iou = dispatch_op("box_iou", boxes.box_iou, boxes.check_box_iou_args)
nms = dispatch_op("nms", _nms.nms, _nms.check_nms_args)
batched_nms = dispatch_op("batched_nms", _nms.batched_nms, _nms.check_batched_nms_args)
interpolate_bilinear = dispatch_op("interpolate_bilinear", _interp.interpolate_bilinear,
                                   _interp.check_interpolate_args)
# NOTE: boxes keep their dtype at the boundary: they are coordinates, read in float64 by every
# kernel; cast to float32 masks' dtype they would move a box edge across a pixel centre now and then
paste_masks = dispatch_op("paste_masks", _paste.paste_masks, _paste.check_paste_args,
                          keep_dtype=("boxes",))

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
    "max_pool2d_forward", "max_pool2d_backward", "relu_forward", "relu_backward",
    "upsample_nearest2d_forward", "upsample_nearest2d_backward", "linear_forward", "linear_backward",
    "group_norm_forward", "group_norm_backward", "frozen_batch_norm_forward",
    "frozen_batch_norm_backward", "roi_align_forward", "roi_align_backward",
    "roi_pool_forward", "roi_pool_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "smooth_l1_forward", "smooth_l1_backward",
    "sigmoid_bce_with_logits_forward", "sigmoid_bce_with_logits_backward",
    "box_iou", "nms", "batched_nms", "interpolate_bilinear", "paste_masks",
]
