"""The backend switch: numpy works; everything else is a clear error, never a silent fallback."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import mrcnn_np
from mrcnn_np import backend
from mrcnn_np.backend import BackendError


@pytest.fixture(autouse=True)
def restore_backend():
    yield
    mrcnn_np.set_backend("numpy")


def test_numpy_is_the_default_and_reference():
    b = mrcnn_np.set_backend("numpy")
    assert b.name == "numpy" and mrcnn_np.xp() is np and mrcnn_np.get_backend() is b


def test_unknown_backend_names_the_choices():
    with pytest.raises(BackendError, match=r"unknown name 'torch'.*numpy, numba, cupy, numba-cuda"):
        mrcnn_np.set_backend("torch")


def test_numba_backend_loads_on_the_cpu():
    b = mrcnn_np.set_backend("numba")
    assert b.name == "numba" and mrcnn_np.xp() is np and not b.gpu


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
@pytest.mark.parametrize("name", ["cupy", "numba-cuda"])
def test_gpu_backends_without_cupy_say_what_is_missing(name, monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    with pytest.raises(BackendError, match=rf"(?i)backend '{name}'.*cupy.*requirements-gpu.txt"):
        mrcnn_np.set_backend(name)
    assert mrcnn_np.get_backend().name == "numpy"    # the failed switch changed nothing


def test_get_array_module_and_to_numpy():
    a = np.zeros(3)
    assert backend.get_array_module(a) is np
    assert backend.to_numpy(a) is a or np.shares_memory(backend.to_numpy(a), a)


def _run(args, env_backend=None):
    env = dict(os.environ)
    env.pop("MRCNN_BACKEND", None)
    if env_backend is not None:
        env["MRCNN_BACKEND"] = env_backend
    return subprocess.run([sys.executable, "-m", "mrcnn_np", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_environment_variable_is_read():
    code = "import mrcnn_np; print(mrcnn_np.get_backend().name)"
    env = dict(os.environ, MRCNN_BACKEND="no-such-backend")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "unknown name 'no-such-backend'" in r.stderr
    env["MRCNN_BACKEND"] = "numpy"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.stdout.strip() == "numpy"


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cli_backend_flag_errors_clearly():
    r = _run(["gradcheck", "--backend", "cupy"])
    assert r.returncode == 2 and "backend 'cupy'" in r.stderr and "Traceback" not in r.stderr


def test_cli_gradcheck_prints_every_op():
    r = _run(["gradcheck", "--backend", "numpy"])
    assert r.returncode == 0, r.stderr
    for op in ["conv2d", "conv_transpose2d", "max_pool2d", "relu", "upsample_nearest2d", "linear",
               "group_norm", "roi_align", "roi_pool", "softmax_cross_entropy", "smooth_l1",
               "sigmoid_bce_with_logits"]:
        assert op in r.stdout
    assert "FAIL" not in r.stdout
