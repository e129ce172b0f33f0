"""RoIAlign (notes, section 3): sample each RoI bin with bilinear interpolation, no rounding anywhere.

For RoI ``r`` = ``[b, x1, y1, x2, y2]`` in image coordinates, on a feature map of stride
``1 / spatial_scale`` (semantics of ``torchvision.ops.roi_align``, its C++ kernel)::

    o = 0.5 if aligned else 0                      # NOTE: the half-pixel offset. A feature cell j
    x_start = x1 * spatial_scale - o               #   covers [j, j + 1) and its value sits at j + 0.5,
    roi_w = x2 * spatial_scale - o - x_start       #   so continuous coordinate x maps to index x - 0.5
    roi_w = max(roi_w, 1) if not aligned           # (legacy: no offset, RoIs at least one cell wide)
    bin_w = roi_w / out_w
    g_w = sampling_ratio if sampling_ratio > 0 else ceil(roi_w / out_w)    # samples per bin, per axis
    sample (ix) of bin (q):  x = x_start + q * bin_w + (ix + 0.5) * bin_w / g_w      (same for y)

Each sample is the bilinear interpolation (notes: f(x, y) = sum_ij w_ij f(x_i, y_j))::

    x <- max(x, 0);  x_lo = floor(x);  x_hi = x_lo + 1
    if x_lo >= W - 1:  x_lo = x_hi = W - 1,  x = x_lo      (clamp at the far border)
    l_x = x - x_lo,  h_x = 1 - l_x                          (same for y)
    f(x, y) = h_y h_x F[y_lo, x_lo] + h_y l_x F[y_lo, x_hi] + l_y h_x F[y_hi, x_lo] + l_y l_x F[y_hi, x_hi]

A sample with ``y < -1`` or ``y > H`` (or the same in x) lies beyond the map and contributes zero.
The bin's value is the mean over its ``g_h * g_w`` samples.

Everything above factorises into a y part and an x part, so the code computes, per axis, the two
corner indices and the two weights of every sample (``1/g`` folded in), then gathers the corners'
channel vectors from an NHWC copy of the features (each gather reads C contiguous numbers) and sums
them with the outer product of the two axes' weights. RoIAlign is linear in the features, so the
backward scatters ``dout`` back to the very same corners with the very same weights.
RoIs are processed in groups that share ``(g_h, g_w)`` (it varies per RoI when ``sampling_ratio <= 0``)
and in chunks that bound the gathered block's memory.
"""
from __future__ import annotations


from ..backend import get_array_module
from ._check import check_float, check_ndim, pair, values_on_host

__all__ = ["roi_align_forward", "roi_align_backward", "check_rois", "check_roi_align_args"]

_CHUNK_ELEMENTS = 1 << 22      # gathered numbers per chunk (16 MiB in float32)


def check_rois(rois, features, name="rois"):
    """Validate ``rois`` (R, 5) ``[batch_index, x1, y1, x2, y2]`` against ``features`` (N, C, H, W);
    returns the batch indices as int64 (R,)."""
    xp = get_array_module(rois)
    check_ndim(name, rois, 2, "(R, 5) [batch_index, x1, y1, x2, y2]")
    if rois.shape[1] != 5:
        raise ValueError(f"{name}: expected shape (R, 5) [batch_index, x1, y1, x2, y2], "
                         f"got {tuple(rois.shape)}")
    bidx = rois[:, 0]
    bi = bidx.astype(xp.int64)
    if rois.shape[0] and values_on_host(rois):
        if bool((bi != bidx).any()):
            raise ValueError(f"{name}: batch indices in column 0 must be whole numbers")
        lo, hi = int(bi.min()), int(bi.max())
        if lo < 0 or hi >= features.shape[0]:
            raise ValueError(f"{name}: batch index out of range: got values in [{lo}, {hi}], "
                             f"expected [0, {features.shape[0] - 1}] for features of shape "
                             f"{tuple(features.shape)}")
        if not bool(xp.isfinite(rois).all()):
            raise ValueError(f"{name}: contains NaN or inf")
    return bi


