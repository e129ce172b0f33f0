"""The one decorator every Numba CPU kernel of this backend uses, the thread count, the threading layer.

``kernel`` = ``@njit(parallel=True, cache=True, fastmath=False, error_model="numpy")``:

* ``parallel=True``: ``prange`` loops are split over Numba's threads (``NUMBA_NUM_THREADS``);
* ``cache=True``: the machine code is written next to the source (``__pycache__``), so only the very
  first run on a machine pays the compilation (see docs/backends.md, "Cold start");
* ``fastmath=False``: no reassociation, so results stay within rounding of the NumPy reference;
* ``error_model="numpy"``: a float division by zero gives inf/NaN as in NumPy (the reference relies on
  ``0/0 = NaN`` in NMS) instead of raising ``ZeroDivisionError``.

``serial`` is the same without ``parallel``, for inherently sequential kernels (greedy NMS) and for
small ones (the losses, box IoUs, RoIAlign's sample tables), where a parallel region's fork/join
(tens of microseconds; far more on a loaded machine) would cost more than the work.

Float32 stays float32: inside a kernel ``T = arr.dtype.type`` is the array's scalar type and every
constant or integer that meets a float is written ``T(...)`` (Numba, like NumPy, would otherwise
promote ``float32 * int64`` to float64).
"""
from __future__ import annotations

import os

import numba

# NOTE: the threading layer. A training step alternates Numba kernels and BLAS GEMMs many times. With
# Numba's OpenMP layer, OpenMP's workers spin after each kernel while OpenBLAS's workers spin after
# each GEMM; on a 2-core machine the two pools then take turns stealing the cores from each other:
# a demo step measured 0.99 s against 0.19 s with the "workqueue" layer, whose workers sleep (0.20 s
# with OpenMP and OMP_WAIT_POLICY=passive). So this backend asks for workqueue unless the user chose
# a layer (NUMBA_THREADING_LAYER). Its one limit: kernels must not be called from several Python
# threads at once (this project never does).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

kernel = numba.njit(parallel=True, cache=True, fastmath=False, error_model="numpy")
serial = numba.njit(parallel=False, cache=True, fastmath=False, error_model="numpy")


def num_threads() -> int:
    """Numba's thread count (the per-thread scatter buffers are sized by it)."""
    return numba.get_num_threads()
