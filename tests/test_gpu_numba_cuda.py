"""The numba-cuda backend on a real NVIDIA GPU (``make test-gpu``; marked ``gpu``).

Skipped unless ``set_backend("numba-cuda")`` works on a GPU (CuPy, numba-cuda and a device; not the
simulator). Runs

* every simulator case of ``tests/numba_cuda_sim/test_kernels_sim.py`` (the same edge cases) on CuPy
  arrays,
* every kernel at the demo model's sizes (many blocks, bins larger than a warp, NMS over many 64-box
  blocks, GroupNorm rows far longer than a block), forward and backward, float32 and float64,
* one training step of the ``tiny`` model: the same losses as numpy (rtol 1e-4 in float32) and the
  same parameter gradients.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import mrcnn_np
from mrcnn_np.backend import BackendError, to_numpy

sys.path.insert(0, str(Path(__file__).resolve().parent / "numba_cuda_sim"))

from numba_cuda_checks import (check_box_iou, check_op, check_pair, nms_boxes,  # noqa: E402
                               paste_reference_and_margin, rois_cases)
from test_kernels_sim import *  # noqa: E402,F401,F403  (the simulator's cases, on the GPU)

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]


@pytest.fixture
def numba_cuda():
    """The numba-cuda backend on a real GPU for one test (skips without one), then numpy again."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        pytest.skip("NUMBA_ENABLE_CUDASIM is set: these tests are for a real GPU")
    try:
        backend = mrcnn_np.set_backend("numba-cuda")
    except BackendError as exc:
        pytest.skip(f"numba-cuda backend unavailable here: {exc}")
    assert backend.gpu and backend.xp.__name__ == "cupy"
    yield backend
    mrcnn_np.set_backend("numpy")


# ---- every kernel at realistic sizes ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio,aligned", [(0, True), (2, True), (2, False), (1, False)])
def test_roi_align_at_demo_sizes(numba_cuda, dtype, sampling_ratio, aligned):
    rng = np.random.default_rng(sampling_ratio)
    features = rng.standard_normal((4, 16, 32, 32)).astype(dtype)
    rois = rois_cases(rng, 4, 32, 32, 0.25, dtype, n_random=200)
    for out in (7, 14):
        check_pair("roi_align", dict(features=features, rois=rois, output_size=out, spatial_scale=0.25,
                                     sampling_ratio=sampling_ratio, aligned=aligned), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_pool_at_demo_sizes(numba_cuda, dtype):
    rng = np.random.default_rng(1)
    features = rng.integers(-5, 6, (4, 16, 32, 32)).astype(dtype)
    rois = rois_cases(rng, 4, 32, 32, 0.25, dtype, n_random=200)
    check_pair("roi_pool", dict(features=features, rois=rois, output_size=7, spatial_scale=0.25),
               dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 63, 64, 65, 4000])
def test_nms_many_boxes(numba_cuda, dtype, n):
    rng = np.random.default_rng(n)
    boxes, scores = nms_boxes(rng, n, dtype, span=400.0)
    for t in (0.3, 0.5, 0.7):
        check_op("nms", dict(boxes=boxes, scores=scores, iou_threshold=t))
    check_op("batched_nms", dict(boxes=boxes, scores=scores, labels=rng.integers(0, 5, n),
                                 iou_threshold=0.5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_anchors_against_ground_truth(numba_cuda, dtype):
    rng = np.random.default_rng(6)
    anchors, _ = nms_boxes(rng, 5000, dtype, span=128.0)
    gt, _ = nms_boxes(rng, 7, dtype, span=128.0)
    check_box_iou(anchors, gt)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,cout,k,stride,padding", [
    ((4, 64, 32, 32), 64, 3, 1, 1), ((4, 32, 64, 64), 64, 3, 2, 1), ((4, 128, 16, 16), 64, 1, 1, 0),
    ((16, 64, 14, 14), 64, 3, 1, 1), ((2, 3, 64, 64), 16, 7, 2, 3)])