def check_roi_align_args(features, rois, output_size, spatial_scale, sampling_ratio, aligned=True):
    """The argument check of :func:`roi_align_forward` (kernels get it too)."""
    _check_args(features, rois, output_size, spatial_scale, sampling_ratio)


def _check_args(features, rois, output_size, spatial_scale, sampling_ratio):
    check_ndim("features", features, 4, "(N, C, H, W)")
    check_float("features", features)
    bidx = check_rois(rois, features)
    out_h, out_w = pair("output_size", output_size)
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale: expected a number > 0, got {spatial_scale!r}")
    if isinstance(sampling_ratio, bool) or not hasattr(sampling_ratio, "__index__"):
        raise ValueError(f"sampling_ratio: expected an int (<= 0 for adaptive), got {sampling_ratio!r}")
    return bidx, out_h, out_w


def _axis_samples(start, bin_size, grid, pooled, size):
    """Bilinear corners of every sample along one axis.

    start, bin_size: (R,); grid: samples per bin g; pooled: bins; size: the map's extent.
    Returns ``idx`` (R, pooled, 2g) int64 corner indices and ``w`` (R, pooled, 2g) their weights,
    with the in-range test and the ``1/g`` of the bin mean folded into ``w``.
    """
    xp = get_array_module(start)
    dt = start.dtype
    p = xp.arange(pooled, dtype=dt)[None, :, None]
    i = xp.arange(grid, dtype=dt)[None, None, :]
    coord = start[:, None, None] + p * bin_size[:, None, None] + (i + 0.5) * bin_size[:, None, None] / grid
    inside = (coord >= -1.0) & (coord <= size)                 # beyond [-1, size]: contributes 0
    c = xp.maximum(coord, 0)
    lo = xp.floor(c).astype(xp.int64)
    at_edge = lo >= size - 1                                    # clamp at the far border
    lo = xp.where(at_edge, size - 1, lo)
    hi = xp.where(at_edge, size - 1, lo + 1)
    frac = xp.where(at_edge, 0, c - lo).astype(dt)              # l = x - x_lo
    scale = inside.astype(dt) / grid
    w = xp.stack([(1 - frac) * scale, frac * scale], axis=-1)   # (R, pooled, g, 2): h and l
    idx = xp.stack([lo, hi], axis=-1)
    r = start.shape[0]
    return idx.reshape(r, pooled, 2 * grid), w.reshape(r, pooled, 2 * grid)


def _plan(features, rois, bidx, out_h, out_w, spatial_scale, sampling_ratio, aligned):
    """Per group of RoIs sharing a sampling grid: the flat NHWC row of every corner, shape
    (R_g, out_h, out_w, S) with S = 4 g_h g_w, its weight (same shape), and the RoIs' positions."""
    xp = get_array_module(features)
    _, _, h, w = features.shape
    dt = features.dtype
    boxes = rois[:, 1:].astype(dt) * dt.type(spatial_scale)
    offset = dt.type(0.5) if aligned else dt.type(0)
    x0, y0 = boxes[:, 0] - offset, boxes[:, 1] - offset
    roi_w, roi_h = boxes[:, 2] - offset - x0, boxes[:, 3] - offset - y0
    if not aligned:                                             # legacy: force RoIs to >= 1 cell
        roi_w, roi_h = xp.maximum(roi_w, 1), xp.maximum(roi_h, 1)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    if sampling_ratio > 0:
        gh = xp.full(rois.shape[0], sampling_ratio, dtype=xp.int64)
        gw = gh
    else:
        gh = xp.ceil(roi_h / out_h).astype(xp.int64)
        gw = xp.ceil(roi_w / out_w).astype(xp.int64)
    groups = []
    keys = gh * (1 << 20) + gw
    for key in (xp.unique(keys).tolist() if rois.shape[0] else []):
        sel = xp.nonzero(keys == key)[0]
        g_h, g_w = key >> 20, key & ((1 << 20) - 1)
        if g_h == 0 or g_w == 0:                                # empty RoI (aligned, zero size): output 0
            continue
        iy, wy = _axis_samples(y0[sel], bin_h[sel], g_h, out_h, h)        # (R_g, out_h, 2g_h)
        ix, wx = _axis_samples(x0[sel], bin_w[sel], g_w, out_w, w)        # (R_g, out_w, 2g_w)
        # flat row of the NHWC map: (b * H + y) * W + x, laid out (R_g, out_h, out_w, 2g_h, 2g_w)
        rows = ((bidx[sel][:, None, None, None, None] * h + iy[:, :, None, :, None]) * w
                + ix[:, None, :, None, :])
        wts = wy[:, :, None, :, None] * wx[:, None, :, None, :]
        n_s = 4 * g_h * g_w
        groups.append((sel, rows.reshape(len(sel), out_h, out_w, n_s),
                       wts.reshape(len(sel), out_h, out_w, n_s)))
    return groups


