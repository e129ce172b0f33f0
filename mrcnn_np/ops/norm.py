"""Normalisation layers: GroupNorm (the toy presets) and FrozenBatchNorm (the paper's ResNet-50).

**Group normalisation** (Wu & He, 2018): what lets Mask R-CNN train from scratch with tiny batches.

Split the C channels into G groups; normalise each (image, group) over its channels and pixels,
then scale and shift per channel::

    mu_ng = mean_{c in g, h, w} x          var_ng = mean_{c in g, h, w} (x - mu_ng)^2
    x_hat = (x - mu_ng) / sqrt(var_ng + eps)          y = gamma_c * x_hat + beta_c

Backward, with ``D`` the number of elements in a group and ``g = dout * gamma``::

    dx = (g - mean_group(g) - x_hat * mean_group(g * x_hat)) / sqrt(var_ng + eps)
    dgamma = sum_{n, h, w} dout * x_hat          dbeta = sum_{n, h, w} dout

**Frozen batch normalisation** (torchvision's ``FrozenBatchNorm2d``). A BatchNorm whose statistics
and affine parameters were fixed at pre-training (ImageNet, then COCO) and are never updated: with
1-2 images per GPU, batch statistics would be noise. It is a per-channel affine map::

    s_c = w_c / sqrt(var_c + eps)          t_c = b_c - mean_c * s_c          y = x * s_c + t_c

and its backward to the input is ``dx = dout * s_c``; ``w, b, mean, var`` get no gradient (they
are buffers, not parameters). A conv followed by it is a conv with weights ``W_k * s_k`` and bias
``t_k`` (``fold_frozen_batch_norm``): one pass fewer over every activation.

# NOTE: eps. torchvision's COCO v1 Mask R-CNN weights were trained with an eps-free FrozenBN, and
# ``maskrcnn_resnet50_fpn(weights=COCO_V1)`` sets eps to 0 on every layer after loading (the class
# default is 1e-5). The ``r50_fpn`` preset uses 0 (``ModelConfig.frozen_bn_eps``).
"""
from __future__ import annotations

from ._check import check_dim, check_float, check_ndim, check_positive_int

__all__ = ["group_norm_forward", "group_norm_backward", "check_group_norm_args",
           "frozen_batch_norm_forward", "frozen_batch_norm_backward", "check_frozen_batch_norm_args",
           "frozen_batch_norm_affine", "fold_frozen_batch_norm"]


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
    xg = x.reshape(n, g, (c // g) * h * w)                      # (N, C, H, W) -> (N, G, C/G*H*W)
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
    m = (c // g) * h * w                                          # numbers per group
    dxhat = (dout * gamma.reshape(1, c, 1, 1)).reshape(n, g, m)   # (N, G, C/G*H*W)
    xh = x_hat.reshape(n, g, m)
    dx = (dxhat - dxhat.mean(axis=2, keepdims=True)
          - xh * (dxhat * xh).mean(axis=2, keepdims=True)) * inv_std
    return dx.reshape(n, c, h, w), dgamma, dbeta


def check_frozen_batch_norm_args(x, weight, bias, running_mean, running_var, eps=0.0):
    """The argument check of :func:`frozen_batch_norm_forward` (kernels get it too)."""
    check_ndim("x", x, 4, "(N, C, H, W)")
    check_float("x", x)
    c = x.shape[1]
    for name, p in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        check_ndim(name, p, 1, f"({c},)")
        check_dim(name, p, 0, c, "the channels C of x")
    if not eps >= 0:
        raise ValueError(f"eps: expected a number >= 0, got {eps!r}")


def frozen_batch_norm_affine(weight, bias, running_mean, running_var, eps=0.0):
    """The per-channel ``(s, t)`` of a frozen BatchNorm: ``s = w / sqrt(var + eps)``, ``t = b - mean s``.

    Computed in the buffers' dtype in torchvision's order (``w * rsqrt(var + eps)``), all ``(C,)``."""
    scale = weight * (1 / (running_var + eps) ** 0.5)
    return scale, bias - running_mean * scale


def frozen_batch_norm_forward(x, weight, bias, running_mean, running_var, eps=0.0):
    """x: (N, C, H, W); weight, bias, running_mean, running_var: (C,).

    Returns ``(y (N, C, H, W), cache)`` with ``y = x * s_c + t_c`` (module docstring)."""
    check_frozen_batch_norm_args(x, weight, bias, running_mean, running_var, eps)
    scale, shift = frozen_batch_norm_affine(weight, bias, running_mean, running_var, eps)
    c = x.shape[1]
    y = x * scale.reshape(1, c, 1, 1).astype(x.dtype) + shift.reshape(1, c, 1, 1).astype(x.dtype)
    return y, scale.astype(x.dtype)


def frozen_batch_norm_backward(dout, cache):
    """dout: (N, C, H, W).  Returns ``dx = dout * s_c`` (the statistics are frozen: no other gradient)."""
    scale = cache
    return dout * scale.reshape(1, -1, 1, 1)


def fold_frozen_batch_norm(conv_weight, conv_bias, weight, bias, running_mean, running_var, eps=0.0):
    """``FrozenBN(conv(x, W, b0))`` as one conv ``conv(x, W', b')``: returns ``(W', b')`` with

        W'_k = W_k * s_k            b'_k = b0_k * s_k + t_k        (b0 = 0 when ``conv_bias`` is None)

    conv_weight ``(C_out, C_in, kh, kw)``; the BN's arrays ``(C_out,)``. Exact in real arithmetic; in
    float32 it rounds differently from the two-step form by about one ulp per layer."""
    scale, shift = frozen_batch_norm_affine(weight, bias, running_mean, running_var, eps)
    w = conv_weight * scale.reshape(-1, 1, 1, 1).astype(conv_weight.dtype)
    b = shift if conv_bias is None else conv_bias * scale + shift
    return w, b.astype(conv_weight.dtype)
