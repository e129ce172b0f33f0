"""The one backend switch: which array module (``xp``) and which kernels the model uses.

Choose once, before building a model, by any of

* ``mrcnn_np.set_backend("numba")`` in Python,
* ``MRCNN_BACKEND=numba`` in the environment (read at import),
* ``--backend numba`` on any ``mrcnn-np`` command.

Registered names: ``numpy`` (the default and the reference), ``numba`` (Numba CPU kernels), ``cupy``
(CuPy RawKernels from ``kernels/*.cu``) and ``numba-cuda`` (Numba CUDA kernels). A name that is unknown,
not implemented yet, or whose library or GPU is missing raises :class:`BackendError` saying what is
missing and how to get it. There is never a silent fallback to NumPy.

Array code asks for its module with :func:`xp` (the active backend's) or :func:`get_array_module`
(the module an existing array belongs to), in the spirit of ``cupy.get_array_module``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BackendError", "Backend", "BACKENDS", "set_backend", "get_backend", "xp", "get_array_module",
    "to_numpy",
]


class BackendError(RuntimeError):
    """A backend was asked for that does not exist, is not implemented, or cannot run here."""


@dataclass(frozen=True)
class Backend:
    """A named backend: ``name``, its array module ``xp`` and whether it runs on a GPU."""

    name: str
    xp: object
    gpu: bool


# name -> (library it needs, pip hint, implemented yet?, runs on a GPU?)
_REGISTRY = {
    "numpy": ("numpy", "pip install numpy", True, False),
    "numba": ("numba", "pip install numba", False, False),
    "cupy": ("cupy", "pip install cupy-cuda12x (needs an NVIDIA GPU and CUDA 12)", False, True),
    "numba-cuda": ("numba.cuda", "pip install numba numba-cuda (needs an NVIDIA GPU)", False, True),
}
BACKENDS = tuple(_REGISTRY)

_active: Backend | None = None


def _load(name: str) -> Backend:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise BackendError(
            f"backend: unknown name {name!r}; expected one of {', '.join(BACKENDS)}")
    lib, hint, implemented, gpu = _REGISTRY[name]
    if not implemented:
        raise BackendError(
            f"backend {name!r} is registered but not implemented yet in this version of mrcnn-np; "
            f"use 'numpy' (the reference)")
    try:
        importlib.import_module(lib)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BackendError(f"backend {name!r} needs the library {lib!r}, which is missing "
                           f"({exc}); install it with: {hint}") from exc
    if name == "numpy":
        return Backend("numpy", np, gpu=False)
    raise BackendError(f"backend {name!r}: no loader")  # pragma: no cover


def set_backend(name: str) -> Backend:
    """Make ``name`` the active backend and return it; raises :class:`BackendError` if it can't run."""
    global _active
    _active = _load(name)
    return _active


def get_backend() -> Backend:
    """The active backend; on first use it is ``$MRCNN_BACKEND`` or ``numpy``."""
    global _active
    if _active is None:
        _active = _load(os.environ.get("MRCNN_BACKEND", "numpy") or "numpy")
    return _active


def xp():
    """The active backend's array module (``numpy`` or ``cupy``)."""
    return get_backend().xp


def get_array_module(*arrays):
    """The array module the given arrays live in: ``cupy`` for CuPy arrays, else ``numpy``."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            return importlib.import_module("cupy")
    return np


def to_numpy(a):
    """Copy an array to host memory as a NumPy array (a no-op for NumPy arrays)."""
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)
