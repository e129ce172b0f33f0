"""NMS on the GPU: ``kernels/nms.cu``, the bitmask algorithm (torchvision's CUDA NMS).

1. sort by score on the device, high to low, ties by lower index (CuPy's argsort is stable);
2. ``nms_mask``: one 64-thread block per (row block, column block) of 64 sorted boxes sets, for each
   row box, a 64-bit word of "IoU > threshold" verdicts on the column block;
3. the greedy pass over the mask rows on the host (:mod:`mrcnn_np.backends.bitmask_nms`), as
   torchvision does: the mask comes to the host once. ``nms_greedy`` in ``nms.cu`` is the same pass
   on one device thread, which measured 4x slower on an H100 (see that module), so it is not used.

Mirrors :mod:`mrcnn_np.ops.nms` (strict ``>``; ``batched_nms`` never suppresses across labels).
"""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ..bitmask_nms import greedy_keep
from ._module import function

_SRC = "nms.cu"
_BLOCK = 64                                   # NMS_BLOCK in nms.cu: the bits of one mask word


def _nms(boxes, scores, labels, iou_threshold):
    n = boxes.shape[0]
    if n == 0:
        return cupy.zeros(0, dtype=cupy.int64)
    # Stable descending order, as the reference's argsort(-scores, kind="stable"). `0 - scores`
    # rather than `-scores`: it maps -0.0 to +0.0, so a radix sort on the bits cannot order the two
    # zeros apart (NumPy's comparison sort treats them as equal, i.e. ties by index).
    order = cupy.argsort(0 - scores)
    b = boxes[order]
    if b.dtype not in (np.float32, np.float64):  # integer (or half) boxes: IoUs in float64
        b = b.astype(np.float64)
    b = cupy.ascontiguousarray(b)
    use_labels = labels is not None
    lab = (cupy.ascontiguousarray(labels[order].astype(cupy.int64)) if use_labels
           else cupy.zeros(1, dtype=cupy.int64))
    col_blocks = (n + _BLOCK - 1) // _BLOCK
    mask = cupy.empty((n, col_blocks), dtype=cupy.uint64)   # only the upper block triangle is used
    function(_SRC, "nms_mask", b.dtype)(
        (col_blocks, col_blocks), (_BLOCK,),
        (b, lab, np.int32(use_labels), np.int32(n), np.float64(iou_threshold), mask))
    keep = greedy_keep(cupy.asnumpy(mask), n)              # the one device -> host copy
    return order[cupy.asarray(keep)].astype(cupy.int64)


@register("cupy", "nms")
def nms(boxes, scores, iou_threshold):
    return _nms(boxes, scores, None, float(iou_threshold))


@register("cupy", "batched_nms")
def batched_nms(boxes, scores, labels, iou_threshold):
    return _nms(boxes, scores, labels, float(iou_threshold))
