"""GroupNorm on the GPU: ``kernels/norm.cu`` (one block per (image, group) with shared-memory
reductions; dgamma/dbeta one block per channel). Mirrors :mod:`mrcnn_np.ops.norm`."""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ...ops.norm import check_group_norm_args
from ._module import MAX_BLOCKS, THREADS, function, scalar

_SRC = "norm.cu"


@register("cupy", "group_norm_forward")
def group_norm_forward(x, gamma, beta, num_groups, eps=1e-5):
    g = check_group_norm_args(x, gamma, beta, num_groups, eps)
    n, c, h, w = x.shape
    dt = x.dtype
    y = cupy.empty_like(x)
    x_hat = cupy.empty_like(x)
    inv_std = cupy.empty((n, g), dtype=dt)
    if x.size:
        function(_SRC, "group_norm_forward", dt)(
            (min(n * g, MAX_BLOCKS),), (THREADS,),
            (x, gamma, beta, np.int32(n), np.int32(c), np.int32(g), np.int32(h * w),
             scalar(dt, eps), y, x_hat, inv_std))
    return y, (x_hat, inv_std, gamma, g)


@register("cupy", "group_norm_backward")
def group_norm_backward(dout, cache):
    x_hat, inv_std, gamma, g = cache
    n, c, h, w = x_hat.shape
    dt = x_hat.dtype
    dout = cupy.ascontiguousarray(dout.astype(dt, copy=False))
    dx = cupy.empty_like(x_hat)
    dgamma = cupy.zeros(c, dtype=dt)
    dbeta = cupy.zeros(c, dtype=dt)
    if x_hat.size:
        function(_SRC, "group_norm_backward_params", dt)(
            (min(c, MAX_BLOCKS),), (THREADS,),
            (dout, x_hat, np.int32(n), np.int32(c), np.int32(h * w), dgamma, dbeta))
        function(_SRC, "group_norm_backward_input", dt)(
            (min(n * g, MAX_BLOCKS),), (THREADS,),
            (dout, x_hat, gamma, inv_std, np.int32(n), np.int32(c), np.int32(g), np.int32(h * w),
             dx))
    return dx, dgamma, dbeta
