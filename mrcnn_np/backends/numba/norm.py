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

Contiguous NCHW input (from a user, not from a conv) gets its own pair, ``_forward_nchw`` /
``_backward_nchw``, one task per ``(n, g)``, where a group is one contiguous block: its sums run
over each channel's row with 8 independent partial sums (``_lane_sums``), so no transpose copy is
made. The variance there is ``sum x (x - m) - m sum (x - m)`` in float64, equal to the reference's
``sum (x - m)^2`` up to rounding.

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


_LANES = 8             # independent partial sums in the NCHW kernels (vectorise without fastmath)


@serial
def _lane_sums(row, shift, weight, out):
    """out[0] += sum_i (row[i] - shift), out[1] += sum_i weight[i] * (row[i] - shift) over a
    contiguous row, each with _LANES independent float64 partial sums. ``weight`` may be ``row``."""
    n = row.shape[0]
    a = np.zeros(_LANES)
    b = np.zeros(_LANES)
    full = n - n % _LANES
    for i in range(0, full, _LANES):
        for k in range(_LANES):
            t = row[i + k] - shift
            a[k] += t
            b[k] += weight[i + k] * t
    for i in range(full, n):
        t = row[i] - shift
        a[0] += t
        b[0] += weight[i] * t
    out[0] += a.sum()
    out[1] += b.sum()


@kernel
def _forward_nchw(x, gamma, beta, groups, eps, y, mu, inv_std):
    """The same for NCHW data x, y (N, C, P): a group is one contiguous block of C/G rows."""
    T = x.dtype.type
    n_n, c_n, p_n = x.shape
    cg = c_n // groups
    d = p_n * cg
    for task in prange(n_n * groups):
        n, g = task // groups, task % groups
        s = np.zeros(2)
        for c in range(g * cg, (g + 1) * cg):
            _lane_sums(x[n, c], T(0), x[n, c], s)
        m = s[0] / d
        mt = T(m)
        s[:] = 0
        for c in range(g * cg, (g + 1) * cg):
            _lane_sums(x[n, c], mt, x[n, c], s)          # s[1] = sum x (x - m)
        s1 = s[1] - m * s[0]                              # = sum (x - m)^2 (s[0] ~ 0)
        istd = 1.0 / np.sqrt(s1 / d + eps)
        mu[n, g], inv_std[n, g] = m, istd
        it = T(istd)
        for c in range(g * cg, (g + 1) * cg):
            for p in range(p_n):
                y[n, c, p] = (x[n, c, p] - mt) * it * gamma[c] + beta[c]


@kernel
def _backward_nchw(dout, x, gamma, mu, inv_std, groups, dx, dgamma_n, dbeta_n):
    """The backward for NCHW data (N, C, P), one task per (n, g)."""
    T = x.dtype.type
    n_n, c_n, p_n = x.shape
    cg = c_n // groups
    d = p_n * cg
    for task in prange(n_n * groups):
        n, g = task // groups, task % groups
        mt, it = T(mu[n, g]), T(inv_std[n, g])
        sg, sgx = 0.0, 0.0
        s = np.zeros(2)
        for c in range(g * cg, (g + 1) * cg):
            s[:] = 0
            _lane_sums(dout[n, c], T(0), x[n, c], s)      # s[0] = sum dout, s[1] = sum dout x
            dbet = s[0]
            dgam = (s[1] - mu[n, g] * s[0]) * inv_std[n, g]   # sum dout x_hat
            dgamma_n[n, c], dbeta_n[n, c] = dgam, dbet
            sg += gamma[c] * dbet
            sgx += gamma[c] * dgam
        mg, mgx = T(sg / d), T(sgx / d)
        for c in range(g * cg, (g + 1) * cg):
            for p in range(p_n):
                xh = (x[n, c, p] - mt) * it
                dx[n, c, p] = (dout[n, c, p] * gamma[c] - mg - xh * mgx) * it


def _is_nhwc(a):
    """An NCHW view of an NHWC buffer (what the conv kernels return)?"""
    return a.transpose(0, 2, 3, 1).flags.c_contiguous and not a.flags.c_contiguous


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
    n, c, h, w = x.shape
    gamma, beta = np.ascontiguousarray(gamma), np.ascontiguousarray(beta)
    mu = np.empty((n, g))
    inv_std = np.empty((n, g))
    if _is_nhwc(x):                         # the model's case: conv outputs are NHWC buffers
        xr = _rows(x)
        y = np.empty_like(xr)
        _forward(xr, gamma, beta, g, float(eps), y, mu, inv_std)
        return _as_nchw(y, x.shape), (True, xr, gamma, mu, inv_std, g, x.shape)
    x3 = np.ascontiguousarray(x).reshape(n, c, h * w)
    y = np.empty_like(x3)
    _forward_nchw(x3, gamma, beta, g, float(eps), y, mu, inv_std)
    return y.reshape(x.shape), (False, x3, gamma, mu, inv_std, g, x.shape)


@register("numba", "group_norm_backward", any_layout=True)
def group_norm_backward(dout, cache):
    nhwc, xr, gamma, mu, inv_std, g, shape = cache
    n, c, h, w = shape
    dout = dout.astype(xr.dtype, copy=False)
    dx = np.empty_like(xr)
    dgamma_n = np.empty((n, c), dtype=xr.dtype)
    dbeta_n = np.empty((n, c), dtype=xr.dtype)
    if nhwc:
        _backward(_rows(dout), xr, gamma, mu, inv_std, g, dx, dgamma_n, dbeta_n)
        dx = _as_nchw(dx, shape)
    else:
        d3 = np.ascontiguousarray(dout).reshape(n, c, h * w)
        _backward_nchw(d3, xr, gamma, mu, inv_std, g, dx, dgamma_n, dbeta_n)
        dx = dx.reshape(shape)
    return dx, dgamma_n.sum(axis=0), dbeta_n.sum(axis=0)
