"""Fully connected layer: ``y = x W^T + b`` (the box head's two FC layers and its predictors)."""
from __future__ import annotations

from ._check import check_dim, check_float, check_ndim

__all__ = ["linear_forward", "linear_backward"]


def linear_forward(x, w, b):
    """x: (N, in); w: (out, in); b: (out,) or None.  Returns ``(y (N, out), cache)``."""
    check_ndim("x", x, 2, "(N, in_features)")
    check_float("x", x)
    check_ndim("w", w, 2, "(out_features, in_features)")
    check_dim("w", w, 1, x.shape[1], "the in_features of x")
    if b is not None:
        check_ndim("b", b, 1, f"({w.shape[0]},)")
        check_dim("b", b, 0, w.shape[0], "the out_features of w")
    y = x @ w.T
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dout, cache):
    """dout: (N, out).  Returns ``(dx, dw, db)``: ``dx = dout W``, ``dw = dout^T x``,
    ``db = sum_n dout`` (None when there was no bias)."""
    x, w, has_bias = cache
    return dout @ w, dout.T @ x, (dout.sum(axis=0) if has_bias else None)
