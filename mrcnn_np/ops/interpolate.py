"""Bilinear resizing with the semantics of ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)`` (no antialiasing): the model's input transform (``r50_fpn``) and torchvision's
mask pasting use it.

For output index ``i`` along an axis of ``n_in -> n_out`` samples, with ``r = n_in / n_out`` (the
integer sizes' ratio), computed in float32 as torch's CPU kernel does::

    src = max(r (i + 0.5) - 0.5, 0)              the output pixel's centre, in input pixels (one rounding)
    i0 = floor(src),  i1 = min(i0 + 1, n_in - 1),  l = src - i0
    out[i] = (1 - l) x[i0] + l x[i1]

separably: rows first, then columns (the same weights as torch's 2-D form; the sums round
differently by an ulp or so). Forward only: nothing upstream of it is trained.
"""
from __future__ import annotations

import numpy as np

from ._check import check_float, check_ndim, pair

__all__ = ["interpolate_bilinear", "linear_taps", "check_interpolate_args"]


def linear_taps(n_in: int, n_out: int):
    """Per output index: the two source indices and their weights, in float32 (see module doc).

    # NOTE: ``r (i + 0.5) - 0.5`` is rounded to float32 once, as a fused multiply-add gives it (torch's
    # compiled kernel uses one): rounding the product first moves the weights by up to an ulp of
    # ``src`` (3e-5 at src ~ 300), i.e. output differences of ~1e-4 on unit-scale images."""
    r = np.float32(n_in) / np.float32(n_out)
    # float32 x (an integer + 0.5) is exact in float64, and so is the - 0.5: one rounding, at the end
    src = (np.float64(r) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, (np.float32(1) - l1), l1


def check_interpolate_args(x, size):
    """The argument check of :func:`interpolate_bilinear` (kernels get it too); returns ``(h, w)``."""
    check_ndim("x", x, 3, "(C, H, W)")
    check_float("x", x)
    h, w = pair("size", size)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"x: expected a non-empty image, got shape {tuple(x.shape)}")
    return h, w


def interpolate_bilinear(x: np.ndarray, size) -> np.ndarray:
    """``F.interpolate(x[None], size, mode="bilinear", align_corners=False)[0]`` (no antialias).

    x ``(C, H, W)`` float (NumPy); size ``(h, w)``. Returns ``(C, h, w)`` in x's dtype."""
    h, w = check_interpolate_args(x, size)
    _, H, W = x.shape
    if (h, w) == (H, W):
        return x.copy()
    dt = x.dtype
    y0, y1, wy0, wy1 = linear_taps(H, h)
    x0, x1, wx0, wx1 = linear_taps(W, w)
    rows = x[:, y0, :] * wy0[None, :, None].astype(dt) + x[:, y1, :] * wy1[None, :, None].astype(dt)
    return (rows[:, :, x0] * wx0.astype(dt) + rows[:, :, x1] * wx1.astype(dt)).astype(dt, copy=False)
