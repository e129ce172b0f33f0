"""GroupNorm forward and backward, each fused into one Numba pass (reference: :mod:`mrcnn_np.ops.norm`).

Same equations as the reference's docstring::

    mu, var over each (image n, group g);  x_hat = (x - mu) / sqrt(var + eps);  y = gamma x_hat + beta
    dx = (g - mean_group(g) - x_hat mean_group(g x_hat)) / sqrt(var + eps),   g = dout * gamma
    dgamma = sum_{n,h,w} dout x_hat          dbeta = sum_{n,h,w} dout

How it is shaped: one parallel task per ``(n, g)``; a task reads and writes only its own group's
numbers, so there are no races. The data is read as NHWC rows ``(N, H*W, C)`` (the layout the conv
kernels produce; an NCHW view of an NHWC buffer costs no copy), where a group is a run of ``C/G``
contiguous channels in every row. The per-channel sums for ``dgamma``/``dbeta`` are written per
``(n, channel)`` by the task that owns that channel, then summed over ``n``.

The forward keeps ``x``, ``mu`` and ``1/std`` (not ``x_hat``): the backward recomputes ``x_hat`` on the
fly, which saves writing and re-reading a whole tensor. Sums over a group are accumulated in float64
(a group holds up to ~10^5 numbers; a float32 running sum would drift ~1e-4 from the reference's
pairwise sums); every stored result is in the input dtype.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from mrcnn_np.dispatch import register
from mrcnn_np.ops.norm import check_group_norm_args

from ._jit import kernel


@kernel
def _forward(x, gamma, beta, groups, eps, y, mu, inv_std):
    """x, y: (N, P, C) NHWC rows; mu, inv_std: (N, G) float64 out."""
    T = x.dtype.type
    n_n, p_n, c_n = x.shape
    cg = c_n // groups
    d = p_n * cg
    for task in prange(n_n * groups):
        n, g = task // groups, task % groups
        c0 = g * cg
        s = 0.0
        for p in range(p_n):
            for c in range(c0, c0 + cg):
                s += x[n, p, c]
        m = s / d
        v = 0.0
        for p in range(p_n):
            for c in range(c0, c0 + cg):
                t = x[n, p, c] - m
                v += t * t
        istd = 1.0 / np.sqrt(v / d + eps)
        mu[n, g], inv_std[n, g] = m, istd
        mt, it = T(m), T(istd)
        for p in range(p_n):
            for c in range(c0, c0 + cg):
                y[n, p, c] = (x[n, p, c] - mt) * it * gamma[c] + beta[c]


@kernel
def _backward(dout, x, gamma, mu, inv_std, groups, dx, dgamma_n, dbeta_n):
    """dout, x, dx: (N, P, C); dgamma_n, dbeta_n: (N, C) per-image partial sums (out)."""
    T = x.dtype.type
    n_n, p_n, c_n = x.shape
    cg = c_n // groups
    d = p_n * cg
    for task in prange(n_n * groups):
        n, g = task // groups, task % groups
        c0 = g * cg
        mt, it = T(mu[n, g]), T(inv_std[n, g])
        sg = 0.0                                    # sum of g = dout * gamma
        sgx = 0.0                                   # sum of g * x_hat
        dgam = np.zeros(cg)                         # this task's channels' sums, float64
        dbet = np.zeros(cg)
        for p in range(p_n):
            for c in range(c0, c0 + cg):
                xh = (x[n, p, c] - mt) * it
                gv = dout[n, p, c] * gamma[c]
                sg += gv
                sgx += gv * xh
                dgam[c - c0] += dout[n, p, c] * xh
                dbet[c - c0] += dout[n, p, c]
        for c in range(c0, c0 + cg):
            dgamma_n[n, c], dbeta_n[n, c] = dgam[c - c0], dbet[c - c0]
        mg, mgx = T(sg / d), T(sgx / d)
        for p in range(p_n):
            for c in range(c0, c0 + cg):
                xh = (x[n, p, c] - mt) * it
                dx[n, p, c] = (dout[n, p, c] * gamma[c] - mg - xh * mgx) * it


def _rows(a):
    """(N, C, H, W) -> (N, H*W, C) NHWC rows: free for an NCHW view of an NHWC buffer."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(n, h * w, c)


def _as_nchw(rows, shape):
    n, c, h, w = shape
    return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)


@register("numba", "group_norm_forward", any_layout=True)
def group_norm_forward(x, gamma, beta, num_groups, eps=1e-5):
    g = check_group_norm_args(x, gamma, beta, num_groups, eps)
    xr = _rows(x)
    gamma, beta = np.ascontiguousarray(gamma), np.ascontiguousarray(beta)
    y = np.empty_like(xr)
    mu = np.empty((x.shape[0], g))
    inv_std = np.empty((x.shape[0], g))
    _forward(xr, gamma, beta, g, float(eps), y, mu, inv_std)
    return _as_nchw(y, x.shape), (xr, gamma, mu, inv_std, g, x.shape)


@register("numba", "group_norm_backward", any_layout=True)
def group_norm_backward(dout, cache):
    xr, gamma, mu, inv_std, g, shape = cache
    dr = _rows(dout.astype(xr.dtype, copy=False))
    dx = np.empty_like(xr)
    dgamma_n = np.empty((shape[0], shape[1]), dtype=xr.dtype)
    dbeta_n = np.empty((shape[0], shape[1]), dtype=xr.dtype)
    _backward(dr, xr, gamma, mu, inv_std, g, dx, dgamma_n, dbeta_n)
    return _as_nchw(dx, shape), dgamma_n.sum(axis=0), dbeta_n.sum(axis=0)
