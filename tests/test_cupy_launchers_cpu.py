"""The ``cupy`` backend end to end on the CPU: ``set_backend("cupy")`` with a stand-in for CuPy
(``cupy_on_cpu``: NumPy arrays, and a RawModule that compiles the launcher's CUDA source with g++ and
the emulation header). So the launchers' Python (shapes, dtypes, caches, grids, the C type of every
kernel argument), the dispatch and the kernels run together and are compared with the reference,
through ``mrcnn_np.functional``, before any GPU sees them. Small sizes: the emulation is serial.

The checks themselves are ``check_pair`` of tests/parity_checks.py, which tests/test_gpu_parity.py
runs, bigger, with the real CuPy on a GPU.
"""
from __future__ import annotations


import numpy as np
import pytest

import mrcnn_np
from mrcnn_np import dispatch
from mrcnn_np import functional as F
from mrcnn_np.backends.cupy import _module

import cupy_on_cpu
from parity_checks import _rois, assert_masks_match, check_pair, check_training_step

pytestmark = pytest.mark.skipif(
    cupy_on_cpu.GXX is None, reason="g++ not found: the CPU emulation of the CUDA kernels needs it")

DTYPES = [np.float32, np.float64]


@pytest.fixture
def cp():
    """The cupy backend, active, on the stand-in; everything it touched is put back afterwards (a
    real CuPy later in the session must not find launchers bound to the stand-in)."""
    with cupy_on_cpu.activate() as shim:
        yield shim


def test_cupy_backend_registers_every_kernel(cp):
    assert mrcnn_np.get_backend().xp is cp
    expected = {f"{p}_{d}" for p in ("roi_align", "roi_pool", "conv2d", "conv_transpose2d",
                                     "group_norm", "max_pool2d", "softmax_cross_entropy",
                                     "smooth_l1", "sigmoid_bce_with_logits")
                for d in ("forward", "backward")} | {"nms", "batched_nms", "paste_masks"}
    assert set(dispatch.kernels_of("cupy")) == expected


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("aligned,sr", [(True, 0), (False, 0), (True, 2), (False, 1)])
def test_roi_align(cp, dt, aligned, sr):
    rng = np.random.default_rng(sr)
    features = rng.standard_normal((2, 3, 8, 10)).astype(dt)
    rois = _rois(rng, 2, 8, 10, 0.5, 20, dt)
    check_pair(cp, "roi_align", (features, rois),
               dict(output_size=(3, 2), spatial_scale=0.5, sampling_ratio=sr, aligned=aligned), dt)
    check_pair(cp, "roi_align", (features, np.zeros((0, 5), dt)),
               dict(output_size=2, spatial_scale=0.5, sampling_ratio=sr, aligned=aligned), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_roi_pool(cp, dt):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((2, 3, 8, 10)).astype(dt)
    rois = _rois(rng, 2, 8, 10, 0.5, 20, dt)
    check_pair(cp, "roi_pool", (features, rois), dict(output_size=3, spatial_scale=0.5), dt)


@pytest.mark.parametrize("dt", DTYPES + [np.int64])
@pytest.mark.parametrize("n", [0, 1, 70])
def test_nms_and_batched_nms(cp, dt, n):
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 60, (n, 2))
    boxes = np.round(np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2))], axis=1)).astype(dt)
    scores = np.round(rng.uniform(0, 1, n), 1)
    if dt != np.int64:
        scores = scores.astype(dt)
    labels = rng.integers(0, 3, n)
    for t in (0.0, 0.5, 0.7):
        got = F.nms(cp.asarray(boxes), cp.asarray(scores), t)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, F.nms.reference(boxes, scores, t))
        got = F.batched_nms(cp.asarray(boxes), cp.asarray(scores), cp.asarray(labels), t)
        np.testing.assert_array_equal(got, F.batched_nms.reference(boxes, scores, labels, t))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p,bias", [(3, 1, 1, True), (3, 2, 1, False), (1, 2, 0, True)])
def test_conv2d(cp, dt, k, s, p, bias):
    rng = np.random.default_rng(k + s)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dt)
    w = rng.standard_normal((4, 3, k, k)).astype(dt)
    b = rng.standard_normal(4).astype(dt) if bias else None
    check_pair(cp, "conv2d", (x, w, b), dict(stride=s, padding=p), dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p,bias", [(2, 2, 0, True), (3, 2, 1, False)])
def test_conv_transpose2d(cp, dt, k, s, p, bias):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 3, 4, 5)).astype(dt)
    w = rng.standard_normal((3, 4, k, k)).astype(dt)
    b = rng.standard_normal(4).astype(dt) if bias else None
    check_pair(cp, "conv_transpose2d", (x, w, b), dict(stride=s, padding=p), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_group_norm(cp, dt):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 8, 5, 4)) * 2 + 1).astype(dt)
    gamma, beta = rng.standard_normal(8).astype(dt), rng.standard_normal(8).astype(dt)
    check_pair(cp, "group_norm", (x, gamma, beta, 4), {}, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_max_pool2d(cp, dt):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dt)
    x[0, 0, :4, :4] = 0.25
    check_pair(cp, "max_pool2d", (x, 3, 2, 1), {}, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [0, 300])
