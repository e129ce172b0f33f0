"""NMS with the bitmask algorithm of torchvision's CUDA kernel, as a ``@cuda.jit`` kernel.

Reference: :mod:`mrcnn_np.ops.nms` (greedy NMS, semantics of ``torchvision.ops.nms``: a box is dropped
when its IoU with a kept, higher-ranked box is *strictly* greater than the threshold; boxes ranked by
descending score, ties by lower index; ``batched_nms`` never suppresses across labels).

Three steps, as in torchvision:

1. sort by score, descending and stable (``xp.argsort(-scores, kind="stable")``, as the reference);
2. the kernel fills the suppression matrix as bits: the sorted boxes are cut into blocks of 64, and
   block ``(row, col)`` of the launch grid has one thread per box ``i`` of block ``row``; that thread
   compares box ``i`` with the 64 boxes ``j`` of block ``col`` (first staged in shared memory, since all
   64 threads read them) and sets bit ``j % 64`` of ``mask[i, col]`` when ``j > i`` and
   ``IoU(i, j) > t``. One uint64 holds 64 answers, so the matrix is ``n x ceil(n / 64)`` words, 64 times
   smaller than a boolean one; blocks below the diagonal (``col < row``: every ``j < i``) do nothing;
3. the greedy pass walks the rows in score order on the host, as the reference's ``_greedy_rows``
   does (and torchvision copies its mask to the host): box ``i`` is kept if no kept box has set its
   bit, and then its row is OR-ed into the "removed" bits. That loop is sequential by nature;
   it is a small ``@njit`` function over the copied words.

IoUs are computed in the boxes' dtype in the reference's order of operations, with multiplications
that are never fused into an FMA (``unfused_multiply``), and compared with the threshold as a float64
number, so the kept set is the reference's, ties at the threshold included.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ...backend import to_numpy
from ...dispatch import register
from ..bitmask_nms import greedy_keep
from ._launch import array_module, launch_blocks, numba_dtype, unfused_multiply

__all__ = ["nms", "batched_nms"]

BLOCK = 64                                       # boxes per block: the bits of one uint64 word


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"
    ZERO = T(0)
    nb_t = numba_dtype(dtype)
    mul = unfused_multiply(dtype)                # NOTE: no FMA, so IoUs round as the reference's

    @cuda.jit
    def suppression_mask(boxes, labels, use_labels, iou_threshold, mask):
        """mask[i, col] bit k = box i suppresses box j = col * 64 + k (sorted order, j > i)."""
        n = boxes.shape[0]
        row = cuda.blockIdx.y
        col = cuda.blockIdx.x
        if col < row:                            # every j of this block is < i: nothing to test
            return
        t = cuda.threadIdx.x
        row_size = min(n - row * BLOCK, BLOCK)
        col_size = min(n - col * BLOCK, BLOCK)
        # stage the column block's boxes in shared memory: all 64 threads read all of them
        col_boxes = cuda.shared.array((BLOCK, 4), nb_t)
        col_labels = cuda.shared.array(BLOCK, np.int64)
        if t < col_size:
            for k in range(4):
                col_boxes[t, k] = boxes[col * BLOCK + t, k]
            col_labels[t] = labels[col * BLOCK + t]
        cuda.syncthreads()
        if t >= row_size:
            return
        i = row * BLOCK + t
        x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        area_i = mul(x2 - x1, y2 - y1)
        bits = np.uint64(0)
        start = t + 1 if row == col else 0       # only j > i (the upper triangle)
        for k in range(start, col_size):
            if use_labels and labels[i] != col_labels[k]:
                continue                         # batched_nms: other labels never suppress
            # IoU in the reference's order of operations (ops/nms.py: _suppression)
            w = min(x2, col_boxes[k, 2]) - max(x1, col_boxes[k, 0])
            w = max(w, ZERO)
            h = min(y2, col_boxes[k, 3]) - max(y1, col_boxes[k, 1])
            h = max(h, ZERO)
            inter = mul(w, h)
            area_k = mul(col_boxes[k, 2] - col_boxes[k, 0], col_boxes[k, 3] - col_boxes[k, 1])
            union = area_i + area_k - inter
            iou = inter / union                  # 0/0 = NaN (error_model numpy) never suppresses
            if iou > iou_threshold:              # NOTE: strict '>', compared as a float64
                bits |= np.uint64(1) << np.uint64(k)
        mask[i, col] = bits

    return suppression_mask


def _nms(boxes, scores, labels, iou_threshold):
    xp = array_module()
    n = boxes.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=xp.int64)
    if boxes.dtype.kind != "f":                  # integer boxes: IoUs need floats (as the reference)
        boxes = boxes.astype(xp.float64)
    order = xp.argsort(-scores, kind="stable")   # descending; ties keep index order
    sorted_boxes = xp.ascontiguousarray(boxes[order])
    use_labels = labels is not None
    sorted_labels = (labels[order].astype(xp.int64) if use_labels else xp.zeros(n, dtype=xp.int64))
    blocks = (n + BLOCK - 1) // BLOCK
    mask = xp.zeros((n, blocks), dtype=xp.uint64)
    launch_blocks(_kernels(sorted_boxes.dtype), (blocks, blocks), BLOCK, sorted_boxes,
                  sorted_labels, use_labels, np.float64(iou_threshold), mask)
    keep = greedy_keep(to_numpy(mask), n)       # the host pass, as the reference's _greedy_rows
    return order[xp.asarray(keep)].astype(xp.int64)


@register("numba-cuda", "nms")
def nms(boxes, scores, iou_threshold):
    """Same arguments and result as :func:`mrcnn_np.ops.nms.nms`."""
    return _nms(boxes, scores, None, iou_threshold)


@register("numba-cuda", "batched_nms")
def batched_nms(boxes, scores, labels, iou_threshold):
    """Same arguments and result as :func:`mrcnn_np.ops.nms.batched_nms`."""
    return _nms(boxes, scores, labels, iou_threshold)
