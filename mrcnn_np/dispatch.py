"""One registry from ``(backend, op)`` to a kernel, and the wrappers that route each call through it.

The NumPy code in :mod:`mrcnn_np.ops` is the specification. A backend (``mrcnn_np/backends/<name>/``)
registers kernels for *some* ops; :mod:`mrcnn_np.functional` exposes every op as a dispatched
function, so the model, which only calls ``functional``, runs the active backend's kernel where one
exists and the reference otherwise::

    functional.roi_align_forward(...)
       └─ kernel registered as ("numba", "roi_align_forward")   if the numba backend is active
       └─ ops.roi_align.roi_align_forward                         otherwise (the reference)

That fallback is per op and visible (``mrcnn-np backends`` lists which ops have their own kernel under
each backend); a backend that cannot run is still an error, never a quiet switch to NumPy.

What a kernel may rely on (checked here, once for all kernels, before it is called):

* the reference's own argument check ran first, so a bad shape, dtype or value gets the reference's
  ``ValueError`` naming the argument;
* every array argument is an array of the backend's module (``numpy`` for ``numba``, ``cupy`` for the
  GPU backends; a host array handed to a GPU kernel is a ``ValueError`` naming it), C-contiguous
  (copied if not: kernels index raw memory), and float arrays share the dtype of the first float
  argument (integer arrays stay integers; a kernel casts index arrays itself), except the arguments
  an op names in ``keep_dtype`` (``paste_masks``'s boxes: coordinates that every kernel reads in
  float64, which a cast to the masks' float32 would move by up to half an ulp).

Forward/backward pairs. A kernel's forward returns its own cache, which only that backend's backward
understands, so the cache is tagged with the backend that made it and the backward goes back to the
same backend, whatever is active by then. A backend registers both halves of a pair or neither.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from .backend import get_backend

__all__ = ["register", "kernel", "kernels_of", "dispatch_op", "dispatch_pair", "KernelCache", "OPS"]

_KERNELS: dict[tuple[str, str], object] = {}
_LAYOUT_ANY: set[tuple[str, str]] = set()     # kernels that accept any strides (no copy made)
OPS: list[str] = []                           # every dispatched op name, in registration order


def register(backend: str, op: str, any_layout: bool = False):
    """Decorator: make ``fn`` the ``backend``'s kernel for ``op`` (e.g. ``"roi_align_forward"``).

    ``any_layout=True`` says the kernel reads strided arrays itself, so the boundary makes no
    contiguous copy (e.g. Numba kernels that index an NCHW view of an NHWC buffer)."""
    def deco(fn):
        _KERNELS[(backend, op)] = fn
        if any_layout:
            _LAYOUT_ANY.add((backend, op))
        return fn
    return deco


def kernel(backend: str, op: str):
    """The kernel ``backend`` registered for ``op``, or None."""
    return _KERNELS.get((backend, op))


def kernels_of(backend: str) -> list[str]:
    """The ops that have their own kernel under ``backend`` (after it was loaded)."""
    return sorted(op for (b, op) in _KERNELS if b == backend)


class KernelCache:
    """A forward cache made by ``backend``'s kernel; its backward must run there too."""

    __slots__ = ("backend", "cache")

    def __init__(self, backend: str, cache):
        self.backend, self.cache = backend, cache


def _array_module_of(backend: str):
    from .backend import loaded_backend
    return loaded_backend(backend).xp


def _is_array(v) -> bool:
    # NumPy scalars (an upstream dloss of np.float32(1.5), say) have dtype and shape too, but they are
    # numbers, valid for every backend: only real arrays must live in the backend's module
    return (hasattr(v, "dtype") and hasattr(v, "shape") and hasattr(v, "strides")
            and not isinstance(v, np.generic))


def _binder(reference):
    """``bind(args, kwargs)`` -> ``{parameter name: value}`` with the defaults filled in, as
    ``inspect.Signature.bind`` + ``apply_defaults`` give it, but without their cost on every call
    (a training step makes hundreds of dispatched calls); anything unusual goes to ``Signature.bind``,
    which raises the usual ``TypeError``."""
    sig = inspect.signature(reference)
    names = tuple(sig.parameters)
    defaults = {n: p.default for n, p in sig.parameters.items() if p.default is not p.empty}

    def bind(args, kwargs):
        if len(args) <= len(names):
            arguments = dict(zip(names, args))
            if not arguments.keys() & kwargs.keys() and kwargs.keys() <= set(names):
                arguments.update(kwargs)
                for n in names[len(args):]:
                    if n not in arguments and n in defaults:
                        arguments[n] = defaults[n]
                if len(arguments) == len(names):
                    return {n: arguments[n] for n in names}
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    return bind


