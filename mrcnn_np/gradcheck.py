"""Gradient checking: compare each op's written-out backward with central finite differences.

For an op ``out, cache = forward(*args)`` pick a fixed random upstream gradient ``G`` and define the
scalar ``L = sum(out * G)``. Then ``backward(G, cache)`` must equal ``dL/d(arg)``, which we estimate
one element at a time in float64::

    dL/dx_k ~ (L(x + h e_k) - L(x - h e_k)) / (2h)          (error O(h^2); h = 1e-6)

The reported error for an input is ``max_k |analytic_k - numeric_k| / max(max|analytic|, max|numeric|)``:
the worst element's error relative to the gradient's own scale. (Per-element relative error blows
up on elements whose true gradient is ~0, where finite differences are all rounding noise.)
A correct float64 backward scores ~1e-9 or better; a wrong one scores ~1e-1.

``mrcnn-np gradcheck`` runs :func:`run_all` and prints the table a learner should see first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import functional as F

__all__ = ["numerical_gradient", "relative_error", "gradcheck", "OpCheck", "op_checks", "run_all",
           "format_table"]


def numerical_gradient(f, x, h=1e-6, indices=None):
    """Central-difference gradient of the scalar function ``f()`` with respect to the array ``x``,
    which ``f`` reads and this function perturbs in place (and restores). Returns an array like x;
    given ``indices`` (into ``x.ravel()``), only those entries are estimated (the rest stay 0)."""
    grad = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)           # views: x must be contiguous
    if not np.shares_memory(flat_x, x):
        raise ValueError("x: expected a contiguous array (perturbed in place)")
    for k in (range(flat_x.size) if indices is None else indices):
        old = flat_x[k]
        flat_x[k] = old + h
        f_plus = f()
        flat_x[k] = old - h
        f_minus = f()
        flat_x[k] = old
        flat_g[k] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(analytic, numeric):
    """``max |a - n| / max(max|a|, max|n|)``; 0 when both are exactly zero."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic: shape {a.shape} differs from numeric {n.shape}")
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - n).max() / scale)


def gradcheck(forward, backward, args, wrt, kwargs=None, h=1e-6, seed=0):
    """Check ``backward`` against finite differences of ``forward``.

    ``args``: the forward's positional arguments (float64 arrays for those checked);
    ``wrt``: ``{name: arg_position}`` for the inputs to check, in the order ``backward`` returns their
    gradients (a backward returning one array counts as a 1-tuple). Returns ``{name: error}``.
    """
    kwargs = kwargs or {}
    args = list(args)
    for pos in wrt.values():
        args[pos] = np.ascontiguousarray(args[pos], dtype=np.float64)
    out, cache = forward(*args, **kwargs)
    rng = np.random.default_rng(seed)
    upstream = rng.standard_normal(np.shape(out))
    if np.ndim(out) == 0:
        upstream = float(upstream)
    grads = backward(upstream, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)

    def loss():
        return float(np.sum(forward(*args, **kwargs)[0] * upstream))

    return {name: relative_error(grads[i], numerical_gradient(loss, args[pos], h))
            for i, (name, pos) in enumerate(wrt.items())}


@dataclass
class OpCheck:
    """One row of the gradient-check table: an op, inputs for it, and which inputs to check."""

    name: str
    forward: object
    backward: object
    args: tuple
    wrt: dict
    kwargs: dict = field(default_factory=dict)

    def run(self, h=1e-6):
        return gradcheck(self.forward, self.backward, self.args, self.wrt, self.kwargs, h)


def _distinct(rng, shape, gap=0.05):
    """Values at least ``gap`` apart, so a 1e-6 step never changes which one is the max."""
    return (rng.permutation(int(np.prod(shape))) * gap - 1.0).reshape(shape) + rng.uniform(0, gap / 4)


