"""The three loss terms as fused Numba kernels (reference: :mod:`mrcnn_np.ops.losses`)::

    softmax CE (mean over rows):  L = -1/N sum_i log softmax(z_i)[y_i],   dL/dz = (softmax - onehot)/N
    smooth L1 (sum):              s(d) = 0.5 d^2/beta if |d| < beta else |d| - 0.5 beta,
                                  ds/dd = d/beta if |d| < beta else sign(d)
    sigmoid BCE (mean):           l = max(x, 0) - x t + log(1 + exp(-|x|)),   dl/dx = (sigmoid(x) - t)/count

How they are shaped: one pass over the data computes the loss *and* the per-element derivative
(``softmax - onehot``, ``ds/dd``, ``sigmoid - t``), which the forward keeps, so the backward is one
multiplication by ``dloss / N`` (the reference's backward recomputes exp/sigmoid). The stable forms
are the reference's: log-sum-exp after subtracting the row max, and BCE that never exponentiates a
positive number (exact for logits of +-1000). These are small (at most ~10^5 numbers per step), so
the kernels are serial (``_jit.serial``): a parallel region's fork/join would cost more than the
work. Sums are taken per chunk of 4,096 elements in float64 and the loss returned in the input dtype.
"""
from __future__ import annotations

import numpy as np
from mrcnn_np.dispatch import register
from mrcnn_np.ops.losses import (check_sigmoid_bce_with_logits_args, check_smooth_l1_args,
                                 check_softmax_cross_entropy_args)

from ._jit import serial

_CHUNK = 4096           # elements per task in the elementwise losses


@serial
def _softmax_ce(z, labels, dz):
    """z (N, K), labels (N,) int64 -> per-row losses (N,) float64; dz = softmax - onehot."""
    n, k = z.shape
    row_loss = np.empty(n)
    for i in range(n):
        m = z[i, 0]
        for j in range(1, k):
            m = max(m, z[i, j])
        s = z.dtype.type(0)
        for j in range(k):
            dz[i, j] = np.exp(z[i, j] - m)
            s += dz[i, j]
        log_z = np.log(s)
        for j in range(k):
            dz[i, j] = np.exp((z[i, j] - m) - log_z)            # exp(log_p), as the reference
        dz[i, labels[i]] -= 1
        row_loss[i] = -((z[i, labels[i]] - m) - log_z)
    return row_loss


@serial
def _smooth_l1(pred, target, beta, ds):
    """Flat pred, target; returns per-chunk loss sums (float64); ds = derivative of s at each d."""
    T = pred.dtype.type
    n = pred.shape[0]
    chunks = (n + _CHUNK - 1) // _CHUNK
    part = np.zeros(chunks)
    b = T(beta)
    for ch in range(chunks):
        acc = 0.0
        for e in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            d = pred[e] - target[e]
            ad = abs(d)
            if ad < b:
                acc += T(0.5) * d * d / b
                ds[e] = d / b
            else:
                acc += ad - T(0.5) * b
                ds[e] = np.sign(d)
        part[ch] = acc
    return part


@serial
def _sigmoid_bce(x, t, g):
    """Flat logits x, targets t; returns per-chunk loss sums (float64); g = sigmoid(x) - t."""
    T = x.dtype.type
    n = x.shape[0]
    chunks = (n + _CHUNK - 1) // _CHUNK
    part = np.zeros(chunks)
    for ch in range(chunks):
        acc = 0.0
        for e in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            xe = x[e]
            ex = np.exp(-abs(xe))                                  # never overflows
            acc += max(xe, T(0)) - xe * t[e] + np.log1p(ex)
            sig = T(1) / (T(1) + ex) if xe >= 0 else ex / (T(1) + ex)
            g[e] = sig - t[e]
        part[ch] = acc
    return part


@register("numba", "softmax_cross_entropy_forward")
def softmax_cross_entropy_forward(logits, labels):
    check_softmax_cross_entropy_args(logits, labels)
    n = logits.shape[0]
    dz = np.empty_like(logits)
    rows = _softmax_ce(logits, np.ascontiguousarray(labels, dtype=np.int64), dz)
    return logits.dtype.type(rows.sum() / max(n, 1)), dz


@register("numba", "softmax_cross_entropy_backward")
def softmax_cross_entropy_backward(dloss, cache):
    dz = cache
    return dz * (dloss / max(dz.shape[0], 1))


@register("numba", "smooth_l1_forward")
def smooth_l1_forward(pred, target, beta=1.0):
    check_smooth_l1_args(pred, target, beta)
    p = pred.reshape(-1)
    ds = np.empty_like(p)
    if beta == 0:                                                  # plain L1
        d = p - target.reshape(-1).astype(p.dtype, copy=False)
        return np.abs(d).sum(), np.sign(d).reshape(pred.shape)
    part = _smooth_l1(p, np.ascontiguousarray(target.reshape(-1), dtype=p.dtype), float(beta), ds)
    return pred.dtype.type(part.sum()), ds.reshape(pred.shape)


@register("numba", "smooth_l1_backward")
def smooth_l1_backward(dloss, cache):
    return dloss * cache


@register("numba", "sigmoid_bce_with_logits_forward")
def sigmoid_bce_with_logits_forward(logits, targets):
    check_sigmoid_bce_with_logits_args(logits, targets)
    x = logits.reshape(-1)
    g = np.empty_like(x)
    part = _sigmoid_bce(x, np.ascontiguousarray(targets.reshape(-1), dtype=x.dtype), g)
    return logits.dtype.type(part.sum() / max(x.size, 1)), g.reshape(logits.shape)


@register("numba", "sigmoid_bce_with_logits_backward")
def sigmoid_bce_with_logits_backward(dloss, cache):
    g = cache
    return g * (dloss / max(g.size, 1))
