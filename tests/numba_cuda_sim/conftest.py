"""The numba-cuda kernels under Numba's CUDA simulator.

These tests need ``NUMBA_ENABLE_CUDASIM=1`` set before ``numba.cuda`` is first imported, and the rest
of the suite must not run under it, so ``tests/test_numba_cuda_sim.py`` runs this folder in a child
process with the variable set. Run by hand:

    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python -m pytest tests/numba_cuda_sim -q

Without the variable (the ordinary ``pytest`` run) nothing here is collected.
"""
import os

import pytest

import mrcnn_np

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

if not SIMULATOR:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def numba_cuda():
    """The numba-cuda backend for one test (NumPy arrays under the simulator), then numpy again."""
    backend = mrcnn_np.set_backend("numba-cuda")
    assert backend.xp.__name__ == "numpy" and not backend.gpu
    yield backend
    mrcnn_np.set_backend("numpy")
