"""Thin modules over :mod:`mrcnn_np.functional`: they hold parameters and their gradients, nothing more.

A module's ``forward(x)`` calls the op's ``*_forward`` and pushes the cache on a stack; ``backward(dout)``
pops the latest cache, calls ``*_backward``, *adds* the parameter gradients into ``Parameter.grad`` and
returns the input gradient. The stack is what lets one module be applied several times per step (the
RPN head is shared by every FPN level): backward runs in reverse order, so last in is first out.
Inside ``with no_cache():`` (inference) nothing is pushed, so memory does not grow.

A :class:`Buffer` is model state that is saved and loaded with the parameters but never trained
(a frozen BatchNorm's statistics): it has no gradient and the optimizer never sees it.
"""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .backend import get_array_module
from .backend import xp as _xp

__all__ = ["Parameter", "Buffer", "Module", "Conv2d", "ConvTranspose2d", "Linear", "GroupNorm",
           "FrozenBatchNorm2d", "ReLU", "MaxPool2d", "no_cache", "recording"]

_record_caches = True


class no_cache:
    """Context manager for inference: forwards keep no cache (there will be no backward)."""

    def __enter__(self):
        global _record_caches
        self._previous, _record_caches = _record_caches, False

    def __exit__(self, *exc):
        global _record_caches
        _record_caches = self._previous


def recording() -> bool:
    """True outside ``no_cache()``: forwards keep what their backward needs."""
    return _record_caches


class Parameter:
    """An array ``data`` with the gradient ``grad`` accumulated into it (zeros after ``zero_grad``)."""

    def __init__(self, data):
        self.data = data
        self.grad = _xp().zeros_like(data)

    @property
    def shape(self):
        return self.data.shape


class Buffer:
    """An array ``data`` that belongs to the model's state but is not trained (no ``grad``)."""

    def __init__(self, data):
        self.data = data

    @property
    def shape(self):
        return self.data.shape


class Module:
    """Base class: finds its parameters and sub-modules among its attributes (lists included)."""

    def __init__(self):
        self._caches = []

    def named_parameters(self, prefix=""):
        """``{"body.conv1.weight": Parameter, ...}`` in attribute order."""
        return self._named(Parameter, prefix)

    def named_buffers(self, prefix=""):
        """``{"backbone.stem.norm.running_mean": Buffer, ...}`` in attribute order."""
        return self._named(Buffer, prefix)

    def _named(self, kind, prefix):
        out = {}
        for name, value in vars(self).items():
            items = value if isinstance(value, (list, tuple)) else [value]
            for i, item in enumerate(items):
                key = f"{prefix}{name}" + (f".{i}" if isinstance(value, (list, tuple)) else "")
                if isinstance(item, kind):
                    out[key] = item
                elif isinstance(item, Module):
                    out.update(item._named(kind, key + "."))
        return out

    def zero_grad(self):
        for p in self.named_parameters().values():
            p.grad[...] = 0

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _push(self, cache):
        if _record_caches:
            self._caches.append(cache)

    def clear_caches(self):
        """Drop every pending cache of this module and its sub-modules (e.g. after a failed step)."""
        self._caches.clear()
        for value in vars(self).values():
            for item in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(item, Module):
                    item.clear_caches()

    def _pop(self):
        if not self._caches:
            raise RuntimeError(f"{type(self).__name__}.backward called more times than forward")
        return self._caches.pop()

    def _accumulate(self, dw, db):
        """Add a backward's weight and bias gradients into ``weight.grad`` / ``bias.grad``."""
        self.weight.grad += dw
        if getattr(self, "bias", None) is not None:
            self.bias.grad += db


def _kaiming(shape, fan_in, rng, dtype):
    """He-normal initialisation, std = sqrt(2 / fan_in): keeps activations' scale through ReLUs."""
    return _xp().asarray(rng.standard_normal(shape) * math.sqrt(2.0 / fan_in), dtype=dtype)


