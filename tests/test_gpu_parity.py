"""On a GPU: every kernel of the ``cupy`` backend agrees with the NumPy reference, forward and backward,
float32 and float64, through the public entry (``mrcnn_np.functional`` after ``set_backend("cupy")``).

Marked ``gpu``: ``make test-gpu`` runs these (with ``MRCNN_REQUIRE_GPU=1``: a backend that cannot
start is a failure there); under ``make test`` the module skips, once, with the reason, where the
backend cannot load (no CuPy, no GPU or no driver). The comparisons are ``parity_checks.check_pair``,
which tests/test_cupy_launchers_cpu.py also runs on the CPU with a stand-in for CuPy; and
``make test-gpu-emulated`` runs this whole file through that stand-in (slow: about 2 minutes).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import mrcnn_np
from mrcnn_np import dispatch
from mrcnn_np import functional as F
from mrcnn_np.backend import BackendError, loaded_backend

from parity_checks import _host, _rois, assert_masks_match, check_pair, check_training_step

pytestmark = pytest.mark.gpu

if os.environ.get("MRCNN_CUPY_ON_CPU"):
    # make test-gpu-emulated: these same tests through tests/cupy_on_cpu.py (NumPy arrays, the
    # kernels compiled by g++ with the CPU emulation header), on a machine without a GPU. Run this
    # file alone that way: the stand-in stays in sys.modules for the rest of the session.
    import cupy_on_cpu
    sys.modules.setdefault("cupy", cupy_on_cpu.make_module())

try:                                                    # once, at collection: one skip line, not 80
    loaded_backend("cupy")
except BackendError as exc:
    if os.environ.get("MRCNN_REQUIRE_GPU"):             # make test-gpu: a GPU run must not skip
        raise RuntimeError(f"MRCNN_REQUIRE_GPU is set but the cupy backend cannot run: {exc}")
    pytest.skip(f"the cupy backend cannot run here: {exc}", allow_module_level=True)

DTYPES = [np.float32, np.float64]


@pytest.fixture
def cp():
    """The cupy backend, active for the test (skipped, saying why, where it cannot run)."""
    try:
        mrcnn_np.set_backend("cupy")
    except BackendError as exc:
        if os.environ.get("MRCNN_REQUIRE_GPU"):           # make test-gpu: a GPU run must not skip
            pytest.fail(f"MRCNN_REQUIRE_GPU is set but the cupy backend cannot run: {exc}")
        pytest.skip(f"the cupy backend cannot run here: {exc}")
    import cupy
    try:
        yield cupy
    finally:
        mrcnn_np.set_backend("numpy")


def test_every_op_has_a_cupy_kernel(cp):
    expected = {f"{p}_{d}" for p in ("roi_align", "roi_pool", "conv2d", "conv_transpose2d",
                                     "group_norm", "max_pool2d", "softmax_cross_entropy",
                                     "smooth_l1", "sigmoid_bce_with_logits")
                for d in ("forward", "backward")} | {"nms", "batched_nms", "paste_masks"}
    assert set(dispatch.kernels_of("cupy")) == expected


# ---------------------------------------------------------------- RoIAlign / RoIPool
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sr", [0, 1, 2])
def test_roi_align(cp, dt, aligned, sr):
    rng = np.random.default_rng(sr)
    features = rng.standard_normal((2, 8, 16, 20)).astype(dt)
    for scale, out in ((0.25, 7), (0.5, (14, 14)), (1.0, (2, 3))):
        rois = _rois(rng, 2, 16, 20, scale, 300, dt)
        check_pair(cp, "roi_align", (features, rois), dict(output_size=out, spatial_scale=scale,
                                                           sampling_ratio=sr, aligned=aligned), dt)
    check_pair(cp, "roi_align", (features, np.zeros((0, 5), dt)),
               dict(output_size=7, spatial_scale=0.25, sampling_ratio=sr, aligned=aligned), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_roi_pool(cp, dt):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((2, 8, 16, 20)).astype(dt)
    features[0, :, :6, :6] = 0.5                                   # ties: the first max wins
    for scale, out in ((0.25, 7), (0.5, (3, 4)), (1.0, 2)):
        rois = _rois(rng, 2, 16, 20, scale, 200, dt)
        check_pair(cp, "roi_pool", (features, rois), dict(output_size=out, spatial_scale=scale), dt)


# ---------------------------------------------------------------- NMS
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 500, 4000])
def test_nms_and_batched_nms(cp, dt, n):
    rng = np.random.default_rng(n)
    for integer in (False, True):
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 60, (n, 2))], axis=1)
        if integer:
            boxes = np.round(boxes)                               # IoUs exactly at thresholds
        boxes = boxes.astype(dt)
        scores = np.round(rng.uniform(0, 1, n), 2).astype(dt)     # ties
        labels = rng.integers(0, 5, n)
        for t in (0.0, 0.3, 0.5, 0.7):
            want = F.nms.reference(boxes, scores, t)
            got = F.nms(cp.asarray(boxes), cp.asarray(scores), t)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(_host(got), want)
            want = F.batched_nms.reference(boxes, scores, labels, t)
            got = F.batched_nms(cp.asarray(boxes), cp.asarray(scores), cp.asarray(labels), t)
            np.testing.assert_array_equal(_host(got), want)


def test_nms_iou_at_threshold_and_score_ties(cp):
    boxes = np.array([[0, 0, 4, 1], [0, 0, 2, 1], [1, 0, 3, 1], [0, 0, 4, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.8, 0.9], np.float32)
    for t in (0.5, 1 / 3, 0.49, 0.2):
        np.testing.assert_array_equal(_host(F.nms(cp.asarray(boxes), cp.asarray(scores), t)),
                                      F.nms.reference(boxes, scores, t))


# ---------------------------------------------------------------- conv
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p,bias", [(3, 1, 1, True), (3, 2, 1, False), (1, 1, 0, True),
                                        (1, 2, 0, True), (7, 2, 3, False), (2, 2, 0, True)])
def test_conv2d(cp, dt, k, s, p, bias):
    rng = np.random.default_rng(k + s)
    x = rng.standard_normal((2, 5, 17, 16)).astype(dt)
    w = (rng.standard_normal((6, 5, k, k)) / k).astype(dt)
    b = rng.standard_normal(6).astype(dt) if bias else None
    check_pair(cp, "conv2d", (x, w, b), dict(stride=s, padding=p), dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p,bias", [(2, 2, 0, True), (3, 2, 1, False), (4, 2, 1, True)])
def test_conv_transpose2d(cp, dt, k, s, p, bias):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((3, 5, 7, 6)).astype(dt)
    w = rng.standard_normal((5, 4, k, k)).astype(dt)
    b = rng.standard_normal(4).astype(dt) if bias else None
    check_pair(cp, "conv_transpose2d", (x, w, b), dict(stride=s, padding=p), dt)


# ---------------------------------------------------------------- GroupNorm, max pool
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,groups", [((2, 32, 9, 7), 8), ((4, 64, 32, 32), 16),
                                          ((3, 4, 1, 1), 4)])
def test_group_norm(cp, dt, shape, groups):
    rng = np.random.default_rng(groups)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dt)
    gamma = rng.standard_normal(shape[1]).astype(dt)
    beta = rng.standard_normal(shape[1]).astype(dt)
    check_pair(cp, "group_norm", (x, gamma, beta, groups), {}, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (1, 2, 0), ((3, 2), (1, 2), 1)])
def test_max_pool2d(cp, dt, k, s, p):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 15, 12)).astype(dt)
    x[0, 0, :5, :5] = 0.25                                        # ties
    check_pair(cp, "max_pool2d", (x, k, s, p), {}, dt)


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 512, 5000])
def test_softmax_cross_entropy(cp, dt, n):
    rng = np.random.default_rng(n)
    logits = (rng.standard_normal((n, 5)) * 4).astype(dt)
    if n > 1:
        logits[0] = [1000, -1000, 0, 1000, -1000]
        logits[1] = -1000
    labels = rng.integers(0, 5, n)
    check_pair(cp, "softmax_cross_entropy", (logits, labels), {}, dt, dout=1.3)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("beta", [0.0, 1 / 9, 1.0])
def test_smooth_l1(cp, dt, beta):
    rng = np.random.default_rng(2)
    pred = (rng.standard_normal((512, 4)) * 2).astype(dt)
    target = (rng.standard_normal((512, 4)) * 2).astype(dt)
    check_pair(cp, "smooth_l1", (pred, target), dict(beta=beta), dt, dout=0.7)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(0, 28, 28), (128, 28, 28)])
def test_sigmoid_bce_with_logits(cp, dt, shape):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 4).astype(dt)
    t = (rng.uniform(size=shape) > 0.5).astype(dt)
    if x.size:
        x[0, 0, :4] = [1000, -1000, 1000, -1000]
    check_pair(cp, "sigmoid_bce_with_logits", (x, t), {}, dt, dout=1.0)


# ---------------------------------------------------------------- mask pasting (the kernel directly)
@pytest.mark.parametrize("dt", DTYPES)
def test_paste_masks(cp, dt):
    from mrcnn_np.backends.cupy.paste import paste_masks
    rng = np.random.default_rng(7)
    d, m, h, w = 20, 28, 96, 128
    masks = rng.uniform(size=(d, m, m)).astype(dt)
    xy = rng.uniform(-10, 110, (d, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 50, (d, 2))], axis=1)
    assert_masks_match(paste_masks(cp.asarray(masks), cp.asarray(boxes), (h, w)), masks, boxes,
                       (h, w))


# ---------------------------------------------------------------- the model, end to end
def test_training_step_matches_the_numpy_backend(cp):
    """The tiny model's training step (float64) on the GPU: losses and every gradient equal the numpy
    backend's. End to end, so a failure here can also be model code that mixes host and device
    arrays, not only a kernel (the per-op tests above tell which)."""
    check_training_step(cp)
