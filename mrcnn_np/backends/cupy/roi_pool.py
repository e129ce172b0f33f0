"""RoIPool on the GPU: ``kernels/roi_pool.cu`` (the forward saves each output's argmax, the backward
scatters to it with atomicAdd). Mirrors :mod:`mrcnn_np.ops.roi_pool`."""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ...ops._check import pair
from ._module import function, launch, scalar

_SRC = "roi_pool.cu"


@register("cupy", "roi_pool_forward")
def roi_pool_forward(features, rois, output_size, spatial_scale):
    out_h, out_w = pair("output_size", output_size)
    dt = features.dtype
    n, c, h, w = features.shape
    rois = cupy.ascontiguousarray(rois.astype(dt, copy=False))
    r = rois.shape[0]
    out = cupy.empty((r, c, out_h, out_w), dtype=dt)
    argmax = cupy.empty((r, c, out_h, out_w), dtype=cupy.int32)
    launch(function(_SRC, "roi_pool_forward", dt), out.size,
           (features, rois, np.int32(r), np.int32(c), np.int32(h), np.int32(w), np.int32(out_h),
            np.int32(out_w), scalar(dt, spatial_scale), out, argmax))
    return out, (rois, argmax, features.shape)


@register("cupy", "roi_pool_backward")
def roi_pool_backward(dout, cache):
    rois, argmax, (n, c, h, w) = cache
    dt = rois.dtype
    dout = cupy.ascontiguousarray(dout.astype(dt, copy=False))
    r, _, out_h, out_w = argmax.shape
    dfeatures = cupy.zeros((n, c, h, w), dtype=dt)    # zeroed: the kernel adds into it
    launch(function(_SRC, "roi_pool_backward", dt), dout.size,
           (dout, rois, argmax, np.int32(r), np.int32(c), np.int32(h), np.int32(w),
            np.int32(out_h), np.int32(out_w), dfeatures))
    return dfeatures