def test_conv2d_at_demo_sizes(numba_cuda, dtype, shape, cout, k, stride, padding):
    rng = np.random.default_rng(k)
    x = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal((cout, shape[1], k, k)) / np.sqrt(shape[1] * k * k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    check_pair("conv2d", dict(x=x, w=w, b=b, stride=stride, padding=padding), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d_mask_head(numba_cuda, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 64, 14, 14)).astype(dtype)
    w = (rng.standard_normal((64, 32, 2, 2)) / 16).astype(dtype)
    check_pair("conv_transpose2d", dict(x=x, w=w, b=rng.standard_normal(32).astype(dtype), stride=2,
                                        padding=0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,groups", [((4, 64, 32, 32), 16), ((2, 32, 8, 8), 32), ((2, 8, 50, 50), 1)])
def test_group_norm_at_demo_sizes(numba_cuda, dtype, shape, groups):
    rng = np.random.default_rng(groups)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    c = shape[1]
    check_pair("group_norm", dict(x=x, gamma=rng.standard_normal(c).astype(dtype),
                                  beta=rng.standard_normal(c).astype(dtype), num_groups=groups), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_at_demo_sizes(numba_cuda, dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (4, 32, 64, 64)).astype(dtype)          # ties
    check_pair("max_pool2d", dict(x=x, kernel_size=3, stride=2, padding=1), dtype)
    check_pair("max_pool2d", dict(x=x, kernel_size=1, stride=2, padding=0), dtype)   # FPN's P6


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_at_demo_sizes(numba_cuda, dtype):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((512, 4)) * 10).astype(dtype)
    check_pair("softmax_cross_entropy", dict(logits=logits, labels=rng.integers(0, 4, 512)), dtype,
               dout=1.0)
    pred = rng.standard_normal((128, 4)).astype(dtype)
    check_pair("smooth_l1", dict(pred=pred, target=rng.standard_normal((128, 4)).astype(dtype),
                                 beta=1 / 9), dtype, dout=1 / 512)
    x = (rng.standard_normal((128, 28, 28)) * 5).astype(dtype)
    check_pair("sigmoid_bce_with_logits", dict(logits=x, targets=(rng.random(x.shape) > 0.5)
                                               .astype(dtype)), dtype, dout=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_paste_masks_at_demo_sizes(numba_cuda, dtype):
    from mrcnn_np.backends.numba_cuda.paste import paste_masks
    rng = np.random.default_rng(5)
    masks = rng.random((30, 28, 28)).astype(dtype)
    xy = rng.uniform(-20, 120, (30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 60, (30, 2))], axis=1)
    ref, margin = paste_reference_and_margin(masks, boxes, (128, 128), 0.5)
    got = to_numpy(paste_masks(numba_cuda.xp.asarray(masks), numba_cuda.xp.asarray(boxes), (128, 128)))
    decided = margin > 1e-5
    np.testing.assert_array_equal(got[decided], ref[decided])


# ---- one training step of the tiny model ----------------------------------------------------------

@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-4), ("float64", 1e-9)])
def test_tiny_model_training_step_matches_numpy(numba_cuda, dtype, rtol):
    from mrcnn_np.model import build_model, get_config
    from test_model import fixed_proposals, toy_batch

    cfg = get_config("tiny", dtype=dtype)
    images, targets = toy_batch(cfg)
    proposals = fixed_proposals(targets)

    def step(name):
        xp = mrcnn_np.set_backend(name).xp
        model = build_model(cfg, seed=1)
        losses = model.forward_train(
            xp.asarray(images.astype(dtype)),
            [{k: xp.asarray(v) for k, v in t.items()} for t in targets],
            np.random.default_rng(5), proposals=[xp.asarray(p.astype(dtype)) for p in proposals])
        model.zero_grad()
        model.backward()
        return losses, {n: to_numpy(p.grad) for n, p in model.named_parameters().items()}

    ref_losses, ref_grads = step("numpy")
    losses, grads = step("numba-cuda")
    for name, value in ref_losses.items():
        np.testing.assert_allclose(losses[name], value, rtol=rtol, err_msg=name)
    assert grads.keys() == ref_grads.keys()
    grad_tol = 1e-3 if dtype == "float32" else 1e-8       # relative to each gradient's largest entry
    worst = {n: float(np.abs(grads[n] - g).max() / max(np.abs(g).max(), 1e-12))
             for n, g in ref_grads.items()}
    bad = {n: e for n, e in worst.items() if not e < grad_tol}
    assert not bad, bad
