"""RoIAlign on the GPU: ``kernels/roi_align.cu`` (one thread per output number; the backward
scatters with atomicAdd). Mirrors :mod:`mrcnn_np.ops.roi_align`."""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ...ops._check import pair
from ._module import function, launch, scalar

_SRC = "roi_align.cu"


def _args(rois, shape, out_h, out_w, spatial_scale, sampling_ratio, aligned, dt):
    n, c, h, w = shape
    return (rois, np.int32(rois.shape[0]), np.int32(c), np.int32(h), np.int32(w), np.int32(out_h),
            np.int32(out_w), scalar(dt, spatial_scale), np.int32(sampling_ratio),
            np.int32(1 if aligned else 0))


@register("cupy", "roi_align_forward")
def roi_align_forward(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    out_h, out_w = pair("output_size", output_size)
    dt = features.dtype
    rois = cupy.ascontiguousarray(rois.astype(dt, copy=False))
    geometry = (out_h, out_w, spatial_scale, int(sampling_ratio), bool(aligned))
    out = cupy.zeros((rois.shape[0], features.shape[1], out_h, out_w), dtype=dt)
    launch(function(_SRC, "roi_align_forward", dt), out.size,
           (features,) + _args(rois, features.shape, *geometry, dt) + (out,))
    # the backward recomputes the samples from the RoIs: nothing else to keep
    return out, (rois, features.shape, geometry)


@register("cupy", "roi_align_backward")
def roi_align_backward(dout, cache):
    rois, shape, geometry = cache
    dt = rois.dtype
    dout = cupy.ascontiguousarray(dout.astype(dt, copy=False))
    dfeatures = cupy.zeros(shape, dtype=dt)           # zeroed: the kernel adds into it
    launch(function(_SRC, "roi_align_backward", dt), dout.size,
           (dout,) + _args(rois, shape, *geometry, dt) + (dfeatures,))
    return dfeatures
