"""Group normalisation (Wu & He, 2018): what lets Mask R-CNN train from scratch with tiny batches.

Split the C channels into G groups; normalise each (image, group) over its channels and pixels,
then scale and shift per channel::

    mu_ng = mean_{c in g, h, w} x          var_ng = mean_{c in g, h, w} (x - mu_ng)^2
    x_hat = (x - mu_ng) / sqrt(var_ng + eps)          y = gamma_c * x_hat + beta_c

Backward, with ``D`` the number of elements in a group and ``g = dout * gamma``::

    dx = (g - mean_group(g) - x_hat * mean_group(g * x_hat)) / sqrt(var_ng + eps)
    dgamma = sum_{n, h, w} dout * x_hat          dbeta = sum_{n, h, w} dout
"""
from __future__ import annotations

from ._check import check_dim, check_float, check_ndim, check_positive_int

__all__ = ["group_norm_forward", "group_norm_backward", "check_group_norm_args"]


def check_group_norm_args(x, gamma, beta, num_groups, eps=1e-5):
    """The argument check of :func:`group_norm_forward` (kernels get it too); returns ``num_groups``."""
    check_ndim("x", x, 4, "(N, C, H, W)")
    check_float("x", x)
    n, c, h, w = x.shape
    for name, p in (("gamma", gamma), ("beta", beta)):
        check_ndim(name, p, 1, f"({c},)")
        check_dim(name, p, 0, c, "the channels C of x")
    g = check_positive_int("num_groups", num_groups)
    if c % g:
        raise ValueError(f"num_groups: {g} does not divide the {c} channels of x (shape {x.shape})")
    if not eps > 0:
        raise ValueError(f"eps: expected a number > 0, got {eps!r}")
    return g


def group_norm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """x: (N, C, H, W); gamma, beta: (C,); ``num_groups`` must divide C.

    Returns ``(y (N, C, H, W), cache)``.
    """
    g = check_group_norm_args(x, gamma, beta, num_groups, eps)
    n, c, h, w = x.shape
    xg = x.reshape(n, g, -1)                                    # (N, C, H, W) -> (N, G, C/G*H*W)
    mu = xg.mean(axis=2, keepdims=True)
    xc = xg - mu
    var = (xc * xc).mean(axis=2, keepdims=True)
    inv_std = 1.0 / (var + eps) ** 0.5                          # (N, G, 1)
    x_hat = (xc * inv_std).reshape(n, c, h, w)
    y = x_hat * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)
    return y, (x_hat, inv_std, gamma, g)


def group_norm_backward(dout, cache):
    """dout: (N, C, H, W).  Returns ``(dx, dgamma, dbeta)`` with the shapes of ``x``, ``gamma``, ``beta``."""
    x_hat, inv_std, gamma, g = cache
    n, c, h, w = x_hat.shape
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))
    dxhat = (dout * gamma.reshape(1, c, 1, 1)).reshape(n, g, -1)  # (N, G, C/G*H*W)
    xh = x_hat.reshape(n, g, -1)
    dx = (dxhat - dxhat.mean(axis=2, keepdims=True)
          - xh * (dxhat * xh).mean(axis=2, keepdims=True)) * inv_std
    return dx.reshape(n, c, h, w), dgamma, dbeta
