"""The loss terms on the GPU: ``kernels/losses.cu``. Each forward is one kernel that writes a partial
sum per block (plus the backward's cache); CuPy adds the partials. Each backward is one elementwise
kernel. Mirrors :mod:`mrcnn_np.ops.losses`; the loss comes back as a 0-d CuPy array."""
from __future__ import annotations

import cupy
import numpy as np

from ...dispatch import register
from ._module import THREADS, blocks_for, function, launch, scalar

_SRC = "losses.cu"


def _reduce(name, dt, count, args):
    """Launch forward kernel ``name`` over ``count`` items; the sum of its per-block partials."""
    blocks = blocks_for(count)
    partial = cupy.zeros(blocks, dtype=dt)             # stays 0 when count == 0 (no launch)
    if count > 0:
        function(_SRC, name, dt)((blocks,), (THREADS,), tuple(args) + (partial,))
    return partial.sum()


def _scale(dloss, count):
    """dloss / max(count, 1) as a Python float (dloss may be a 0-d device array)."""
    return float(dloss) / max(count, 1)


@register("cupy", "softmax_cross_entropy_forward")
def softmax_cross_entropy_forward(logits, labels):
    n, k = logits.shape
    dt = logits.dtype
    labels = cupy.ascontiguousarray(labels.astype(cupy.int64, copy=False))
    log_p = cupy.empty_like(logits)
    total = _reduce("softmax_cross_entropy_forward", dt, n,
                    (logits, labels, np.int32(n), np.int32(k), log_p))
    return total / dt.type(max(n, 1)), (log_p, labels)


@register("cupy", "softmax_cross_entropy_backward")
def softmax_cross_entropy_backward(dloss, cache):
    log_p, labels = cache
    n, k = log_p.shape
    dlogits = cupy.empty_like(log_p)
    launch(function(_SRC, "softmax_cross_entropy_backward", log_p.dtype), log_p.size,
           (log_p, labels, np.int32(n), np.int32(k), scalar(log_p.dtype, _scale(dloss, n)),
            dlogits))
    return dlogits


@register("cupy", "smooth_l1_forward")
def smooth_l1_forward(pred, target, beta=1.0):
    dt = pred.dtype
    diff = cupy.empty_like(pred)
    total = _reduce("smooth_l1_forward", dt, pred.size,
                    (pred, target, np.int64(pred.size), scalar(dt, beta), diff))
    return total, (diff, beta)


@register("cupy", "smooth_l1_backward")
def smooth_l1_backward(dloss, cache):
    diff, beta = cache
    dt = diff.dtype
    dpred = cupy.empty_like(diff)
    launch(function(_SRC, "smooth_l1_backward", dt), diff.size,
           (diff, np.int64(diff.size), scalar(dt, beta), scalar(dt, float(dloss)), dpred))
    return dpred


@register("cupy", "sigmoid_bce_with_logits_forward")
def sigmoid_bce_with_logits_forward(logits, targets):
    dt = logits.dtype
    t = cupy.ascontiguousarray(targets.astype(dt, copy=False))
    total = _reduce("sigmoid_bce_forward", dt, logits.size, (logits, t, np.int64(logits.size)))
    return total / dt.type(max(logits.size, 1)), (logits, t)


@register("cupy", "sigmoid_bce_with_logits_backward")
def sigmoid_bce_with_logits_backward(dloss, cache):
    x, t = cache
    dlogits = cupy.empty_like(x)
    launch(function(_SRC, "sigmoid_bce_backward", x.dtype), x.size,
           (x, t, np.int64(x.size), scalar(x.dtype, _scale(dloss, x.size)), dlogits))
    return dlogits
