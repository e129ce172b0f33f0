"""Max pooling and nearest-neighbour upsampling (the backbone stem, FPN's P6 and top-down path).

max pool:   y[n, c, i, j] = max_{u, v} x_pad[n, c, s*i + u, s*j + v]      (padding is -inf)
            dx receives dout at the position of that max (the first one, in row-major order, on ties)
upsample:   y[n, c, i, j] = x[n, c, i // r, j // r];  dx sums dout over each r x r block
"""
from __future__ import annotations

from ..backend import get_array_module
from ._check import check_float, check_ndim, check_nonneg_int, check_positive_int, pair

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "check_max_pool2d_args",
           "upsample_nearest2d_forward", "upsample_nearest2d_backward"]


def check_max_pool2d_args(x, kernel_size, stride, padding):
    """The argument check of :func:`max_pool2d_forward` (kernels get it too); returns
    ``((kh, kw), (sh, sw), padding, (out_h, out_w))``."""
    check_ndim("x", x, 4, "(N, C, H, W)")
    check_float("x", x)
    kh, kw = pair("kernel_size", kernel_size)
    sh, sw = pair("stride", stride)
    padding = check_nonneg_int("padding", padding)
    if padding > kh // 2 or padding > kw // 2:
        raise ValueError(f"padding: expected at most half the kernel size {kh}x{kw}, got {padding}")
    hp, wp = x.shape[2] + 2 * padding, x.shape[3] + 2 * padding
    if hp < kh or wp < kw:
        raise ValueError(f"x: padded input {hp}x{wp} is smaller than kernel_size {kh}x{kw}")
    return (kh, kw), (sh, sw), padding, ((hp - kh) // sh + 1, (wp - kw) // sw + 1)


def max_pool2d_forward(x, kernel_size, stride, padding):
    """x: (N, C, H, W).  ``kernel_size``/``stride`` are ints or (h, w) pairs; ``padding`` an int.

    Returns ``out`` (N, C, H_out, W_out), ``H_out = (H + 2p - k) // s + 1``, and the cache (the input
    shape and, per output pixel, which kernel offset held the max).
    """
    (kh, kw), (sh, sw), padding, (out_h, out_w) = check_max_pool2d_args(x, kernel_size, stride, padding)
    xp = get_array_module(x)
    n, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    x_pad = x
    if padding:
        x_pad = xp.full((n, c, hp, wp), -xp.inf, dtype=x.dtype)
        x_pad[:, :, padding : padding + h, padding : padding + w] = x
    # Running max over the kh*kw offsets; a strict '>' keeps the first max, as PyTorch does.
    out = x_pad[:, :, : sh * out_h : sh, : sw * out_w : sw].copy()
    arg = xp.zeros(out.shape, dtype=xp.int32)
    better = xp.empty(out.shape, dtype=bool)
    for u in range(kh):
        for v in range(kw):
            if u == 0 and v == 0:
                continue
            window = x_pad[:, :, u : u + sh * out_h : sh, v : v + sw * out_w : sw]
            xp.greater(window, out, out=better)
            xp.maximum(out, window, out=out)
            arg += better * (u * kw + v - arg)              # arg = k where this offset is better
    return out, (arg, x.shape, (kh, kw), (sh, sw), padding)


def max_pool2d_backward(dout, cache):
    """dout: (N, C, H_out, W_out).  Returns ``dx`` (N, C, H, W): each ``dout`` goes to its argmax."""
    arg, x_shape, (kh, kw), (sh, sw), padding = cache
    xp = get_array_module(dout)
    n, c, h, w = x_shape
    _, _, out_h, out_w = dout.shape
    dx_pad = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=dout.dtype)
    for u in range(kh):
        for v in range(kw):
            # NOTE: within one offset the strided slice visits distinct pixels, so `+=` is exact.
            dx_pad[:, :, u : u + sh * out_h : sh, v : v + sw * out_w : sw] += dout * (arg == u * kw + v)
    return dx_pad[:, :, padding : padding + h, padding : padding + w]


def upsample_nearest2d_forward(x, scale):
    """x: (N, C, H, W); ``scale`` a positive int.  Returns ``(out (N, C, H*r, W*r), cache)``."""
    check_ndim("x", x, 4, "(N, C, H, W)")
    check_float("x", x)
    r = check_positive_int("scale", scale)
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.broadcast_to(x[:, :, :, None, :, None], (n, c, h, r, w, r)).reshape(n, c, h * r, w * r)
    return out, r


def upsample_nearest2d_backward(dout, cache):
    """dout: (N, C, H*r, W*r).  Returns ``dx`` (N, C, H, W), the sum of ``dout`` over each r x r block."""
    r = cache
    # Each output pixel (i, j) came from input (i // r, j // r): add the r*r strided sub-grids.
    dx = dout[:, :, ::r, ::r].copy()
    for u in range(r):
        for v in range(r):
            if u or v:
                dx += dout[:, :, u::r, v::r]
    return dx