def _away_from_zero(rng, shape, margin=0.1):
    """Values with |x| >= margin, so a 1e-6 step never crosses ReLU's kink."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + margin, x - margin)


def op_checks(seed=0):
    """The table: every layer of the project, at small float64 shapes that exercise its corners."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal
    # RoIs on a 6x7 map of stride 2 (spatial_scale 0.5), image ~ 14x12: one inside, one straddling
    # bin and pixel boundaries at fractional coordinates, one sticking out past the top-left, one
    # past the bottom-right, one smaller than a cell, and one in the second image.
    rois = np.array([[0, 2.0, 2.0, 9.0, 8.0],
                     [0, 1.3, 0.7, 6.9, 5.2],
                     [0, -3.5, -2.25, 4.1, 3.3],
                     [1, 8.6, 6.2, 16.8, 15.1],
                     [1, 5.1, 4.2, 5.6, 4.4],
                     [1, 0.0, 0.0, 13.9, 11.9]])
    feats = r((2, 3, 6, 7))
    n_cls = 4
    return [
        OpCheck("conv2d 3x3 s1 p1", F.conv2d_forward, F.conv2d_backward,
                (r((2, 3, 5, 6)), r((4, 3, 3, 3)), r(4)), {"x": 0, "w": 1, "b": 2}, {"stride": 1, "padding": 1}),
        OpCheck("conv2d 3x3 s2 p1", F.conv2d_forward, F.conv2d_backward,
                (r((2, 3, 7, 6)), r((4, 3, 3, 3)), r(4)), {"x": 0, "w": 1, "b": 2}, {"stride": 2, "padding": 1}),
        OpCheck("conv2d 1x1", F.conv2d_forward, F.conv2d_backward,
                (r((2, 5, 4, 3)), r((3, 5, 1, 1)), r(3)), {"x": 0, "w": 1, "b": 2}),
        OpCheck("conv_transpose2d 2x2 s2", F.conv_transpose2d_forward, F.conv_transpose2d_backward,
                (r((2, 3, 4, 3)), r((3, 2, 2, 2)), r(2)), {"x": 0, "w": 1, "b": 2}, {"stride": 2}),
        OpCheck("conv_transpose2d 3x3 s2 p1", F.conv_transpose2d_forward, F.conv_transpose2d_backward,
                (r((2, 3, 4, 3)), r((3, 2, 3, 3)), r(2)), {"x": 0, "w": 1, "b": 2}, {"stride": 2, "padding": 1}),
        OpCheck("max_pool2d 3x3 s2 p1", F.max_pool2d_forward, F.max_pool2d_backward,
                (_distinct(rng, (2, 2, 7, 6)), 3, 2, 1), {"x": 0}),
        OpCheck("max_pool2d 1x1 s2", F.max_pool2d_forward, F.max_pool2d_backward,
                (r((2, 2, 5, 5)), 1, 2, 0), {"x": 0}),
        OpCheck("relu", F.relu_forward, F.relu_backward, (_away_from_zero(rng, (3, 4, 5)),), {"x": 0}),
        OpCheck("upsample_nearest2d x2", F.upsample_nearest2d_forward, F.upsample_nearest2d_backward,
                (r((2, 3, 3, 4)), 2), {"x": 0}),
        OpCheck("linear", F.linear_forward, F.linear_backward,
                (r((5, 7)), r((3, 7)), r(3)), {"x": 0, "w": 1, "b": 2}),
        OpCheck("group_norm G=2", F.group_norm_forward, F.group_norm_backward,
                (r((2, 4, 3, 5)), r(4), r(4), 2), {"x": 0, "gamma": 1, "beta": 2}),
        OpCheck("frozen_batch_norm eps=0", F.frozen_batch_norm_forward, F.frozen_batch_norm_backward,
                (r((2, 4, 3, 5)), r(4), r(4), r(4), rng.uniform(0.5, 2.0, 4)), {"x": 0}),
        OpCheck("roi_align aligned sr=2", F.roi_align_forward, F.roi_align_backward,
                (feats, rois, (3, 2), 0.5, 2, True), {"features": 0}),
        OpCheck("roi_align legacy adaptive", F.roi_align_forward, F.roi_align_backward,
                (feats, rois, 4, 0.5, 0, False), {"features": 0}),
        OpCheck("roi_pool", F.roi_pool_forward, F.roi_pool_backward,
                (_distinct(rng, (2, 3, 6, 7)), rois, (2, 3), 0.5), {"features": 0}),
        OpCheck("softmax_cross_entropy", F.softmax_cross_entropy_forward,
                F.softmax_cross_entropy_backward,
                (r((6, n_cls)) * 3, rng.integers(0, n_cls, 6)), {"logits": 0}),
        OpCheck("smooth_l1 beta=1/9", F.smooth_l1_forward, F.smooth_l1_backward,
                (_away_from_zero(rng, (5, 4), 0.2), np.zeros((5, 4))), {"pred": 0}, {"beta": 1 / 9}),
        OpCheck("smooth_l1 beta=1 (quadratic part)", F.smooth_l1_forward, F.smooth_l1_backward,
                (rng.uniform(-0.9, 0.9, (5, 4)), np.zeros((5, 4))), {"pred": 0}, {"beta": 1.0}),
        OpCheck("sigmoid_bce_with_logits", F.sigmoid_bce_with_logits_forward,
                F.sigmoid_bce_with_logits_backward,
                (r((3, 4, 4)) * 4, (rng.uniform(size=(3, 4, 4)) > 0.5).astype(float)), {"logits": 0}),
    ]


def run_all(seed=0, h=1e-6):
    """Run every :func:`op_checks` row; returns ``[(op name, input name, error), ...]``."""
    return [(c.name, name, err) for c in op_checks(seed) for name, err in c.run(h).items()]


def format_table(rows, tol=1e-6):
    """Render :func:`run_all`'s rows as a fixed-width table with an ok/FAIL column."""
    width = max(len(op) for op, _, _ in rows)
    lines = [f"{'op':<{width}}  {'input':<9} {'rel. error':>10}  (float64, central differences)",
             "-" * (width + 34)]
    for op, name, err in rows:
        lines.append(f"{op:<{width}}  {name:<9} {err:>10.2e}  {'ok' if err < tol else 'FAIL'}")
    return "\n".join(lines)
