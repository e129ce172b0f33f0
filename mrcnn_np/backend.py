"""The one backend switch: which array module (``xp``) and which kernels the model uses.

Choose once, before building a model, by any of

* ``mrcnn_np.set_backend("numba")`` in Python,
* ``MRCNN_BACKEND=numba`` in the environment (read at import),
* ``--backend numba`` on any ``mrcnn-np`` command.

Registered names: ``numpy`` (the default and the reference), ``numba`` (Numba CPU kernels), ``cupy``
(CuPy RawKernels from ``kernels/*.cu``) and ``numba-cuda`` (Numba CUDA kernels on CuPy arrays; under
``NUMBA_ENABLE_CUDASIM=1`` Numba's simulator runs them on NumPy arrays). A name that is unknown, or
whose library or GPU is missing, raises :class:`BackendError` saying what is missing and how to get
it. There is never a silent fallback to NumPy. Which ops have their own kernel under a backend is
kept in :mod:`mrcnn_np.dispatch` (``mrcnn-np backends`` prints it); the others run the reference.

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
    "to_numpy", "loaded_backend",
]


class BackendError(RuntimeError):
    """A backend was asked for that does not exist, is not implemented, or cannot run here."""


@dataclass(frozen=True)
class Backend:
    """A named backend: ``name``, its array module ``xp`` and whether it runs on a GPU."""

    name: str
    xp: object
    gpu: bool


# name -> (library it needs, how to get it, runs on a GPU?)
_REGISTRY = {
    "numpy": ("numpy", "pip install numpy", False),
    "numba": ("numba", "pip install numba", False),
    "cupy": ("cupy", "pip install -r requirements-gpu.txt (cupy-cuda13x; cupy-cuda12x for CUDA 12 "
                     "drivers) on a machine with an NVIDIA GPU", True),
    "numba-cuda": ("numba.cuda", "pip install -r requirements-gpu.txt (numba-cuda and CuPy) on a "
                                 "machine with an NVIDIA GPU", True),
}
BACKENDS = tuple(_REGISTRY)

_active: Backend | None = None
_loaded: dict[str, Backend] = {}


def _simulated_cuda() -> bool:
    """``NUMBA_ENABLE_CUDASIM=1``: Numba's CUDA simulator runs ``@cuda.jit`` kernels on the CPU."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _cupy_with_gpu(name: str, hint: str):
    """Import CuPy and make sure it sees a GPU; a clear BackendError saying which piece is missing."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        raise BackendError(f"backend {name!r} needs CuPy, which is missing ({exc}); install it "
                           f"with: {hint}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, or no device visible
        raise BackendError(f"backend {name!r}: CuPy is installed but finds no usable NVIDIA GPU or "
                           f"driver ({exc}); run it on a machine with a GPU and its driver") from exc
    if count < 1:
        raise BackendError(f"backend {name!r}: CuPy is installed but sees no GPU")
    return cupy


def _load(name: str) -> Backend:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise BackendError(
            f"backend: unknown name {name!r}; expected one of {', '.join(BACKENDS)}")
    if name in _loaded:
        return _loaded[name]
    lib, hint, gpu = _REGISTRY[name]
    try:
        importlib.import_module(lib)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BackendError(f"backend {name!r} needs the library {lib!r}, which is missing "
                           f"({exc}); install it with: {hint}") from exc
    if name == "numpy":
        backend = Backend("numpy", np, gpu=False)
    elif name == "numba":
        backend = Backend("numba", np, gpu=False)
    elif name == "cupy":
        backend = Backend("cupy", _cupy_with_gpu(name, hint), gpu=True)
    else:  # numba-cuda: CuPy owns the arrays, Numba CUDA kernels read them (__cuda_array_interface__)
        if _simulated_cuda():
            backend = Backend("numba-cuda", np, gpu=False)      # the simulator works on host arrays
        else:
            cupy = _cupy_with_gpu(name, hint)
            from numba import cuda
            if not cuda.is_available():
                raise BackendError(f"backend {name!r}: Numba finds no CUDA GPU or driver "
                                   f"({cuda.cuda_error() if hasattr(cuda, 'cuda_error') else ''})")
            backend = Backend("numba-cuda", cupy, gpu=True)
    if name != "numpy":
        # register the backend's kernels (mrcnn_np/backends/<name>/, one file per op family); its
        # load() also checks that it registered both halves of every forward/backward pair.
        # NOTE: this module never imports mrcnn_np.dispatch (which imports this one): the kernel
        # packages talk to the registry themselves.
        module = importlib.import_module(f"mrcnn_np.backends.{name.replace('-', '_')}")
        module.load()
    _loaded[name] = backend
    return backend


def loaded_backend(name: str) -> Backend:
    """A backend that was loaded before (its kernels made a cache, say); loads it if not."""
    return _loaded.get(name) or _load(name)


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
