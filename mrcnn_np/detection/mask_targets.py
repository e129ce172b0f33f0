"""Mask targets: the ground-truth mask of each positive RoI, seen through that RoI at m x m.

For positive RoI ``r`` (box ``b_r``) matched to object ``g_r``, the target is the object's full-image
binary mask ``M_g`` ``(H, W)`` cropped to ``b_r`` and resampled to ``m x m`` (28 by default), then
thresholded::

    T_r[i, j] = 1  if  RoIAlign(M_{g_r}, b_r)[i, j] >= 0.5  else 0

i.e. exactly the operation the mask head's input went through (RoIAlign of the features over the same
box), applied to the ground truth, so prediction and target are pixel-aligned.

How RoIAlign is called (:func:`mrcnn_np.ops.roi_align.roi_align_forward`):

* the masks are stacked as a batch of one-channel images ``(U, 1, H, W)`` (one per object that some
  positive matched) and each RoI's batch index is its object, so every RoI samples only its own
  mask. (Stacking them as channels ``(1, G, H, W)`` would resample all ``G`` masks for every RoI and
  keep one: ``G`` times the work.)
* ``spatial_scale = 1`` (masks are at image resolution) and ``aligned=True``: mask pixel ``(y, x)``
  covers ``[x, x + 1)``, its value sits at ``x + 0.5``; the half-pixel offset puts the samples where
  the box really is (the legacy ``aligned=False`` shifts them by half a pixel).
* ``sampling_ratio = 2``: each of the ``m x m`` bins averages 2 x 2 bilinear samples. The result is
  thresholded at 0.5, so more samples barely change it (detectron2 uses the adaptive
  ``ceil(roi / m)``; that is ``sampling_ratio=0`` here, slower on large RoIs).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_numpy
from ..functional import roi_align_forward
from ..ops._check import values_on_host
from .boxes import check_boxes

__all__ = ["build_mask_targets"]


def build_mask_targets(gt_masks, rois, matched_gt, mask_size: int = 28, sampling_ratio: int = 2,
                       threshold: float = 0.5, dtype=np.float32):
    """gt_masks ``(G, H, W)`` (bool or 0/1), rois ``(P, 4)`` the positive RoIs, matched_gt ``(P,)`` int
    their object indices in ``[0, G)`` -> targets ``(P, m, m)`` of 0.0 / 1.0 in ``dtype``.

    ``T = RoIAlign(M[matched_gt], rois, m, scale 1, sampling_ratio, aligned=True) >= threshold``.
    No positives gives an empty ``(0, m, m)`` array.
    """
    check_boxes("rois", rois)
    if getattr(gt_masks, "ndim", None) != 3:
        raise ValueError(f"gt_masks: expected a (G, H, W) array, got shape "
                         f"{getattr(gt_masks, 'shape', type(gt_masks).__name__)}")
    if getattr(matched_gt, "ndim", None) != 1 or matched_gt.shape[0] != rois.shape[0]:
        raise ValueError(f"matched_gt: expected shape ({rois.shape[0]},) (one per RoI), got "
                         f"{getattr(matched_gt, 'shape', type(matched_gt).__name__)}")
    xp = get_array_module(gt_masks, rois)
    p = rois.shape[0]
    if p == 0:
        return xp.zeros((0, mask_size, mask_size), dtype=dtype)
    if values_on_host(matched_gt):
        m_host = to_numpy(matched_gt)
        if m_host.min() < 0 or m_host.max() >= gt_masks.shape[0]:
            raise ValueError(f"matched_gt: expected object indices in [0, {gt_masks.shape[0] - 1}] "
                             f"(positives only), got values in [{m_host.min()}, {m_host.max()}]")
    # RoIAlign's batch index picks the image a RoI samples: here the object's mask, so the G masks
    # are G one-channel "images" and each RoI reads its own object's
    masks = gt_masks[:, None].astype(xp.float32)                      # (G, H, W) -> (G, 1, H, W)
    rois5 = xp.concatenate([matched_gt.astype(xp.float32)[:, None],
                            rois.astype(xp.float32)], axis=1)          # (P, 5) [g, x1, y1, x2, y2]
    out, _ = roi_align_forward(masks, rois5, (mask_size, mask_size), 1.0, sampling_ratio, True)
    return (out[:, 0] >= threshold).astype(dtype)                       # (P, 1, m, m) -> (P, m, m)
