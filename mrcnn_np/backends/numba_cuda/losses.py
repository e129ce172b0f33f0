"""The three loss terms as fused ``@cuda.jit`` kernels.

Reference: :mod:`mrcnn_np.ops.losses` (its docstring has the equations). "Fused": each forward kernel
does all the elementwise math of its loss in one pass (softmax cross-entropy: max, log-sum-exp,
log-softmax and the picked term, per row, in one thread) and writes one number per row or element;
the final sum is the array module's reduction (``.sum()``: CuPy's tree reduction on a GPU). Each
backward is one elementwise kernel. ``dloss`` may be a Python float or a 0-d array on the device: it
is handed to the kernels as a 1-element array, so it is never copied to the host.

* softmax CE:  L = -1/N sum_i log_softmax(z_i)[y_i];   dz = dloss (softmax(z) - onehot(y)) / N
* smooth L1:   s(d) = 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta (beta = 0: |d|), summed;
               ds = dloss (d / beta if |d| < beta else sign(d))
* sigmoid BCE: l = max(x, 0) - x t + log1p(exp(-|x|)), mean;   dl = dloss (sigmoid(x) - t) / count
  (``exp`` only ever sees -|x| <= 0: finite and exact for logits of +-1000)
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ...dispatch import register
from ._launch import array_module, launch

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
           "smooth_l1_forward", "smooth_l1_backward",
           "sigmoid_bce_with_logits_forward", "sigmoid_bce_with_logits_backward"]


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"
    ZERO, HALF, ONE = T(0), T(0.5), T(1)

    @cuda.jit
    def softmax_ce_forward(logits, labels, log_p, row_loss):
        """One thread per row i: log_p[i] = z_i - max - log sum exp(z_i - max); row_loss = -log_p[i, y_i]."""
        i = cuda.grid(1)
        if i >= logits.shape[0]:
            return
        k = logits.shape[1]
        m = logits[i, 0]
        for j in range(1, k):
            m = max(m, logits[i, j])
        s = ZERO
        for j in range(k):
            s += math.exp(logits[i, j] - m)      # shifted: never overflows
        log_z = math.log(s)
        for j in range(k):
            log_p[i, j] = (logits[i, j] - m) - log_z
        row_loss[i] = -log_p[i, labels[i]]

    @cuda.jit
    def softmax_ce_backward(log_p, labels, scale, dz):
        """dz[i, j] = scale * (exp(log_p[i, j]) - [j == y_i]); scale = dloss / N (a 1-element array)."""
        i = cuda.grid(1)
        if i >= dz.size:
            return
        k = dz.shape[1]
        r, j = i // k, i % k
        p = math.exp(log_p[r, j])
        if j == labels[r]:
            p -= ONE
        dz[r, j] = p * scale[0]

    @cuda.jit
    def smooth_l1_forward(pred, target, beta, d, loss):
        """Elementwise over the flattened arrays: d = pred - target and s(d)."""
        i = cuda.grid(1)
        if i >= pred.size:
            return
        di = pred[i] - target[i]
        d[i] = di
        ad = abs(di)
        if beta == ZERO:
            loss[i] = ad
        elif ad < beta:
            loss[i] = HALF * di * di / beta
        else:
            loss[i] = ad - HALF * beta

    @cuda.jit
    def smooth_l1_backward(d, beta, scale, dpred):
        i = cuda.grid(1)
        if i >= d.size:
            return
        di = d[i]
        sign = ONE if di > ZERO else (-ONE if di < ZERO else ZERO)
        if beta != ZERO and abs(di) < beta:
            dpred[i] = scale[0] * (di / beta)
        else:
            dpred[i] = scale[0] * sign

    @cuda.jit
    def bce_forward(x, t, loss):
        i = cuda.grid(1)
        if i >= x.size:
            return
        xi = x[i]
        loss[i] = max(xi, ZERO) - xi * t[i] + math.log1p(math.exp(-abs(xi)))

    @cuda.jit
    def bce_backward(x, t, scale, dx):
        i = cuda.grid(1)
        if i >= x.size:
            return
        xi = x[i]
        e = math.exp(-abs(xi))                   # never overflows
        sig = ONE / (ONE + e) if xi >= ZERO else e / (ONE + e)
        dx[i] = (sig - t[i]) * scale[0]

    return SimpleNamespace(softmax_ce_forward=softmax_ce_forward,
                           softmax_ce_backward=softmax_ce_backward,
                           smooth_l1_forward=smooth_l1_forward, smooth_l1_backward=smooth_l1_backward,
                           bce_forward=bce_forward, bce_backward=bce_backward)


def _scale(dloss, count, dtype):
    """``dloss / count`` as a 1-element device array of ``dtype`` (``dloss``: a float or a 0-d array)."""
    xp = array_module()
    return (xp.asarray(dloss, dtype=dtype) / dtype.type(count)).reshape(1)


@register("numba-cuda", "softmax_cross_entropy_forward")
def softmax_cross_entropy_forward(logits, labels):
    """Same arguments and result as :func:`mrcnn_np.ops.losses.softmax_cross_entropy_forward`."""
    xp = array_module()
    n = logits.shape[0]
    labels = labels.astype(xp.int64, copy=False)
    log_p = xp.empty_like(logits)
    row_loss = xp.empty(n, dtype=logits.dtype)
    launch(_kernels(logits.dtype).softmax_ce_forward, n, logits, labels, log_p, row_loss)
    loss = row_loss.sum() / logits.dtype.type(max(n, 1))     # an empty mean is 0
    return loss, (log_p, labels)


@register("numba-cuda", "softmax_cross_entropy_backward")
def softmax_cross_entropy_backward(dloss, cache):
    """``dlogits`` (N, K) = dloss * (softmax - onehot) / N."""
    xp = array_module()
    log_p, labels = cache
    dz = xp.empty_like(log_p)
    launch(_kernels(log_p.dtype).softmax_ce_backward, dz.size, log_p, labels,
           _scale(dloss, max(log_p.shape[0], 1), log_p.dtype), dz)
    return dz


@register("numba-cuda", "smooth_l1_forward")
def smooth_l1_forward(pred, target, beta=1.0):
    """Same arguments and result as :func:`mrcnn_np.ops.losses.smooth_l1_forward`."""
    xp = array_module()
    d = xp.empty_like(pred)
    loss = xp.empty_like(pred)
    beta_t = pred.dtype.type(beta)
    launch(_kernels(pred.dtype).smooth_l1_forward, pred.size, pred.reshape(-1), target.reshape(-1), beta_t,
           d.reshape(-1), loss.reshape(-1))
    return loss.sum(), (d, beta_t)


@register("numba-cuda", "smooth_l1_backward")
def smooth_l1_backward(dloss, cache):
    """``dpred`` with the shape of ``pred``."""
    xp = array_module()
    d, beta_t = cache
    dpred = xp.empty_like(d)
    launch(_kernels(d.dtype).smooth_l1_backward, d.size, d.reshape(-1), beta_t, _scale(dloss, 1, d.dtype),
           dpred.reshape(-1))
    return dpred


@register("numba-cuda", "sigmoid_bce_with_logits_forward")
def sigmoid_bce_with_logits_forward(logits, targets):
    """Same arguments and result as :func:`mrcnn_np.ops.losses.sigmoid_bce_with_logits_forward`."""
    xp = array_module()
    t = xp.ascontiguousarray(targets.astype(logits.dtype, copy=False))   # bool/int targets too
    loss = xp.empty_like(logits)
    launch(_kernels(logits.dtype).bce_forward, logits.size, logits.reshape(-1), t.reshape(-1),
           loss.reshape(-1))
    return loss.sum() / logits.dtype.type(max(logits.size, 1)), (logits, t)


@register("numba-cuda", "sigmoid_bce_with_logits_backward")
def sigmoid_bce_with_logits_backward(dloss, cache):
    """``dlogits`` = dloss * (sigmoid(x) - t) / count, with the shape of ``logits``."""
    xp = array_module()
    x, t = cache
    dx = xp.empty_like(x)
    launch(_kernels(x.dtype).bce_backward, x.size, x.reshape(-1), t.reshape(-1),
           _scale(dloss, max(x.size, 1), x.dtype), dx.reshape(-1))
    return dx