def _chunks(n_rois, per_roi):
    step = max(1, _CHUNK_ELEMENTS // max(per_roi, 1))
    for s in range(0, n_rois, step):
        yield slice(s, min(s + step, n_rois))


def roi_align_forward(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """features: (N, C, H, W); rois: (R, 5) ``[batch_index, x1, y1, x2, y2]`` in image coordinates;
    ``output_size``: int or (out_h, out_w); ``spatial_scale``: 1 / the map's stride;
    ``sampling_ratio``: samples per bin per axis (<= 0: adaptive ``ceil(roi / out)``);
    ``aligned``: use the half-pixel offset.

    Returns ``(out (R, C, out_h, out_w), cache)``.
    """
    bidx, out_h, out_w = _check_args(features, rois, output_size, spatial_scale, sampling_ratio)
    xp = get_array_module(features)
    n, c, h, w = features.shape
    r = rois.shape[0]
    fmap = xp.ascontiguousarray(features.transpose(0, 2, 3, 1)).reshape(n * h * w, c)  # NHWC rows
    out = xp.zeros((r, out_h, out_w, c), dtype=features.dtype)
    groups = _plan(features, rois, bidx, out_h, out_w, spatial_scale, sampling_ratio, aligned)
    for sel, rows, wts in groups:
        for ch in _chunks(len(sel), out_h * out_w * rows.shape[-1] * c):
            corners = fmap[rows[ch]]                                    # (R_c, oh, ow, S, C) gather
            out[sel[ch]] = (wts[ch][:, :, :, None, :] @ corners)[:, :, :, 0, :]  # sum_s w_s f_s
    cache = (groups, features.shape)
    return out.transpose(0, 3, 1, 2), cache                             # (R, C, out_h, out_w) view


def roi_align_backward(dout, cache):
    """dout: (R, C, out_h, out_w).  Returns ``dfeatures`` (N, C, H, W): each output's gradient goes
    back to the four corners of each of its samples, with the same bilinear weights."""
    groups, (n, c, h, w) = cache
    xp = get_array_module(dout)
    d = dout.transpose(0, 2, 3, 1)                                      # (R, oh, ow, C)
    dfmap = xp.zeros((n * h * w, c), dtype=dout.dtype)
    for sel, rows, wts in groups:
        oh, ow, n_s = rows.shape[1:]
        for ch in _chunks(len(sel), oh * ow * n_s * c):
            contrib = wts[ch][..., None] * d[sel[ch]][:, :, :, None, :]   # (R_c, oh, ow, S, C)
            _scatter_add_rows(dfmap, rows[ch].ravel(), contrib.reshape(-1, c))
    return dfmap.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _scatter_add_rows(target, rows, values):
    """``target[rows[k]] += values[k]`` for every k, duplicates included (several samples share a
    corner). Sorting the rows once and summing each run with ``add.reduceat`` keeps the inner loop
    over C contiguous numbers, much faster than ``np.add.at`` on 2-D data."""
    xp = get_array_module(values)
    if rows.size == 0:
        return
    order = xp.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = xp.concatenate([xp.zeros(1, dtype=xp.int64),
                             xp.nonzero(sorted_rows[1:] != sorted_rows[:-1])[0] + 1])
    target[sorted_rows[starts]] += xp.add.reduceat(values[order], starts, axis=0)
