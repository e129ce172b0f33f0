"""Kernels for the ops, one package per backend, one file per op family (beside the reference's name).

``mrcnn_np/backends/<backend>/<op family>.py`` registers its kernels with
:func:`mrcnn_np.dispatch.register` when imported; the package's ``load()`` imports every such file.
:func:`mrcnn_np.set_backend` calls it once, after checking that the backend's library (and GPU) is
there. Kernels mirror :mod:`mrcnn_np.ops` (the NumPy reference, the specification) and are tested
against it.

* ``numba``       Numba CPU kernels, ``@njit(parallel=True, cache=True)``, on NumPy arrays
* ``cupy``        CUDA C from ``kernels/*.cu``, compiled by ``cupy.RawModule``, on CuPy arrays
* ``numba_cuda``  the same kernels as ``@cuda.jit`` functions, on CuPy arrays
"""
