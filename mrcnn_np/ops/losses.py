"""The multi-task loss terms (notes, section 5), each a scalar with its gradient.

* softmax cross-entropy, mean over rows:  L = -1/N sum_i log softmax(z_i)[y_i]
      dL/dz_i = (softmax(z_i) - onehot(y_i)) / N
* smooth L1, summed over elements (the caller divides by its normaliser):
      s(d) = 0.5 d^2 / beta  if |d| < beta,  |d| - 0.5 beta  otherwise;  d = pred - target
      ds/dd = d / beta  if |d| < beta,  sign(d) otherwise           (beta = 0 gives plain L1)
* per-pixel sigmoid binary cross-entropy with logits, mean over elements:
      l(x, t) = max(x, 0) - x t + log(1 + exp(-|x|))       (= -t log p - (1-t) log(1-p), p = sigmoid(x))
      dl/dx = (sigmoid(x) - t) / count
  The rewritten form never exponentiates a positive number, so it stays finite and exact for
  logits as large as +-1000, where log(sigmoid(x)) computed naively gives -inf.

Every ``*_backward(dloss, cache)`` takes the upstream scalar ``dloss`` and returns the gradient with
respect to the predictions (the first argument) only: labels and targets are constants.
"""
from __future__ import annotations

from ..backend import get_array_module
from ._check import check_float, check_ndim, values_on_host

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
           "smooth_l1_forward", "smooth_l1_backward",
           "sigmoid_bce_with_logits_forward", "sigmoid_bce_with_logits_backward",
           "check_softmax_cross_entropy_args", "check_smooth_l1_args",
           "check_sigmoid_bce_with_logits_args"]


def _same_shape(name, a, ref_name, ref):
    if tuple(a.shape) != tuple(ref.shape):
        raise ValueError(f"{name}: expected the shape of {ref_name} {tuple(ref.shape)}, "
                         f"got {tuple(a.shape)}")


def check_softmax_cross_entropy_args(logits, labels):
    """The argument check of :func:`softmax_cross_entropy_forward` (kernels get it too)."""
    check_ndim("logits", logits, 2, "(N, K)")
    check_float("logits", logits)
    check_ndim("labels", labels, 1, f"({logits.shape[0]},)")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels: expected shape ({logits.shape[0]},) to match logits "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected an integer array, got dtype {labels.dtype}")
    n, k = logits.shape
    if n and values_on_host(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels: expected values in [0, {k}), got min {int(labels.min())} "
                         f"max {int(labels.max())}")


def softmax_cross_entropy_forward(logits, labels):
    """logits: (N, K) float; labels: (N,) ints in [0, K).  Returns ``(loss (scalar), cache)``.

    ``N = 0`` gives loss 0 (an empty mean is taken as 0 so that an image with nothing sampled
    contributes nothing rather than NaN).
    """
    check_softmax_cross_entropy_args(logits, labels)
    xp = get_array_module(logits)
    n, k = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)        # log-sum-exp without overflow
    log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z                                     # (N, K) log-softmax
    rows = xp.arange(n)
    loss = -log_p[rows, labels].sum() / max(n, 1)
    return loss, (log_p, labels)


def softmax_cross_entropy_backward(dloss, cache):
    """Returns ``dlogits`` (N, K) = dloss * (softmax - onehot) / N."""
    log_p, labels = cache
    xp = get_array_module(log_p)
    n = log_p.shape[0]
    dz = xp.exp(log_p)
    dz[xp.arange(n), labels] -= 1.0
    return dz * (dloss / max(n, 1))


def check_smooth_l1_args(pred, target, beta=1.0):
    """The argument check of :func:`smooth_l1_forward` (kernels get it too)."""
    check_float("pred", pred)
    _same_shape("target", target, "pred", pred)
    if not beta >= 0:
        raise ValueError(f"beta: expected a number >= 0, got {beta!r}")


def smooth_l1_forward(pred, target, beta=1.0):
    """pred, target: the same shape, float; ``beta >= 0``.  Returns ``(sum of s(pred - target), cache)``."""
    check_smooth_l1_args(pred, target, beta)
    xp = get_array_module(pred)
    d = pred - target
    ad = xp.abs(d)
    if beta == 0:
        return ad.sum(), (d, beta)
    loss = xp.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta).sum()
    return loss, (d, beta)


