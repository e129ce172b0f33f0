"""Mask pasting on the GPU: ``kernels/paste.cu`` (one thread per output pixel of each detection).
Mirrors :mod:`mrcnn_np.ops.paste` (equations P1-P4): coordinates in double from the boxes as given,
weights and the bilinear blend in the masks' dtype."""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ...ops.paste import check_paste_args
from ._module import function, launch, scalar

__all__ = ["paste_masks"]

_SRC = "paste.cu"


@register("cupy", "paste_masks")
def paste_masks(masks, boxes, image_size, threshold=0.5):
    """Same arguments and result as :func:`mrcnn_np.ops.paste.paste_masks`: masks ``(D, m_h, m_w)``
    float probabilities, boxes ``(D, 4)``, image_size ``(h, w)`` -> ``(D, h, w)`` bool CuPy array.
    Nothing is read back to the host: the launch is queued and the result stays on the device."""
    h, w = check_paste_args(masks, boxes, image_size, threshold)
    d, m_h, m_w = masks.shape
    dt = masks.dtype
    masks = cupy.ascontiguousarray(masks)
    boxes = cupy.ascontiguousarray(boxes.astype(cupy.float64, copy=False))
    out = cupy.empty((d, h, w), dtype=cupy.uint8)         # every pixel is written by its thread
    launch(function(_SRC, "paste_masks", dt), out.size,
           (masks, boxes, np.int32(d), np.int32(m_h), np.int32(m_w), np.int32(h), np.int32(w),
            scalar(dt, threshold), out))
    return out.view(cupy.bool_)
