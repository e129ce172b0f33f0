"""The numba-cuda backend's kernels, checked on the CPU by Numba's CUDA simulator.

``NUMBA_ENABLE_CUDASIM=1`` must be set before ``numba.cuda`` is first imported, and it would change
``numba.cuda`` for every other test of this process, so the simulator tests (``tests/numba_cuda_sim/``)
run in a child pytest with the variable set; this test fails if any of them fails, and shows the
child's output. About a minute on 2 cores.
"""
import os
import subprocess
import sys
from pathlib import Path

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