def _prepare(backend, op, xp, args: dict, keep_dtype=()):
    """The boundary every kernel call crosses: arrays of the backend's module, contiguous, one float
    dtype (but the arguments named in ``keep_dtype`` keep theirs). Returns the arguments as a dict."""
    float_dt = next((v.dtype for n, v in args.items()
                     if n not in keep_dtype and _is_array(v) and v.dtype.kind == "f"), None)
    copy_ok = (backend, op) not in _LAYOUT_ANY
    for name, v in args.items():
        if not _is_array(v):
            continue
        if not isinstance(v, xp.ndarray):
            raise ValueError(f"{name}: the {backend!r} backend's kernel for {op} expects a "
                             f"{xp.__name__} array, got {type(v).__module__}.{type(v).__name__}; "
                             f"move it with {xp.__name__}.asarray(...)")
        if v.dtype.kind == "f" and v.dtype != float_dt and name not in keep_dtype:
            v = v.astype(float_dt)
        if copy_ok and not v.flags.c_contiguous:
            v = xp.ascontiguousarray(v)
        args[name] = v
    return args


def dispatch_op(op: str, reference, check=None, keep_dtype=()):
    """A function with ``reference``'s signature that runs the active backend's kernel for ``op``
    when there is one (after ``check(**arguments)``, the reference's argument check).
    ``keep_dtype``: names of float arguments that the boundary does not cast to the common dtype."""
    bind = _binder(reference)
    keep_dtype = frozenset(keep_dtype)
    OPS.append(op)

    @functools.wraps(reference)
    def call(*args, **kwargs):
        b = get_backend()
        k = _KERNELS.get((b.name, op))
        if k is None:
            return reference(*args, **kwargs)
        arguments = bind(args, kwargs)
        if check is not None:
            check(**arguments)
        return k(**_prepare(b.name, op, b.xp, arguments, keep_dtype))

    call.reference = reference
    return call


def dispatch_pair(name: str, forward, backward, check=None):
    """``(forward, backward)`` dispatched as one pair ``name_forward`` / ``name_backward``: the
    forward's kernel cache is tagged, and the backward runs on the backend that made it."""
    fwd = dispatch_op(f"{name}_forward", forward, check)
    fwd_op, bwd_op = f"{name}_forward", f"{name}_backward"
    OPS.append(bwd_op)

    @functools.wraps(forward)
    def forward_call(*args, **kwargs):
        b = get_backend()
        if (b.name, fwd_op) not in _KERNELS:
            return forward(*args, **kwargs)
        out, cache = fwd(*args, **kwargs)
        return out, KernelCache(b.name, cache)

    @functools.wraps(backward)
    def backward_call(dout, cache):
        if isinstance(cache, KernelCache):
            b = cache.backend
            if _is_array(dout):
                xp = _array_module_of(b)
                if not isinstance(dout, xp.ndarray):
                    raise ValueError(f"dout: the {b!r} backend's kernel for {bwd_op} expects a "
                                     f"{xp.__name__} array, got {type(dout).__module__}."
                                     f"{type(dout).__name__}")
                if (b, bwd_op) not in _LAYOUT_ANY and not dout.flags.c_contiguous:
                    dout = xp.ascontiguousarray(dout)
            return _KERNELS[(b, bwd_op)](dout, cache.cache)
        return backward(dout, cache)

    forward_call.reference, backward_call.reference = forward, backward
    return forward_call, backward_call


def check_pairs_complete(backend: str) -> None:
    """A backend must register both halves of a pair: a forward kernel's cache means nothing to the
    reference backward. Each backend package's ``load()`` calls it after registering its kernels
    (so :mod:`mrcnn_np.backend`, which this module imports, never imports this one)."""
    ops = set(kernels_of(backend))
    for op in ops:
        if op.endswith("_forward") and op[:-8] + "_backward" not in ops:
            raise RuntimeError(f"backend {backend!r} registers {op} without {op[:-8]}_backward")
        if op.endswith("_backward") and op[:-9] + "_forward" not in ops:
            raise RuntimeError(f"backend {backend!r} registers {op} without {op[:-9]}_forward")
