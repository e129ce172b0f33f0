"""RoIPool (Fast R-CNN): the quantised ancestor of RoIAlign, kept to show what RoIAlign fixes.

Semantics of ``torchvision.ops.roi_pool``. For RoI ``[b, x1, y1, x2, y2]``::

    x_start = round(x1 * spatial_scale),  x_end = round(x2 * spatial_scale)      # 1st quantisation
    roi_w = max(x_end - x_start + 1, 1),  bin_w = roi_w / out_w
    bin q covers columns [floor(q * bin_w), ceil((q + 1) * bin_w)) + x_start      # 2nd quantisation
    clipped to [0, W];  y likewise;  output = max over the bin (0 for an empty bin)

``round`` is half away from zero (C's ``round``). The backward sends each output's gradient to the
cell that held the max (the first such cell in row-major order).
"""
from __future__ import annotations

from ..backend import get_array_module
from .roi_align import _check_args, _scatter_add_rows

__all__ = ["roi_pool_forward", "roi_pool_backward", "check_roi_pool_args"]


def check_roi_pool_args(features, rois, output_size, spatial_scale):
    """The argument check of :func:`roi_pool_forward` (kernels get it too)."""
    _check_args(features, rois, output_size, spatial_scale, 0)


def _round_half_away(v):
    xp = get_array_module(v)
    return xp.sign(v) * xp.floor(xp.abs(v) + 0.5)


def _bin_edges(start, end, pooled, size):
    """(R,) quantised start/end -> bin bounds (R, pooled) [lo, hi), clipped to [0, size]."""
    xp = get_array_module(start)
    extent = xp.maximum(end - start + 1, 1)
    bin_size = extent / pooled                                  # (R,)
    p = xp.arange(pooled)[None, :]
    lo = xp.floor(p * bin_size[:, None]).astype(xp.int64) + start[:, None]
    hi = xp.ceil((p + 1) * bin_size[:, None]).astype(xp.int64) + start[:, None]
    return xp.clip(lo, 0, size), xp.clip(hi, 0, size)


def roi_pool_forward(features, rois, output_size, spatial_scale):
    """features: (N, C, H, W); rois: (R, 5) ``[batch_index, x1, y1, x2, y2]``; ``output_size``: int or
    (out_h, out_w); ``spatial_scale``: 1 / stride.  Returns ``(out (R, C, out_h, out_w), cache)``."""
    bidx, out_h, out_w = _check_args(features, rois, output_size, spatial_scale, 0)
    xp = get_array_module(features)
    n, c, h, w = features.shape
    r = rois.shape[0]
    dt = features.dtype
    q = _round_half_away(rois[:, 1:].astype(dt) * dt.type(spatial_scale)).astype(xp.int64)
    ylo, yhi = _bin_edges(q[:, 1], q[:, 3], out_h, h)           # (R, out_h)
    xlo, xhi = _bin_edges(q[:, 0], q[:, 2], out_w, w)           # (R, out_w)
    # Every bin is padded to the largest bin size; cells beyond a bin's own end are masked to -inf.
    # (no max(initial=...): CuPy's max has no such argument, and the reference runs on CuPy arrays too)
    kh = max(int((yhi - ylo).max()) if r else 0, 1)
    kw = max(int((xhi - xlo).max()) if r else 0, 1)
    ys = ylo[:, :, None] + xp.arange(kh)                        # (R, out_h, kh)
    xs = xlo[:, :, None] + xp.arange(kw)                        # (R, out_w, kw)
    valid = ((ys < yhi[:, :, None])[:, :, None, :, None]
             & (xs < xhi[:, :, None])[:, None, :, None, :])    # (R, out_h, out_w, kh, kw)
    rows = ((bidx[:, None, None, None, None] * h + xp.minimum(ys, h - 1)[:, :, None, :, None]) * w
            + xp.minimum(xs, w - 1)[:, None, :, None, :])      # flat NHWC row of every cell
    rows = rows.reshape(r, out_h, out_w, kh * kw)
    valid = valid.reshape(r, out_h, out_w, kh * kw)
    fmap = xp.ascontiguousarray(features.transpose(0, 2, 3, 1)).reshape(n * h * w, c)
    cells = xp.where(valid[..., None], fmap[rows], -xp.inf)     # (R, oh, ow, kh*kw, C)
    arg = cells.argmax(axis=3)                                  # first max in row-major order
    out = xp.take_along_axis(cells, arg[:, :, :, None, :], axis=3)[:, :, :, 0, :]
    empty = ~valid.any(axis=3)                                  # (R, oh, ow)
    out = xp.where(empty[..., None], 0, out).astype(dt)
    src = xp.take_along_axis(rows[..., None], arg[:, :, :, None, :], axis=3)[:, :, :, 0, :]
    src = xp.where(empty[..., None], -1, src)                   # (R, oh, ow, C) row of each max
    return out.transpose(0, 3, 1, 2), (src, features.shape)


def roi_pool_backward(dout, cache):
    """dout: (R, C, out_h, out_w).  Returns ``dfeatures`` (N, C, H, W)."""
    src, (n, c, h, w) = cache
    xp = get_array_module(dout)
    d = dout.transpose(0, 2, 3, 1)                              # (R, oh, ow, C)
    dflat = xp.zeros(n * h * w * c, dtype=dout.dtype)
    keep = src >= 0
    channel = xp.broadcast_to(xp.arange(c), src.shape)
    # each (row, channel) pair is one number of the NHWC map; its gradient is a scalar scatter
    _scatter_add_rows(dflat[:, None], (src * c + channel)[keep], d[keep][:, None])
    return dflat.reshape(n, h, w, c).transpose(0, 3, 1, 2)