def smooth_l1_backward(dloss, cache):
    """Returns ``dpred`` with the shape of ``pred``."""
    d, beta = cache
    xp = get_array_module(d)
    if beta == 0:
        return dloss * xp.sign(d)
    return dloss * xp.where(xp.abs(d) < beta, d / beta, xp.sign(d))


def check_sigmoid_bce_with_logits_args(logits, targets):
    """The argument check of :func:`sigmoid_bce_with_logits_forward` (kernels get it too)."""
    check_float("logits", logits)
    _same_shape("targets", targets, "logits", logits)


def sigmoid_bce_with_logits_forward(logits, targets):
    """logits, targets: the same shape (e.g. (R, m, m)), targets in [0, 1].

    Returns ``(mean binary cross-entropy, cache)``; an empty input gives 0.
    """
    check_sigmoid_bce_with_logits_args(logits, targets)
    xp = get_array_module(logits)
    x = logits
    t = targets.astype(logits.dtype, copy=False)
    loss = (xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))).sum() / max(x.size, 1)
    return loss, (x, t)


def sigmoid_bce_with_logits_backward(dloss, cache):
    """Returns ``dlogits`` = dloss * (sigmoid(x) - t) / count, with the shape of ``logits``."""
    x, t = cache
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))                                      # never overflows
    sig = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return (sig - t) * (dloss / max(x.size, 1))


# ----------------------------------------------------------------------------------------------------
# The alternative the paper ablates (Table 2b): masks as a per-pixel softmax over classes.
# ----------------------------------------------------------------------------------------------------

def softmax_mask_cross_entropy_forward(logits, targets):
    """Per-pixel multinomial cross-entropy over classes (FCN-style; notes, section 6).

    logits: (R, C, m, m) float, one channel per class *including* background (channel 0);
    targets: (R, m, m) ints in [0, C): the class of each pixel (0 where the pixel is not the object).

        p_r(q) = softmax_c(z_r[:, q])                       (classes compete at every pixel q)
        L = -1/(R m^2) sum_r sum_q log p_r(q)[y_r(q)]
        dL/dz_r[c, q] = (p_r(q)[c] - [c = y_r(q)]) / (R m^2)

    Returns ``(loss (scalar), cache)``; an empty input gives 0. Stable (log-sum-exp) for any logits.
    """
    check_float("logits", logits)
    check_ndim("logits", logits, 4, "(R, C, m, m)")
    if tuple(targets.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f"targets: expected shape {(logits.shape[0],) + tuple(logits.shape[2:])} "
                         f"(one class per pixel), got {tuple(targets.shape)}")
    if targets.dtype.kind not in "iu":
        raise ValueError(f"targets: expected an integer array, got dtype {targets.dtype}")
    xp = get_array_module(logits)
    r, c = logits.shape[:2]
    if targets.size and (int(targets.min()) < 0 or int(targets.max()) >= c):
        raise ValueError(f"targets: expected values in [0, {c}), got min {int(targets.min())} "
                         f"max {int(targets.max())}")
    z = logits.transpose(0, 2, 3, 1).reshape(-1, c)              # (R, C, m, m) -> (R*m*m, C)
    y = targets.reshape(-1)
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))   # (R*m*m, C)
    count = max(y.shape[0], 1)
    loss = -log_p[xp.arange(y.shape[0]), y].sum() / count
    return loss, (log_p, y, logits.shape)


def softmax_mask_cross_entropy_backward(dloss, cache):
    """Returns ``dlogits`` (R, C, m, m) = dloss * (softmax - onehot) / (R m^2)."""
    log_p, y, shape = cache
    xp = get_array_module(log_p)
    dz = xp.exp(log_p)
    dz[xp.arange(y.shape[0]), y] -= 1.0
    dz *= dloss / max(y.shape[0], 1)
    r, c, mh, mw = shape
    return xp.ascontiguousarray(dz.reshape(r, mh, mw, c).transpose(0, 3, 1, 2))  # -> (R, C, m, m)


__all__ += ["softmax_mask_cross_entropy_forward", "softmax_mask_cross_entropy_backward"]
