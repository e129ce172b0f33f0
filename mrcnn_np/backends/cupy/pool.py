"""Max pooling on the GPU: ``kernels/pool.cu`` (the forward saves the argmax offset; the backward
gathers per input pixel, no atomics). Mirrors ``max_pool2d_*`` in :mod:`mrcnn_np.ops.pool`."""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ...ops.pool import check_max_pool2d_args
from ._module import function, launch

_SRC = "pool.cu"


def _geometry(shape, k, s, padding, out_hw):
    n, c, h, w = shape
    return tuple(np.int32(v) for v in (n, c, h, w, k[0], k[1], s[0], s[1], padding, out_hw[0],
                                       out_hw[1]))


@register("cupy", "max_pool2d_forward")
def max_pool2d_forward(x, kernel_size, stride, padding):
    k, s, padding, (out_h, out_w) = check_max_pool2d_args(x, kernel_size, stride, padding)
    n, c = x.shape[:2]
    out = cupy.empty((n, c, out_h, out_w), dtype=x.dtype)
    arg = cupy.empty((n, c, out_h, out_w), dtype=cupy.int32)   # k = u * kw + v of the max
    launch(function(_SRC, "max_pool2d_forward", x.dtype), out.size,
           (x,) + _geometry(x.shape, k, s, padding, (out_h, out_w)) + (out, arg))
    return out, (arg, x.shape, k, s, padding)


@register("cupy", "max_pool2d_backward")
def max_pool2d_backward(dout, cache):
    arg, x_shape, k, s, padding = cache
    dout = cupy.ascontiguousarray(dout)
    dx = cupy.empty(x_shape, dtype=dout.dtype)
    launch(function(_SRC, "max_pool2d_backward", dout.dtype), dx.size,
           (dout, arg) + _geometry(x_shape, k, s, padding, arg.shape[2:]) + (dx,))
    return dx
