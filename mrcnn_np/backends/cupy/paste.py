"""Mask pasting on the GPU: ``kernels/paste.cu``. NOT registered with the dispatcher: ``paste_masks``
in :mod:`mrcnn_np.detection.postprocess` is being rewritten, and the lead wires this in after
merging. Same arguments and result as that function's current version."""
from __future__ import annotations

import cupy
import numpy as np

from ...detection.boxes import _image_size, check_boxes
from ._module import function, launch, scalar

_SRC = "paste.cu"


def paste_masks(masks, boxes, image_size, threshold: float = 0.5):
    """masks ``(D, m_h, m_w)`` probabilities, boxes ``(D, 4)``, image_size ``(h, w)`` ->
    ``(D, h, w)`` bool CuPy array: bilinear sample of each mask in its box, ``>= threshold``."""
    check_boxes("boxes", boxes)
    if getattr(masks, "ndim", None) != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks: expected shape ({boxes.shape[0]}, m, m) (one per box), got "
                         f"{getattr(masks, 'shape', type(masks).__name__)}")
    h, w = (int(v) for v in _image_size(image_size))
    d, m_h, m_w = masks.shape
    dt = masks.dtype if masks.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    masks = cupy.ascontiguousarray(cupy.asarray(masks).astype(dt, copy=False))
    boxes = cupy.ascontiguousarray(cupy.asarray(boxes).astype(cupy.float64))
    out = cupy.zeros((d, h, w), dtype=cupy.uint8)
    launch(function(_SRC, "paste_masks", dt), out.size,
           (masks, boxes, np.int32(d), np.int32(m_h), np.int32(m_w), np.int32(h), np.int32(w),
            scalar(dt, threshold), out))
    return out.view(cupy.bool_)
