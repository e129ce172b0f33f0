"""Matcher: give each prediction (anchor or proposal) the ground-truth box it overlaps best, or none.

Input: a quality matrix ``Q`` ``(G, A)``, ``Q[g, a] = IoU(gt_g, pred_a)``. For each prediction::

    best(a) = max_g Q[g, a],   m(a) = argmax_g Q[g, a]      (ties: the lower gt index)
    match(a) = m(a)     if best(a) >= high
             = -2       if low <= best(a) < high           (BETWEEN_THRESHOLDS: ignored in the loss)
             = -1       if best(a) < low                    (BELOW_LOW_THRESHOLD: negative)

The RPN uses ``high=0.7, low=0.3`` (anchors in between are ignored); the RoI heads ``high=low=0.5``
(no ignored band: every proposal is a positive or a negative).

Low-quality matches (``allow_low_quality_matches=True``, used by the RPN): a ground-truth box may
overlap no anchor by 0.7, and would then get no positive at all. So for every gt ``g`` the
predictions with the highest IoU with it (all of them if several tie) are matched as positives too,
to *their own* best gt ``m(a)`` (which is ``g`` unless another gt overlaps them even more)::

    for g:  for a with Q[g, a] == max_a' Q[g, a'] > 0:  match(a) = m(a)

# NOTE: the ``> 0`` is ours. torchvision takes the ties of the maximum even when that maximum is 0,
# so a gt that overlaps nothing would turn every prediction that overlaps no gt into a "positive"
# matched to gt 0. Such a gt (outside every anchor) simply gets no match here.
"""
from __future__ import annotations

from ..backend import get_array_module

__all__ = ["Matcher"]


class Matcher:
    """Matcher(high_threshold, low_threshold, allow_low_quality_matches); see the module docstring.

    ``matcher(quality)`` with ``quality`` ``(G, A)`` returns int64 ``(A,)``: a gt index in
    ``[0, G)``, or ``BELOW_LOW_THRESHOLD = -1`` (negative), or ``BETWEEN_THRESHOLDS = -2`` (ignored).
    With ``G = 0`` (an image without objects) every prediction is negative (-1).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False):
        if not low_threshold <= high_threshold:
            raise ValueError(f"low_threshold: expected <= high_threshold ({high_threshold}), "
                             f"got {low_threshold}")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self):
        return (f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, quality):
        """quality: ``(G, A)`` IoUs of G ground-truth boxes with A predictions -> int64 ``(A,)``."""
        if getattr(quality, "ndim", None) != 2:
            raise ValueError(f"quality: expected a 2-D (G, A) matrix of IoUs, got shape "
                             f"{getattr(quality, 'shape', type(quality).__name__)}")
        xp = get_array_module(quality)
        g, a = quality.shape
        if g == 0:                                  # no objects: everything is background
            return xp.full(a, self.BELOW_LOW_THRESHOLD, dtype=xp.int64)
        if a == 0:
            return xp.zeros(0, dtype=xp.int64)
        best = quality.max(axis=0)                  # (A,) best IoU of each prediction
        best_gt = quality.argmax(axis=0).astype(xp.int64)    # (A,) its gt (first on ties)
        # NOTE: xp.where rather than matches[mask] = value: on a GPU a boolean-mask write makes the
        # host wait for the device (CuPy must count the mask's True entries first)
        matches = xp.where(best < self.low_threshold, self.BELOW_LOW_THRESHOLD,
                           xp.where(best < self.high_threshold, self.BETWEEN_THRESHOLDS, best_gt))
        if self.allow_low_quality_matches:
            best_per_gt = quality.max(axis=1, keepdims=True)           # (G, 1)
            ties = (quality == best_per_gt) & (best_per_gt > 0)        # (G, A) each gt's best preds
            rescued = ties.any(axis=0)                                  # (A,)
            matches = xp.where(rescued, best_gt, matches)
        return matches.astype(xp.int64, copy=False)