class Conv2d(Module):
    """y = conv2d(x, weight, bias); weight (C_out, C_in, k, k)."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0, bias=True, rng=None,
                 dtype="float32", std=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (c_out, c_in, kernel_size, kernel_size)
        w = (_kaiming(shape, c_in * kernel_size ** 2, rng, dtype) if std is None
             else _xp().asarray(rng.standard_normal(shape) * std, dtype=dtype))
        self.weight = Parameter(w)
        self.bias = Parameter(_xp().zeros(c_out, dtype=dtype)) if bias else None
        self.stride, self.padding = stride, padding

    def forward(self, x):
        out, cache = F.conv2d_forward(x, self.weight.data, self.bias.data if self.bias else None,
                                      self.stride, self.padding)
        self._push(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.conv2d_backward(dout, self._pop())
        self._accumulate(dw, db)
        return dx


class ConvTranspose2d(Module):
    """y = conv_transpose2d(x, weight, bias); weight (C_in, C_out, k, k)."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0, bias=True, rng=None,
                 dtype="float32"):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        # fan-in of an output pixel of a stride-s transposed conv: C_in * (k / s)^2 taps
        fan_in = max(1, c_in * (kernel_size // max(stride, 1)) ** 2)
        self.weight = Parameter(_kaiming((c_in, c_out, kernel_size, kernel_size), fan_in, rng, dtype))
        self.bias = Parameter(_xp().zeros(c_out, dtype=dtype)) if bias else None
        self.stride, self.padding = stride, padding

    def forward(self, x):
        out, cache = F.conv_transpose2d_forward(x, self.weight.data,
                                                self.bias.data if self.bias else None,
                                                self.stride, self.padding)
        self._push(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.conv_transpose2d_backward(dout, self._pop())
        self._accumulate(dw, db)
        return dx


class Linear(Module):
    """y = x W^T + b; weight (out, in)."""

    def __init__(self, n_in, n_out, bias=True, rng=None, dtype="float32", std=None, bound=None):
        """Weights He-normal, or ``N(0, std^2)``, or with ``bound`` weights *and* bias ``U(-bound, bound)``
        (PyTorch's ``nn.Linear`` default is ``bound = 1/sqrt(n_in)``); otherwise the bias is 0."""
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        if bound is not None:
            self.weight = Parameter(_xp().asarray(rng.uniform(-bound, bound, (n_out, n_in)), dtype=dtype))
            self.bias = (Parameter(_xp().asarray(rng.uniform(-bound, bound, n_out), dtype=dtype))
                         if bias else None)
            return
        w = (_kaiming((n_out, n_in), n_in, rng, dtype) if std is None
             else _xp().asarray(rng.standard_normal((n_out, n_in)) * std, dtype=dtype))
        self.weight = Parameter(w)
        self.bias = Parameter(_xp().zeros(n_out, dtype=dtype)) if bias else None

    def forward(self, x):
        out, cache = F.linear_forward(x, self.weight.data, self.bias.data if self.bias else None)
        self._push(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.linear_backward(dout, self._pop())
        self._accumulate(dw, db)
        return dx


class GroupNorm(Module):
    """y = group_norm(x, gamma, beta, num_groups); gamma starts at 1, beta at 0."""

    def __init__(self, num_groups, channels, eps=1e-5, dtype="float32"):
        super().__init__()
        self.weight = Parameter(_xp().ones(channels, dtype=dtype))
        self.bias = Parameter(_xp().zeros(channels, dtype=dtype))
        self.num_groups, self.eps = num_groups, eps

    def forward(self, x):
        out, cache = F.group_norm_forward(x, self.weight.data, self.bias.data, self.num_groups, self.eps)
        self._push(cache)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = F.group_norm_backward(dout, self._pop())
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx


class FrozenBatchNorm2d(Module):
    """y = x * s + t per channel, from the frozen ``weight, bias, running_mean, running_var``
    (buffers; see :mod:`mrcnn_np.ops.norm`). Starts as the identity (w = 1, b = 0, mean 0, var 1)."""

    def __init__(self, channels, eps=0.0, dtype="float32"):
        super().__init__()
        xp = _xp()
        self.weight = Buffer(xp.ones(channels, dtype=dtype))
        self.bias = Buffer(xp.zeros(channels, dtype=dtype))
        self.running_mean = Buffer(xp.zeros(channels, dtype=dtype))
        self.running_var = Buffer(xp.ones(channels, dtype=dtype))
        self.eps = eps

    def arrays(self):
        return (self.weight.data, self.bias.data, self.running_mean.data, self.running_var.data)

    def forward(self, x):
        out, cache = F.frozen_batch_norm_forward(x, *self.arrays(), self.eps)
        self._push(cache)
        return out

    def backward(self, dout):
        return F.frozen_batch_norm_backward(dout, self._pop())


#: ``ReLU(inplace=True)`` modules overwrite their input during inference when this is True (the
#: default); ``benchmarks/bench_r50.py --ablations`` switches it off to measure what it gives.
INPLACE_RELU = True


class ReLU(Module):
    """``inplace=True`` overwrites its input during inference (no cache, no second buffer); use it
    only where the input is a fresh array nobody else reads (a conv's output)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        if self.inplace and INPLACE_RELU and not _record_caches:
            return get_array_module(x).maximum(x, 0, out=x)
        out, cache = F.relu_forward(x)
        self._push(cache)
        return out

    def backward(self, dout):
        return F.relu_backward(dout, self._pop())


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        out, cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._push(cache)
        return out

    def backward(self, dout):
        return F.max_pool2d_backward(dout, self._pop())
