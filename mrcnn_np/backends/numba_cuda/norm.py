"""Group normalisation as ``@cuda.jit`` kernels: one thread block per (image, group).

Reference: :mod:`mrcnn_np.ops.norm`::

    mu = mean_{c in g, h, w} x,   var = mean (x - mu)^2,   x_hat = (x - mu) / sqrt(var + eps)
    y = gamma_c x_hat + beta_c
    dx = (g - mean(g) - x_hat mean(g x_hat)) / sqrt(var + eps),   g = dout * gamma
    dgamma_c = sum_{n, h, w} dout x_hat,   dbeta_c = sum_{n, h, w} dout

In NCHW, the ``D = C/G * H * W`` numbers of one (image, group) are contiguous, so ``x.reshape(N*G, D)``
gives each block one row. The block's threads stride over the row, each keeping a partial sum; the
partial sums are then added in shared memory by a tree reduction (:func:`block_sum`): at each step
the first half of the threads add the second half's numbers to their own, with ``syncthreads()``
between steps so that nobody reads a number before it is written. Two passes, as the reference: the
mean first, then the variance about it (a one-pass ``E[x^2] - mu^2`` loses precision in float32).

The parameter gradients sum over images and pixels, per channel: one block per channel, the same
reduction. Every sum has a fixed order, so results are deterministic (no atomics).
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ...dispatch import register
from ._launch import SIMULATED, array_module, launch_blocks, numba_dtype

__all__ = ["group_norm_forward", "group_norm_backward"]

#: threads per block of the reductions: a power of two (the tree halves it). Fewer under the
#: simulator, where each thread is a Python thread.
REDUCE_THREADS = 16 if SIMULATED else 256


@functools.cache
def _kernels(dtype):
    T = np.dtype(dtype).type                     # see _launch.py, "Dtypes"
    ZERO, ONE = T(0), T(1)
    nb_t = numba_dtype(dtype)

    @cuda.jit(device=True)
    def block_sum(value, buf):
        """The sum of ``value`` over the block's threads, returned to every thread.

        ``buf``: a shared array of ``blockDim.x`` numbers (a power of two)."""
        t = cuda.threadIdx.x
        buf[t] = value
        cuda.syncthreads()
        half = cuda.blockDim.x // 2
        while half > 0:                          # tree: 256 -> 128 -> ... -> 1 partial sums
            if t < half:
                buf[t] += buf[t + half]
            cuda.syncthreads()                   # every add of this step is done before the next
            half //= 2
        total = buf[0]
        cuda.syncthreads()                       # everyone has read buf[0] before it is reused
        return total

    @cuda.jit
    def forward(x, gamma, beta, eps, channels_per_group, hw, y, x_hat, inv_std):
        """x, y, x_hat: (N*G, D) rows; gamma, beta: (C,); inv_std: (N*G,). Block = one row."""
        buf = cuda.shared.array(REDUCE_THREADS, nb_t)
        row = cuda.blockIdx.x
        t = cuda.threadIdx.x
        d = x.shape[1]
        n_groups = gamma.shape[0] // channels_per_group
        acc = ZERO
        for k in range(t, d, cuda.blockDim.x):
            acc += x[row, k]
        mu = block_sum(acc, buf) / T(d)
        acc = ZERO
        for k in range(t, d, cuda.blockDim.x):
            xc = x[row, k] - mu
            acc += xc * xc
        var = block_sum(acc, buf) / T(d)
        s = ONE / math.sqrt(var + eps)
        if t == 0:
            inv_std[row] = s
        c0 = (row % n_groups) * channels_per_group       # first channel of this group
        for k in range(t, d, cuda.blockDim.x):
            c = c0 + k // hw
            xh = (x[row, k] - mu) * s
            x_hat[row, k] = xh
            y[row, k] = gamma[c] * xh + beta[c]

    @cuda.jit
    def backward_x(dout, x_hat, gamma, inv_std, channels_per_group, hw, dx):
        """dx rows (N*G, D); block = one (image, group)."""
        buf = cuda.shared.array(REDUCE_THREADS, nb_t)
        row = cuda.blockIdx.x
        t = cuda.threadIdx.x
        d = dout.shape[1]
        n_groups = gamma.shape[0] // channels_per_group
        c0 = (row % n_groups) * channels_per_group
        acc_g = ZERO                             # sum of g = dout * gamma
        acc_gx = ZERO                            # sum of g * x_hat
        for k in range(t, d, cuda.blockDim.x):
            g = dout[row, k] * gamma[c0 + k // hw]
            acc_g += g
            acc_gx += g * x_hat[row, k]
        mean_g = block_sum(acc_g, buf) / T(d)
        mean_gx = block_sum(acc_gx, buf) / T(d)
        s = inv_std[row]
        for k in range(t, d, cuda.blockDim.x):
            g = dout[row, k] * gamma[c0 + k // hw]
            dx[row, k] = (g - mean_g - x_hat[row, k] * mean_gx) * s

    @cuda.jit
    def backward_params(dout, x_hat, dgamma, dbeta):
        """dout, x_hat: (N, C, H*W); block = one channel c, summing over images and pixels."""
        buf = cuda.shared.array(REDUCE_THREADS, nb_t)
        c = cuda.blockIdx.x
        t = cuda.threadIdx.x
        n, hw = dout.shape[0], dout.shape[2]
        acc_b = ZERO
        acc_g = ZERO
        for k in range(t, n * hw, cuda.blockDim.x):
            i, p = k // hw, k % hw
            acc_b += dout[i, c, p]
            acc_g += dout[i, c, p] * x_hat[i, c, p]
        total_b = block_sum(acc_b, buf)
        total_g = block_sum(acc_g, buf)
        if t == 0:
            dbeta[c] = total_b
            dgamma[c] = total_g

    return SimpleNamespace(forward=forward, backward_x=backward_x, backward_params=backward_params)


@register("numba-cuda", "group_norm_forward")
def group_norm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """Same arguments and result as :func:`mrcnn_np.ops.norm.group_norm_forward`."""
    xp = array_module()
    n, c, h, w = x.shape
    g = int(num_groups)
    rows = x.reshape(n * g, (c // g) * h * w)    # (N, C, H, W) -> (N*G, C/G*H*W), a view
    y = xp.empty_like(rows)
    x_hat = xp.empty_like(rows)
    inv_std = xp.empty(n * g, dtype=x.dtype)
    launch_blocks(_kernels(x.dtype).forward, n * g, REDUCE_THREADS, rows, gamma, beta,
                  x.dtype.type(eps), c // g, h * w, y, x_hat, inv_std)
    return y.reshape(n, c, h, w), (x_hat.reshape(n, c, h, w), inv_std, gamma, g)


@register("numba-cuda", "group_norm_backward")
def group_norm_backward(dout, cache):
    """dout (N, C, H, W) -> ``(dx, dgamma, dbeta)``."""
    xp = array_module()
    x_hat, inv_std, gamma, g = cache
    n, c, h, w = x_hat.shape
    dout = dout.astype(x_hat.dtype, copy=False)
    kernels = _kernels(x_hat.dtype)
    dx = xp.empty((n * g, (c // g) * h * w), dtype=x_hat.dtype)
    launch_blocks(kernels.backward_x, n * g, REDUCE_THREADS, dout.reshape(n * g, (c // g) * h * w),
                  x_hat.reshape(n * g, (c // g) * h * w), gamma, inv_std, c // g, h * w, dx)
    dgamma = xp.empty(c, dtype=x_hat.dtype)
    dbeta = xp.empty(c, dtype=x_hat.dtype)
    launch_blocks(kernels.backward_params, c, REDUCE_THREADS, dout.reshape(n, c, h * w),
                  x_hat.reshape(n, c, h * w), dgamma, dbeta)
    return dx.reshape(n, c, h, w), dgamma, dbeta
