"""Input checks shared by the ops: each raises ``ValueError`` naming the argument, what it got and what
was expected, so a wrong shape fails at the call that made it rather than deep inside a GEMM."""
from __future__ import annotations

import os

import numpy as np


def values_on_host(*arrays) -> bool:
    """True when checks that read an argument's *values* (a range, NaN, box order) should run: always
    for NumPy arrays, where reading is free; for device arrays only with ``MRCNN_CHECK_VALUES=1``,
    because each such read makes the host wait for the GPU (a sync). Data is validated on the host
    when it is loaded, before it is uploaded; the shape and dtype checks run everywhere."""
    return all(isinstance(a, np.ndarray) for a in arrays) or \
        os.environ.get("MRCNN_CHECK_VALUES", "0") not in ("", "0")


def check_ndim(name: str, a, ndim: int, layout: str) -> None:
    """``a`` must have ``ndim`` dimensions, laid out as ``layout`` (e.g. ``"(N, C, H, W)"``)."""
    if getattr(a, "ndim", None) != ndim:
        got = getattr(a, "shape", type(a).__name__)
        raise ValueError(f"{name}: expected a {ndim}-D array {layout}, got shape {got}")


def check_float(name: str, a) -> None:
    """``a`` must be a floating-point array (float32 or float64)."""
    if getattr(a, "dtype", None) is None or a.dtype.kind != "f":
        raise ValueError(f"{name}: expected a float32 or float64 array, got dtype "
                         f"{getattr(a, 'dtype', type(a).__name__)}")


def check_dim(name: str, a, axis: int, expected: int, what: str) -> None:
    """``a.shape[axis]`` must equal ``expected`` (``what`` says where that number comes from)."""
    if a.shape[axis] != expected:
        raise ValueError(f"{name}: expected shape[{axis}] == {expected} ({what}), "
                         f"got shape {tuple(a.shape)}")


def _check_int(name: str, v, minimum: int, what: str) -> int:
    if isinstance(v, bool) or not hasattr(v, "__index__") or int(v) < minimum:
        raise ValueError(f"{name}: expected a {what} integer, got {v!r}")
    return int(v)


def check_positive_int(name: str, v) -> int:
    """``v`` must be an integer >= 1; returns it as ``int``."""
    return _check_int(name, v, 1, "positive")


def check_nonneg_int(name: str, v) -> int:
    """``v`` must be an integer >= 0; returns it as ``int``."""
    return _check_int(name, v, 0, "non-negative")


def pair(name: str, v, positive: bool = True) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair -> ``(h, w)``, each checked positive (or non-negative)."""
    check = check_positive_int if positive else check_nonneg_int
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or an (h, w) pair, got {v!r}")
        return check(f"{name}[0]", v[0]), check(f"{name}[1]", v[1])
    x = check(name, v)
    return x, x