def test_losses(cp, dt, n):
    rng = np.random.default_rng(n)
    logits = (rng.standard_normal((n, 4)) * 4).astype(dt)
    if n:
        logits[0] = [1000, -1000, 0, 1000]
    check_pair(cp, "softmax_cross_entropy", (logits, rng.integers(0, 4, n)), {}, dt, dout=1.3)
    pred, target = logits.copy(), (rng.standard_normal((n, 4)) * 4).astype(dt)
    check_pair(cp, "smooth_l1", (pred, target), dict(beta=1 / 9), dt, dout=0.7)
    check_pair(cp, "smooth_l1", (pred, target), dict(beta=0.0), dt, dout=0.7)
    t = (rng.uniform(size=(n, 4)) > 0.5).astype(dt)
    check_pair(cp, "sigmoid_bce_with_logits", (logits, t), {}, dt, dout=1.0)


@pytest.mark.parametrize("dt", DTYPES)
def test_paste_masks(cp, dt):
    from mrcnn_np.backends.cupy.paste import paste_masks
    rng = np.random.default_rng(7)
    masks = rng.uniform(size=(5, 6, 6)).astype(dt)
    boxes = np.array([[2.3, 1.7, 15.2, 12.9], [-5, -3, 8, 9], [10, 10, 30, 25], [4, 4, 4, 9],
                      [3.5, 2.5, 4.4, 3.4]])
    assert_masks_match(paste_masks(cp.asarray(masks), cp.asarray(boxes), (16, 20)), masks, boxes,
                       (16, 20))


def test_a_wrongly_typed_kernel_argument_is_caught(cp):
    """The stand-in's signature check works: a Python int where the kernel takes an ``int`` would be
    passed by CuPy as 8 bytes."""
    fn = _module.function("pool.cu", "max_pool2d_forward", np.float32)
    x = np.zeros((1, 1, 4, 4), np.float32)
    out, arg = np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.int32)
    args = [x] + [np.int32(v) for v in (1, 1, 4, 4, 2, 2, 2, 2, 0, 2, 2)] + [out, arg]
    fn((1,), (32,), tuple(args))
    args[1] = 1
    with pytest.raises(TypeError, match="argument 1 .*int32"):
        fn((1,), (32,), tuple(args))
    args[1], args[-1] = np.int32(1), arg.astype(np.int64)
    with pytest.raises(TypeError, match="int32 array"):
        fn((1,), (32,), tuple(args))


def test_training_step_matches_the_numpy_backend(cp):
    """The tiny model's training step (float64): losses and every parameter's gradient under the
    cupy backend (its kernels emulated) equal the numpy backend's."""
    check_training_step(cp)


def test_r50_tiny_detects_the_same_under_cupy(cp):
    """The r50 topology (7x7 stem and max-pool, folded FrozenBN, P6, torchvision's anchors and paste)
    through the cupy launchers: the reference's detections, from raw image to masks at its size."""
    from mrcnn_np.model import build_model, get_config
    image = (np.random.default_rng(0).random((120, 150, 3)) * 255).astype(np.uint8)
    mrcnn_np.set_backend("numpy")
    ref = build_model(get_config("r50_tiny"), seed=0).detect(image)[0]
    mrcnn_np.set_backend("cupy")
    got = build_model(get_config("r50_tiny"), seed=0).detect(image)[0]
    assert len(ref["boxes"]) == len(got["boxes"]) > 0
    assert np.array_equal(np.asarray(got["labels"]), ref["labels"])
    assert np.allclose(np.asarray(got["boxes"]), ref["boxes"], atol=1e-3)
    assert np.allclose(np.asarray(got["scores"]), ref["scores"], atol=1e-5)
    assert np.asarray(got["masks"]).shape == ref["masks"].shape == (len(ref["boxes"]), 120, 150)
    assert (np.asarray(got["masks"]) != ref["masks"]).mean() < 1e-3


@pytest.mark.parametrize("dt", DTYPES)
def test_empty_batches(cp, dt):
    """No RoIs (a model that detects nothing): the mask head's convs, deconv and GroupNorm get a batch
    of 0 and must return empty arrays of the right shape, as the reference does."""
    rng = np.random.default_rng(0)
    x = np.zeros((0, 4, 14, 14), dt)
    check_pair(cp, "conv2d", (x, rng.standard_normal((4, 4, 3, 3)).astype(dt), np.ones(4, dt)),
               dict(stride=1, padding=1), dt)
    check_pair(cp, "conv_transpose2d", (x, rng.standard_normal((4, 4, 2, 2)).astype(dt), None),
               dict(stride=2, padding=0), dt)
    check_pair(cp, "group_norm", (np.zeros((0, 8, 5, 4), dt), np.ones(8, dt), np.zeros(8, dt)),
               dict(num_groups=4), dt)
