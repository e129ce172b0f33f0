"""GroupNorm forward and backward, each fused into one Numba pass (reference: :mod:`mrcnn_np.ops.norm`).

Same equations as the reference's docstring::

    mu, var over each (image n, group g);  x_hat = (x - mu) / sqrt(var + eps);  y = gamma x_hat + beta
    dx = (g - mean_group(g) - x_hat mean_group(g x_hat)) / sqrt(var + eps),   g = dout * gamma
    dgamma = sum_{n,h,w} dout x_hat          dbeta = sum_{n,h,w} dout

How it is shaped: one parallel task per image ``n``; a task reads and writes only its own image's
numbers, so there are no races. The data is read as NHWC rows ``(N, H*W, C)`` (the layout the conv
kernels produce; an NCHW view of an NHWC buffer costs no copy). Every pass runs over a row of C
contiguous channels with one accumulator *per channel* (``acc[c] += x[p, c]``): independent chains,
which the compiler vectorises without fastmath, where a single running sum per group would be one
long dependency chain (measured 4x slower). Group statistics are then sums over the group's
channels, spread back to per-channel arrays (``mc``, ``ic``) so the elementwise passes vectorise
too. ``dgamma``/``dbeta`` are written per ``(n, channel)``, then summed over ``n``.

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

from ._jit import kernel, serial


@serial
def _channel_stats(xn, groups, eps, mc, ic, mu, inv_std):
    """One image's rows xn (P, C): per-group mean and 1/std (float64, into mu, inv_std (G,)) and
    the same spread per channel in the data's dtype (mc, ic (C,)). Serial: it runs inside the
    forward's parallel loop (a parallel function called there would be a nested launch)."""
    T = xn.dtype.type
    p_n, c_n = xn.shape
    cg = c_n // groups
    d = p_n * cg
    acc = np.zeros(c_n)
    for p in range(p_n):
        for c in range(c_n):
            acc[c] += xn[p, c]
    for g in range(groups):
        mu[g] = acc[g * cg : (g + 1) * cg].sum() / d
        for c in range(g * cg, (g + 1) * cg):
            mc[c] = T(mu[g])
    acc[:] = 0
    for p in range(p_n):
        for c in range(c_n):
            t = xn[p, c] - mc[c]
            acc[c] += t * t
    for g in range(groups):
        inv_std[g] = 1.0 / np.sqrt(acc[g * cg : (g + 1) * cg].sum() / d + eps)
        for c in range(g * cg, (g + 1) * cg):
            ic[c] = T(inv_std[g])


@kernel
def _forward(x, gamma, beta, groups, eps, y, mu, inv_std):
    """x, y: (N, P, C) NHWC rows; mu, inv_std: (N, G) float64 out."""
    n_n, p_n, c_n = x.shape
    for n in prange(n_n):
        mc = np.empty(c_n, dtype=x.dtype)
        ic = np.empty(c_n, dtype=x.dtype)
        _channel_stats(x[n], groups, eps, mc, ic, mu[n], inv_std[n])
        for p in range(p_n):
            for c in range(c_n):
                y[n, p, c] = (x[n, p, c] - mc[c]) * ic[c] * gamma[c] + beta[c]


@kernel
def _backward(dout, x, gamma, mu, inv_std, groups, dx, dgamma_n, dbeta_n):
    """dout, x, dx: (N, P, C); dgamma_n, dbeta_n: (N, C) per-image sums (out).

    The group means of ``g = dout * gamma`` and ``g * x_hat`` come from the per-channel sums that
    dgamma and dbeta need anyway: sum g = sum_c gamma_c dbeta_c, sum g x_hat = sum_c gamma_c dgamma_c."""
    T = x.dtype.type
    n_n, p_n, c_n = x.shape
    cg = c_n // groups
    d = p_n * cg
    for n in prange(n_n):
        mc = np.empty(c_n, dtype=x.dtype)
        ic = np.empty(c_n, dtype=x.dtype)
        for c in range(c_n):
            mc[c], ic[c] = T(mu[n, c // cg]), T(inv_std[n, c // cg])
        dgam = np.zeros(c_n)                        # per-channel sums, float64
        dbet = np.zeros(c_n)
        for p in range(p_n):
            for c in range(c_n):
                dv = dout[n, p, c]
                dgam[c] += dv * ((x[n, p, c] - mc[c]) * ic[c])
                dbet[c] += dv
        mg = np.empty(c_n, dtype=x.dtype)           # mean_group(g), spread per channel
        mgx = np.empty(c_n, dtype=x.dtype)          # mean_group(g x_hat)
        for g in range(groups):
            sg, sgx = 0.0, 0.0
            for c in range(g * cg, (g + 1) * cg):
                sg += gamma[c] * dbet[c]
                sgx += gamma[c] * dgam[c]
            for c in range(g * cg, (g + 1) * cg):
                mg[c], mgx[c] = T(sg / d), T(sgx / d)
        for c in range(c_n):
            dgamma_n[n, c], dbeta_n[n, c] = dgam[c], dbet[c]
        for p in range(p_n):
            for c in range(c_n):
                xh = (x[n, p, c] - mc[c]) * ic[c]
                dx[n, p, c] = (dout[n, p, c] * gamma[c] - mg[c] - xh * mgx[c]) * ic[c]


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
