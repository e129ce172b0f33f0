"""How often a training step and an inference pass make the host wait for the GPU, counted on the CPU
under the strict CuPy stand-in (``cupy_strict``), with budgets so that a removed sync stays removed.

A device -> host sync (``float(x)``, ``.get()``, ``nonzero``, a boolean mask, ...) stalls the host
until the GPU has finished everything queued before it, so the Python that launches the next kernels
cannot run ahead. Budgets (issue 21): at most 20 per training step, at most 5 per image at inference.
``benchmarks/sync_report.py`` prints the per-line table these totals come from.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import cupy_on_cpu
import cupy_strict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

pytestmark = pytest.mark.skipif(
    cupy_on_cpu.GXX is None, reason="g++ not found: the CPU emulation of the CUDA kernels needs it")

TRAIN_BUDGET = 20           # syncs per training step
INFER_BUDGET = 5            # syncs per image at inference


# ------------------------------------------------------------------ the counter itself
def test_counter_sees_each_kind_of_transfer_with_its_line():
    with cupy_strict.activate() as cp:
        a = cp.asarray(np.arange(6.0))                              # an upload
        with cupy_strict.counting() as log:
            float(a.sum())
            a[a > 2]                                                # boolean-mask read
            a[a > 4] = 0                                            # boolean-mask write
            cp.nonzero(a)
            a.get()
            b = a * 2 + 1                                           # device work: no sync
        kinds = sorted(k for k, _ in log.sync_sites)
        assert kinds == ["boolean-mask read", "boolean-mask write", "float()", "get", "nonzero"]
        assert all(site.startswith("tests/test_sync_budget.py:") for _, site in log.sync_sites)
        assert log.uploads == 0 and log.calls > 0
        assert isinstance(b, cp.ndarray)


def test_host_arrays_are_refused_as_on_a_gpu():
    with cupy_strict.activate() as cp:
        a = cp.zeros(3)
        with pytest.raises(TypeError, match="host"):
            a + np.ones(3)
        with pytest.raises(TypeError, match="Implicit conversion"):
            np.asarray(a)
        assert isinstance(a + np.float32(1), cp.ndarray)            # NumPy scalars are fine


# ------------------------------------------------------------------ the budgets
@pytest.fixture(scope="module")
def tiny_counts():
    import sync_report
    return sync_report.measure("tiny", batch=2, steps=2)


def test_training_step_sync_budget_tiny(tiny_counts):
    train, _, steps, _ = tiny_counts
    per_step = train.syncs / steps
    assert per_step <= TRAIN_BUDGET, "\n" + train.table(per=steps)


def test_training_step_sync_budget_demo():
    import sync_report
    train, _, steps, _ = sync_report.measure("demo", batch=4, steps=1, infer=False)
    assert train.syncs / steps <= TRAIN_BUDGET, "\n" + train.table(per=steps)


def test_inference_sync_budget_tiny(tiny_counts):
    _, infer, _, images = tiny_counts
    assert infer.syncs / images <= INFER_BUDGET, "\n" + infer.table(per=images)


def test_batched_inference_equals_image_by_image():
    """The RoI heads run the batch together (one pooling, one NMS); each image's detections must be
    what it gets alone."""
    import mrcnn_np
    from bench_step import make_batch
    from mrcnn_np.model import build_model, get_config
    mrcnn_np.set_backend("numpy")
    cfg = get_config("tiny", num_classes=3, dtype="float64", score_thresh=0.0)
    model = build_model(cfg, seed=0)
    images, _ = make_batch(3, cfg.image_size)
    together = model.predict(images.astype(np.float64))
    assert sum(len(d["scores"]) for d in together) > 0
    for i, got in enumerate(together):
        alone = model.predict(images[i:i + 1].astype(np.float64))[0]
        assert got.keys() == alone.keys()
        for k in got:
            np.testing.assert_allclose(got[k], alone[k], rtol=1e-9, atol=1e-9, err_msg=k)
