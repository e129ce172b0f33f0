"""FPN level assignment: which pyramid level a RoI is pooled from (FPN paper, eq. 1).

A RoI of width ``w`` and height ``h`` is pooled from level::

    k = floor(k0 + log2(sqrt(w h) / s0) + eps),     clamped to [k_min, k_max]

``s0`` is the *canonical scale*: a RoI of that size goes to level ``k0``; one twice as big goes one
level up (half the resolution), one half as big one level down. The paper uses ``s0 = 224`` (the
ImageNet pre-training size) and ``k0 = 4``, for images of about 800 pixels. ``eps = 1e-6`` guards the
floor against ``log2`` landing a hair below an integer (torchvision does the same), so a box of exactly
``s0 * 2^j`` lands on level ``k0 + j``.

# NOTE: ``s0`` scales with the images. On 128 x 128 images no object is bigger than 128 pixels, and
# with ``s0 = 224`` every RoI maps below ``4 + log2(128/224) = 3.19``: P2 or P3, never P4 or P5, so
# half the pyramid would pool nothing. Scaling ``s0`` with the image size (``224 * 128 / 800 ~ 36``,
# or simply ``s0 = 32`` with ``k0 = 3``: a 16-pixel RoI on P2, 32 on P3, 64 on P4, 128 on P5)
# spreads the RoIs over the levels as the paper's setting does at full size.

Returned levels are indices into the pooled levels: ``k - k_min`` (0 for P2 when ``k_min = 2``).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .boxes import box_area, check_boxes

__all__ = ["LevelMapper"]


class LevelMapper:
    """LevelMapper(k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6).

    ``mapper(boxes)`` with boxes ``(R, 4)`` returns int64 ``(R,)`` level indices in
    ``[0, k_max - k_min]``. Zero-area boxes go to ``k_min``.
    """

    def __init__(self, k_min: int = 2, k_max: int = 5, canonical_scale: float = 224.0,
                 canonical_level: int = 4, eps: float = 1e-6):
        if not (int(k_min) == k_min and int(k_max) == k_max and k_min <= k_max):
            raise ValueError(f"k_min, k_max: expected integers with k_min <= k_max, got {k_min}, {k_max}")
        if not canonical_scale > 0:
            raise ValueError(f"canonical_scale: expected a number > 0, got {canonical_scale!r}")
        self.k_min, self.k_max = int(k_min), int(k_max)
        self.canonical_scale = float(canonical_scale)
        self.canonical_level = float(canonical_level)
        self.eps = float(eps)

    def __repr__(self):
        return (f"LevelMapper(k_min={self.k_min}, k_max={self.k_max}, canonical_scale="
                f"{self.canonical_scale}, canonical_level={self.canonical_level:g}, eps={self.eps:g})")

    def __call__(self, boxes):
        """boxes: ``(R, 4)`` -> int64 ``(R,)``, ``clamp(floor(k0 + log2(sqrt(area)/s0) + eps)) - k_min``."""
        check_boxes("boxes", boxes)
        xp = get_array_module(boxes)
        # NOTE: in the boxes' own float dtype, as torchvision computes it: a RoI within a rounding
        # error of a level boundary then goes where torchvision's goes.
        dt = boxes.dtype if boxes.dtype.kind == "f" else np.dtype(np.float64)
        area = xp.maximum(box_area(boxes.astype(dt, copy=False)), 0)
        with np.errstate(divide="ignore"):                  # log2(0) = -inf -> clamps to k_min
            k = xp.floor(dt.type(self.canonical_level) + xp.log2(xp.sqrt(area) / dt.type(self.canonical_scale))
                         + dt.type(self.eps))
        k = xp.clip(k, self.k_min, self.k_max)
        return (k - self.k_min).astype(xp.int64)

    @property
    def num_levels(self) -> int:
        return self.k_max - self.k_min + 1

