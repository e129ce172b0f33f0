"""Optimisation: SGD with momentum and weight decay, the learning-rate schedule, gradient clipping.

SGD (the update PyTorch's ``torch.optim.SGD`` makes, dampening 0). For each parameter ``p`` with
gradient ``g`` (the gradient of the total loss, as ``model.backward()`` left it in ``p.grad``)::

    g <- g + wd * p            weight decay (L2), skipped for the names no_decay(name) selects
    v <- mu * v + g            momentum buffer, v = 0 before the first step (so the first v is g)
    d <- g + mu * v            if nesterov, else d <- v
    p <- p - lr * d

Weight decay pulls weights towards zero; it is not applied to biases nor to GroupNorm's scale and
shift (``gamma``, ``beta``): those set an offset or a scale, and shrinking them towards 0 does not
regularise anything (a GroupNorm scale of 0 switches its channels off). The default
:func:`default_no_decay` picks them by name: a name ending in ``.bias``, or containing ``norm``
(case-insensitive, so ``backbone.stem.norm.weight``, ``...GroupNorm...``). Modules named otherwise
(``gn1``) need their own predicate: ``SGD(params, lr, no_decay=lambda name: ...)``.

Learning-rate schedule, for step ``t = 0, 1, ..., T-1`` (the index of the update about to be made)::

    lr(t) = base_lr * w(t) * d(t)

    w(t) = f + (1 - f) * t / W     for t < W, else 1      linear warm-up from f * base_lr
    d(t) = (1 + cos(pi * t / T)) / 2                      kind="cosine": 1 at t = 0, 0 at t = T
    d(t) = gamma ** #{m in steps : m <= t}                kind="step": x gamma at each milestone

with ``W = warmup_steps``, ``f = warmup_factor``, ``T = total_steps``. Warm-up keeps the first updates
small while the (randomly initialised) heads still produce large gradients.

Gradient clipping by global norm: ``n = sqrt(sum_p ||grad_p||^2)`` over all parameters; if ``n >
max_norm`` every gradient is scaled by ``max_norm / n``, so the direction of the update is kept and
only its length is limited.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from .backend import get_array_module

__all__ = ["SGD", "LRSchedule", "clip_grad_norm", "global_grad_norm", "default_no_decay"]


def default_no_decay(name: str) -> bool:
    """True for parameters that get no weight decay: biases (``*.bias``) and normalisation layers'
    parameters (any name containing ``norm``, case-insensitive)."""
    return name.endswith(".bias") or "norm" in name.lower()


def _check_number(name, value, low, low_ok=True):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or (value < low if low_ok else value <= low):
        bound = f">= {low}" if low_ok else f"> {low}"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")


class _Flat:
    """One contiguous buffer for the values, one for the gradients and one for the momentum of a group
    of parameters that share an array module and a dtype; each Parameter's ``data`` and ``grad``
    become views into them. Then an update, a norm or a zeroing is one array operation, however many
    parameters the model has (on a GPU: one launch instead of one per parameter, and no sync)."""

    def __init__(self, named: dict, decay: dict, weight_decay: float):
        first = next(iter(named.values())).data
        xp = get_array_module(first)
        total = sum(int(p.data.size) for p in named.values())
        self.data = xp.empty(total, dtype=first.dtype)
        self.grad = xp.empty(total, dtype=first.dtype)
        self.velocity = xp.zeros(total, dtype=first.dtype)
        wd = np.zeros(total, dtype=first.dtype)            # built on the host, uploaded once
        self.views = {}
        offset = 0
        for name, p in named.items():
            n, shape = int(p.data.size), p.data.shape
            data, grad = self.data[offset:offset + n], self.grad[offset:offset + n]
            data[...] = p.data.reshape(-1)
            grad[...] = p.grad.reshape(-1)
            # NOTE: rebinding is safe because every layer reads p.data / p.grad at each call and
            # writes them in place (+=, [...] =); nothing keeps the old arrays.
            p.data, p.grad = data.reshape(shape), grad.reshape(shape)
            self.views[name] = self.velocity[offset:offset + n].reshape(shape)
            if decay[name]:
                wd[offset:offset + n] = weight_decay
            offset += n
        self.weight_decay = xp.asarray(wd) if weight_decay > 0 else None


class SGD:
    """Stochastic gradient descent with momentum, weight decay and optional Nesterov momentum.

    ``params``: ``{name: Parameter}`` as ``model.named_parameters()`` returns it. ``lr`` is the default
    learning rate; the training loop passes each step's value from the schedule to :meth:`step`.
    The update is in the module docstring, made on flat buffers: the constructor moves the
    parameters' values and gradients into one buffer per (array module, dtype), so
    :meth:`step`, :meth:`zero_grad`, :meth:`grad_norm` and :meth:`clip_grad_norm` are a handful of
    array operations each, whatever the number of parameters, and never read a value back to the
    host. Momentum buffers live there too, keyed by parameter name in :meth:`state_dict`.
    """

    def __init__(self, params: dict, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
                 nesterov: bool = False, no_decay: Callable[[str], bool] = default_no_decay):
        if not isinstance(params, dict) or not params:
            raise ValueError(f"params: expected a non-empty dict {{name: Parameter}} (as "
                             f"model.named_parameters() gives), got {params!r:.80}")
        _check_number("lr", lr, 0.0)
        _check_number("momentum", momentum, 0.0)
        _check_number("weight_decay", weight_decay, 0.0)
        if nesterov and momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0, got momentum=0")
        self.params = dict(params)
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.decay = {name: weight_decay > 0 and not no_decay(name) for name in self.params}
        groups: dict = {}
        for name, p in self.params.items():
            key = (get_array_module(p.data).__name__, p.data.dtype)
            groups.setdefault(key, {})[name] = p
        self.groups = [_Flat(g, self.decay, weight_decay) for g in groups.values()]
        self.buffers = {name: v for g in self.groups for name, v in g.views.items()}

    def step(self, lr: float | None = None) -> None:
        """One update of every parameter from its ``.grad`` (``lr`` defaults to the constructor's)."""
        lr = self.lr if lr is None else lr
        mu = self.momentum
        for g in self.groups:
            d = g.grad if g.weight_decay is None else g.grad + g.weight_decay * g.data   # g + wd p
            g.velocity *= mu                                  # v <- mu v + g, in place
            g.velocity += d
            d = d + mu * g.velocity if self.nesterov else g.velocity
            g.data -= lr * d

    def zero_grad(self) -> None:
        for g in self.groups:
            g.grad.fill(0)

    def grad_norm(self):
        """``sqrt(sum_p ||p.grad||^2)`` as a 0-d array of the parameters' module: no host read."""
        total = None
        for g in self.groups:
            xp = get_array_module(g.grad)
            # NOTE: in float64, as global_grad_norm: a float32 sum of squares overflows once the norm
            # passes 1.8e19, and a finite (if huge) gradient would be reported as infinite
            g64 = g.grad.astype(xp.float64, copy=False)
            sq = xp.dot(g64, g64)
            total = sq if total is None else total + sq
        return get_array_module(total).sqrt(total)

    def clip_grad_norm(self, max_norm: float):
        """:func:`clip_grad_norm` on the flat gradients, decided on the device: every gradient is
        scaled by ``max_norm / (n + 1e-6)`` where ``n > max_norm``, by 1 otherwise (a non-finite
        ``n`` included). Returns ``n`` before clipping, a 0-d array."""
        _check_number("max_norm", max_norm, 0.0, low_ok=False)
        norm = self.grad_norm()
        xp = get_array_module(norm)
        scale = xp.where(norm > max_norm, max_norm / (norm + 1e-6), 1.0)
        for g in self.groups:
            g.grad *= scale.astype(g.grad.dtype)
        return norm

    def state_dict(self) -> dict:
        """``{parameter name: momentum buffer}`` (copies, so later steps don't change them)."""
        return {name: v.copy() for name, v in self.buffers.items()}

    def load_state_dict(self, state: dict) -> None:
        """Set the momentum buffers from :meth:`state_dict`'s output; names and shapes must match."""
        missing = [n for n in self.buffers if n not in state]
        extra = [n for n in state if n not in self.buffers]
        if missing or extra:
            what = (f"missing buffer for parameter {missing[0]!r}" if missing
                    else f"buffer for unknown parameter {extra[0]!r}")
            raise ValueError(f"optimizer state: {what} ({len(missing)} missing, {len(extra)} unknown)")
        for name, v in self.buffers.items():
            src = state[name]
            if tuple(src.shape) != tuple(v.shape):
                raise ValueError(f"optimizer state: buffer {name!r} has shape {tuple(src.shape)}, "
                                 f"expected {tuple(v.shape)}")
        for name, v in self.buffers.items():
            v[...] = get_array_module(v).asarray(state[name], dtype=v.dtype)


class LRSchedule:
    """``schedule(t) -> lr`` for step ``t``: linear warm-up, then cosine or step decay (module docstring).

    ``steps`` are the milestones of ``kind="step"`` (e.g. ``(0.67 * T, 0.89 * T)`` rounded), where the
    rate is multiplied by ``gamma``.
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 warmup_factor: float = 0.001, kind: str = "cosine", steps: Iterable[int] = (),
                 gamma: float = 0.1):
        _check_number("base_lr", base_lr, 0.0, low_ok=False)
        for name, v, low in (("total_steps", total_steps, 1), ("warmup_steps", warmup_steps, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")
        if not 0.0 < warmup_factor <= 1.0:
            raise ValueError(f"warmup_factor: expected a number in (0, 1], got {warmup_factor!r}")
        if kind not in ("cosine", "step"):
            raise ValueError(f"kind: expected 'cosine' or 'step', got {kind!r}")
        steps = tuple(int(s) for s in steps)
        if list(steps) != sorted(steps) or any(s < 0 for s in steps):
            raise ValueError(f"steps: expected increasing non-negative milestones, got {steps!r}")
        _check_number("gamma", gamma, 0.0, low_ok=False)
        self.base_lr, self.total_steps = float(base_lr), int(total_steps)
        self.warmup_steps, self.warmup_factor = int(warmup_steps), float(warmup_factor)
        self.kind, self.steps, self.gamma = kind, steps, float(gamma)

    def warmup(self, t: int) -> float:
        """w(t): rises linearly from ``warmup_factor`` at t = 0 to 1 at t = warmup_steps."""
        if t >= self.warmup_steps:
            return 1.0
        return self.warmup_factor + (1.0 - self.warmup_factor) * t / self.warmup_steps

    def decay(self, t: int) -> float:
        """d(t): the cosine half-wave from 1 to 0 over ``total_steps``, or gamma per milestone passed."""
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(t, self.total_steps) / self.total_steps))
        return self.gamma ** sum(1 for m in self.steps if m <= t)

    def __call__(self, t: int) -> float:
        return self.base_lr * self.warmup(t) * self.decay(t)

    def as_dict(self) -> dict:
        """The settings, JSON-able (stored in checkpoints for the record)."""
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "warmup_factor": self.warmup_factor,
                "kind": self.kind, "steps": list(self.steps), "gamma": self.gamma}


def _as_parameters(params):
    return list(params.values()) if isinstance(params, dict) else list(params)


def global_grad_norm(params) -> float:
    """``sqrt(sum_p ||p.grad||^2)`` over ``params`` (a dict or an iterable of Parameters), in float64."""
    total = 0.0
    for p in _as_parameters(params):
        g = p.grad
        total += float((g.astype(np.float64, copy=False) ** 2).sum())
    return math.sqrt(total)


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients in place so that their global norm is at most ``max_norm``.

    Returns the norm *before* clipping (what one logs). A non-finite norm is returned as it is and
    nothing is scaled: the caller decides what to do (the training loop stops).
    """
    _check_number("max_norm", max_norm, 0.0, low_ok=False)
    params = _as_parameters(params)
    norm = global_grad_norm(params)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)                    # 1e-6: stay just under max_norm
        for p in params:
            p.grad *= p.grad.dtype.type(scale)
    return norm
