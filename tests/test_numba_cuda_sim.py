"""The numba-cuda backend's kernels, checked on the CPU by Numba's CUDA simulator.

``NUMBA_ENABLE_CUDASIM=1`` must be set before ``numba.cuda`` is first imported, and it would change
``numba.cuda`` for every other test of this process, so the simulator tests (``tests/numba_cuda_sim/``)
run in a child pytest with the variable set; this test fails if any of them fails, and shows the
child's output. About a minute on 2 cores.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_numba_cuda_kernels_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("MRCNN_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "numba_cuda_sim"), "-q", "-p", "no:cacheprovider",
         "-W", "ignore::RuntimeWarning"],
        cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"simulator tests failed (exit {proc.returncode}):\n{output}"
    assert " passed" in output and "no tests ran" not in output, output


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="needs the numba-cuda package (and NVVM/NVRTC), not a GPU")
def test_numba_cuda_kernels_compile_for_a_real_gpu():
    """Every kernel through Numba's real CUDA compiler to PTX for sm_90, float32 and float64, and no
    float64 arithmetic in a float32 kernel (see tests/numba_cuda_sim/compile_ptx.py)."""
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.pop("MRCNN_BACKEND", None)
    proc = subprocess.run([sys.executable, str(HERE / "numba_cuda_sim" / "compile_ptx.py")],
                          cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    if proc.returncode == 3:
        pytest.skip(output.strip().splitlines()[-1])
    assert proc.returncode == 0, output
