"""ReLU: ``y = max(x, 0)``; its gradient passes ``dout`` where ``x > 0`` and stops it elsewhere."""
from __future__ import annotations

from ._check import check_float

__all__ = ["relu_forward", "relu_backward"]


def relu_forward(x):
    """x: any shape, float.  Returns ``(max(x, 0), cache)`` where the cache is the mask ``x > 0``."""
    check_float("x", x)
    mask = x > 0
    return x * mask, mask


def relu_backward(dout, cache):
    """dout: the shape of ``x``.  Returns ``dx = dout * [x > 0]`` (the subgradient 0 at ``x == 0``)."""
    return dout * cache
