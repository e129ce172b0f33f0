"""The numba backend against the NumPy reference: every kernel, forward and backward, float32 and
float64, random and edge cases; a whole training step; the gradient checks; bad input at the boundary.

Kernels are called both through ``mrcnn_np.functional`` (after ``set_backend("numba")``) and
directly; the reference is ``f.reference``. Compilation is cached (``cache=True``), so only the
first run on a machine pays for it."""
import numpy as np
import pytest

import mrcnn_np
from mrcnn_np import dispatch
from mrcnn_np import functional as F
from mrcnn_np.gradcheck import run_all

pytest.importorskip("numba")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(autouse=True)
def numba_backend():
    mrcnn_np.set_backend("numba")
    yield
    mrcnn_np.set_backend("numpy")


def close(a, b, dt, scale=1.0):
    tol = TOL[dt]
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=tol["rtol"], atol=tol["atol"] * scale)


def pair_parity(name, args, kwargs, dt, dout_seed=1, scale=1.0):
    """Run ``name``'s forward + backward under numba and the reference; compare everything."""
    fwd, bwd = getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward")
    out_k, cache_k = fwd(*args, **kwargs)
    assert isinstance(cache_k, dispatch.KernelCache) and cache_k.backend == "numba"
    out_r, cache_r = fwd.reference(*args, **kwargs)
    assert np.shape(out_k) == np.shape(out_r) and np.asarray(out_k).dtype == np.asarray(out_r).dtype
    close(out_k, out_r, dt, scale)
    rng = np.random.default_rng(dout_seed)
    dout = 1.5 if np.ndim(out_r) == 0 else rng.standard_normal(np.shape(out_r)).astype(dt)
    gk, gr = bwd(dout, cache_k), bwd.reference(dout, cache_r)
    gk, gr = (gk if isinstance(gk, tuple) else (gk,)), (gr if isinstance(gr, tuple) else (gr,))
    for a, b in zip(gk, gr):
        if b is None:
            assert a is None
            continue
        assert a.shape == b.shape and a.dtype == b.dtype
        close(a, b, dt, scale)
    return out_k, gk


def rand(rng, shape, dt, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dt)


# ---------------------------------------------------------------------------------------- conv
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("stride,padding,k,bias", [(1, 1, 3, True), (1, 0, 3, False), (2, 1, 3, True),
                                                   (1, 0, 1, True), (2, 0, 1, False), (3, 2, 5, True),
                                                   (2, 3, 7, True)])
def test_conv2d(dt, stride, padding, k, bias):
    rng = np.random.default_rng(k + stride)
    x, w = rand(rng, (2, 3, 9, 8), dt), rand(rng, (4, 3, k, k), dt, 0.3)
    b = rand(rng, 4, dt) if bias else None
    pair_parity("conv2d", (x, w, b), dict(stride=stride, padding=padding), dt, scale=10)


@pytest.mark.parametrize("keep_cols", [False, True])
@pytest.mark.parametrize("min_rows", [1, 5, 11])
@pytest.mark.parametrize("stride,padding,k", [(1, 1, 3), (2, 1, 3), (2, 3, 7), (3, 2, 5)])
def test_conv2d_in_chunks_of_output_rows(monkeypatch, min_rows, stride, padding, k, keep_cols):
    """Forward and backward in chunks of a few output rows (what ResNet-50's big levels get), the
    chunks crossing image boundaries, with the backward gathering each chunk's cols again (big
    layers) or reusing the forward's (small ones): the same as the reference (float64)."""
    from mrcnn_np.backends.numba import conv as numba_conv
    monkeypatch.setattr(numba_conv, "_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(numba_conv, "_MIN_CHUNK_ROWS", min_rows)
    monkeypatch.setattr(numba_conv, "_KEEP_COLS_ELEMENTS", 1 << 30 if keep_cols else 0)
    rng = np.random.default_rng(min_rows + k)
    x, w, b = rand(rng, (3, 4, 11, 9), np.float64), rand(rng, (5, 4, k, k), np.float64, 0.3), None
    pair_parity("conv2d", (x, w, b), dict(stride=stride, padding=padding), np.float64, scale=10)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("stride,padding,k", [(2, 0, 2), (2, 1, 3), (1, 1, 3), (3, 0, 3), (1, 0, 1)])
def test_conv_transpose2d(dt, stride, padding, k):
    rng = np.random.default_rng(k * 7 + stride)
    x, w, b = rand(rng, (2, 3, 5, 4), dt), rand(rng, (3, 4, k, k), dt, 0.3), rand(rng, 4, dt)
    pair_parity("conv_transpose2d", (x, w, b), dict(stride=stride, padding=padding), dt, scale=10)


# ------------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (1, 2, 0), (3, 1, 1), ((3, 2), (1, 2), 1)])
def test_max_pool2d(dt, k, s, p):
    rng = np.random.default_rng(3)
    x = rand(rng, (2, 3, 7, 6), dt)
    x[0, 0, :2, :2] = 5.0                                    # ties: the first max wins
    x[1, 2] = -np.inf                                        # all -inf: padding never wins either
    pair_parity("max_pool2d", (x, k, s, p), {}, dt)


def test_max_pool2d_ties_hand_case():
    x = np.array([[[[1.0, 3.0, 2.0], [4.0, 0.0, 4.0], [1.0, 2.0, 9.0]]]])
    out, cache = F.max_pool2d_forward(x, 2, 1, 0)
    np.testing.assert_array_equal(F.max_pool2d_backward(np.ones_like(out), cache)[0, 0],
                                  [[0, 0, 0], [2, 0, 1], [0, 0, 1]])


# ---------------------------------------------------------------------------------- group norm
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,groups", [((2, 6, 5, 7), 3), ((3, 8, 4, 4), 8), ((1, 4, 1, 1), 1),
                                          ((2, 64, 16, 16), 16)])
def test_group_norm(dt, shape, groups):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dt)
    g, b = rand(rng, shape[1], dt), rand(rng, shape[1], dt)
    pair_parity("group_norm", (x, g, b, groups), dict(eps=1e-5), dt, scale=10)


def test_group_norm_reads_an_nhwc_view_without_a_copy():
    rng = np.random.default_rng(5)
    x = np.ascontiguousarray(rand(rng, (2, 5, 6, 8), np.float32)).transpose(0, 3, 1, 2)  # NHWC buffer
    g, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    out, cache = F.group_norm_forward(x, g, b, 4)
    ref, _ = F.group_norm_forward.reference(x, g, b, 4)
    close(out, ref, np.float32)


# ------------------------------------------------------------------------------------ RoIAlign
def _rois(rng, r, n, size, dt, edge=True):
    xy = rng.uniform(-0.3 * size, size, (r, 2))
    wh = rng.uniform(0, 0.6 * size, (r, 2))
    rois = np.concatenate([rng.integers(0, n, (r, 1)), xy, xy + wh], 1)
    if edge and r >= 4:
        rois[0, 1:] = [5.0, 5.0, 5.0, 5.0]                  # zero-size
        rois[1, 1:] = [-40.0, -30.0, -10.0, -5.0]           # entirely off the map, top-left
        rois[2, 1:] = [size * 2, size * 2, size * 3, size * 3]  # off the map, bottom-right
        rois[3, 1:] = [0.0, 0.0, size * 4, size * 4]        # bigger than the map
    return rois.astype(dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align(dt, sampling_ratio, aligned):
    rng = np.random.default_rng(sampling_ratio + 3 * aligned)
    feats = rand(rng, (2, 5, 9, 11), dt)
    rois = _rois(rng, 40, 2, 40.0, dt)
    pair_parity("roi_align", (feats, rois, (3, 4), 0.25, sampling_ratio, aligned), {}, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_roi_align_demo_shapes_and_no_rois(dt):
    rng = np.random.default_rng(7)
    feats = rand(rng, (4, 16, 32, 32), dt)
    pair_parity("roi_align", (feats, _rois(rng, 64, 4, 128.0, dt), 7, 0.25, 2, True), {}, dt)
    out, grads = pair_parity("roi_align", (feats, np.zeros((0, 5), dt), 7, 0.25, 2, True), {}, dt)
    assert out.shape == (0, 16, 7, 7) and not grads[0].any()


def test_roi_align_kernel_called_directly():
    from mrcnn_np.backends.numba import roi_align as k
    rng = np.random.default_rng(8)
    feats, rois = rand(rng, (1, 3, 6, 6), np.float64), _rois(rng, 10, 1, 24.0, np.float64)
    out, cache = k.roi_align_forward(feats, rois, 2, 0.25, 0, True)
    ref, _ = F.roi_align_forward.reference(feats, rois, 2, 0.25, 0, True)
    close(out, ref, np.float64)


# ------------------------------------------------------------------------------------- RoIPool
@pytest.mark.parametrize("dt", DTYPES)
def test_roi_pool(dt):
    rng = np.random.default_rng(9)
    # distinct values so the argmax (and so the gradient) is unambiguous in both dtypes
    feats = (rng.permutation(2 * 4 * 9 * 11) * 0.01).reshape(2, 4, 9, 11).astype(dt)
    pair_parity("roi_pool", (feats, _rois(rng, 30, 2, 40.0, dt), (3, 2), 0.25), {}, dt)
    pair_parity("roi_pool", (feats, np.zeros((0, 5), dt), 2, 0.25), {}, dt)


def test_roi_pool_ties_first_max():
    feats = np.full((1, 1, 4, 4), 2.0)
    out, cache = F.roi_pool_forward(feats, np.array([[0, 0.0, 0.0, 3.0, 3.0]]), 1, 1.0)
    d = F.roi_pool_backward(np.ones_like(out), cache)
    assert d[0, 0, 0, 0] == 1 and d.sum() == 1


# -------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("dt", DTYPES)
def test_losses(dt):
    rng = np.random.default_rng(10)
    logits = rand(rng, (50, 5), dt, 3)
    logits[0] = [1000, -1000, 0, 0, 0]
    logits[1] = [-1000, -1000, -1000, -1000, -1000]
    pair_parity("softmax_cross_entropy", (logits, rng.integers(0, 5, 50)), {}, dt)
    for beta in (1 / 9, 1.0, 0.0):
        pair_parity("smooth_l1", (rand(rng, (40, 4), dt), rand(rng, (40, 4), dt)), dict(beta=beta), dt,
                    scale=10)
    x = rand(rng, (9, 28, 28), dt, 4)
    x[0, 0, :4] = [1000, -1000, 1000, -1000]
    t = (rng.uniform(size=x.shape) > 0.5).astype(dt)
    pair_parity("sigmoid_bce_with_logits", (x, t), {}, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_losses_empty(dt):
    loss, cache = F.softmax_cross_entropy_forward(np.zeros((0, 3), dt), np.zeros(0, np.int64))
    assert loss == 0 and F.softmax_cross_entropy_backward(1.0, cache).shape == (0, 3)
    loss, cache = F.sigmoid_bce_with_logits_forward(np.zeros((0, 4, 4), dt), np.zeros((0, 4, 4), dt))
    assert loss == 0 and F.sigmoid_bce_with_logits_backward(1.0, cache).shape == (0, 4, 4)
    loss, cache = F.smooth_l1_forward(np.zeros((0, 4), dt), np.zeros((0, 4), dt), beta=1 / 9)
    assert loss == 0 and F.smooth_l1_backward(1.0, cache).shape == (0, 4)


# ------------------------------------------------------------------------------- NMS and boxes
def _boxes(rng, n, dt, integer=False):
    xy = rng.uniform(0, 60, (n, 2))
    b = np.concatenate([xy, xy + rng.uniform(0, 25, (n, 2))], 1)
    return (np.round(b) if integer else b).astype(dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_nms_and_batched_nms(dt, seed):
    rng = np.random.default_rng(seed)
    n = 300
    boxes = _boxes(rng, n, dt, integer=seed % 2 == 0)       # integer coordinates: IoUs at 0.5 exactly
    scores = np.round(rng.uniform(size=n), 1).astype(dt)     # many ties: lower index first
    labels = rng.integers(0, 4, n)
    for t in (0.0, 0.3, 0.5, 1.0):
        np.testing.assert_array_equal(F.nms(boxes, scores, t), F.nms.reference(boxes, scores, t))
        np.testing.assert_array_equal(F.batched_nms(boxes, scores, labels, t),
                                      F.batched_nms.reference(boxes, scores, labels, t))
    iou = F.box_iou(boxes, boxes[:50])
    assert iou.dtype == dt
    np.testing.assert_array_equal(iou, F.box_iou.reference(boxes, boxes[:50]))


def test_nms_edge_cases():
    empty = np.zeros((0, 4), np.float32)
    assert F.nms(empty, np.zeros(0, np.float32), 0.5).shape == (0,)
    assert F.batched_nms(empty, np.zeros(0, np.float32), np.zeros(0, int), 0.5).dtype == np.int64
    assert F.box_iou(empty, np.zeros((3, 4), np.float32)).shape == (0, 3)
    # zero-area boxes (0/0 IoU) never suppress; integer boxes compute IoUs in float64
    b = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 4, 4], [0, 0, 4, 2]])
    s = np.array([0.9, 0.8, 0.7, 0.7])
    np.testing.assert_array_equal(F.nms(b, s, 0.5), F.nms.reference(b, s, 0.5))
    np.testing.assert_array_equal(F.box_iou(b, b), F.box_iou.reference(b, b))
    assert F.box_iou(b, b).dtype == np.float64


# --------------------------------------------------------------------------------- mask pasting
@pytest.mark.parametrize("dt", DTYPES)
def test_paste_masks_kernel(dt):
    from mrcnn_np.backends.numba.paste import paste_masks
    from mrcnn_np.detection.postprocess import paste_masks as reference
    rng = np.random.default_rng(11)
    masks = rng.uniform(size=(12, 28, 28)).astype(dt)
    boxes = _boxes(rng, 12, np.float64) * 1.5 - 10           # some cross the image border
    boxes[0] = [5, 5, 5, 9]                                  # empty
    boxes[1] = [3.2, 4.1, 3.4, 4.3]                          # too thin to hold a pixel centre
    ours, ref = paste_masks(masks, boxes, (64, 80)), reference(masks, boxes, (64, 80))
    assert ours.shape == ref.shape == (12, 64, 80) and ours.dtype == bool
    # values within rounding of the threshold may differ (float64 here, the masks' dtype there)
    assert (ours != ref).mean() < 1e-3


# ------------------------------------------------------------------------- whole model, gradcheck
def test_training_step_matches_numpy():
    from mrcnn_np.model import LOSS_NAMES, build_model, get_config
    from tests.test_model import toy_batch
    cfg = get_config("tiny")
    images, targets = toy_batch(cfg)
    images = images.astype(np.float32)
    runs = {}
    for backend in ("numpy", "numba"):
        mrcnn_np.set_backend(backend)
        model = build_model(cfg, seed=0)
        losses = model.forward_train(images, targets, np.random.default_rng(0))
        model.zero_grad()
        model.backward()
        runs[backend] = (losses, {k: p.grad.copy() for k, p in model.named_parameters().items()})
    (l_ref, g_ref), (l_nb, g_nb) = runs["numpy"], runs["numba"]
    for k in LOSS_NAMES:
        assert l_nb[k] == pytest.approx(l_ref[k], rel=1e-4, abs=1e-6), k
    for name, g in g_ref.items():
        assert g_nb[name].dtype == np.float32
        scale = max(np.abs(g).max(), 1e-6)
        assert np.abs(g_nb[name] - g).max() / scale < 1e-4, name       # measured ~1e-6


def test_gradcheck_passes_under_numba():
    rows = run_all()
    bad = [(op, name, err) for op, name, err in rows if not err < 1e-6]
    assert not bad, bad


# ------------------------------------------------------------------------ bad input at the boundary
def test_non_contiguous_views_give_the_reference_result():
    rng = np.random.default_rng(12)
    feats = rand(rng, (2, 4, 10, 12), np.float32)
    rois = _rois(rng, 12, 2, 40.0, np.float64)
    big = np.zeros((12, 10))
    big[:, ::2] = rois                                       # a strided (non-contiguous) rois view
    view = big[:, ::2]
    assert not view.flags.c_contiguous
    out, _ = F.roi_align_forward(feats[:, ::2], view, 3, 0.25, 2, True)    # strided features too
    ref, _ = F.roi_align_forward.reference(feats[:, ::2], view.astype(np.float32), 3, 0.25, 2, True)
    assert out.dtype == np.float32                          # float64 rois follow the features
    close(out, ref, np.float32)
    x = rand(rng, (2, 3, 8, 8), np.float32)[:, :, ::2, 1::2]
    w = rand(rng, (4, 3, 3, 3), np.float32)
    close(F.conv2d_forward(x, w, None, 1, 1)[0], F.conv2d_forward.reference(x, w, None, 1, 1)[0],
          np.float32, 10)
    close(F.max_pool2d_forward(x, 2, 2, 0)[0], F.max_pool2d_forward.reference(x, 2, 2, 0)[0], np.float32)
    bx = _boxes(rng, 40, np.float32)
    np.testing.assert_array_equal(F.nms(bx[::2], bx[::2, 0].copy(), 0.5),
                                  F.nms.reference(bx[::2], bx[::2, 0].copy(), 0.5))


@pytest.mark.parametrize("call,match", [
    (lambda: F.roi_align_forward(np.zeros((1, 2, 4, 4), np.int32), np.zeros((1, 5)), 2, 1.0, 2, True),
     "features: expected a float32 or float64 array"),
    (lambda: F.roi_align_forward(np.zeros((1, 2, 4, 4)), np.zeros((1, 4)), 2, 1.0, 2, True),
     r"rois: expected shape \(R, 5\)"),
    (lambda: F.roi_align_forward(np.zeros((1, 2, 4, 4)), np.array([[3.0, 0, 0, 1, 1]]), 2, 1.0, 2, True),
     "rois: batch index out of range"),
    (lambda: F.roi_pool_forward(np.zeros((1, 2, 4, 4)), np.array([[0.5, 0, 0, 1, 1]]), 2, 1.0),
     "whole numbers"),
    (lambda: F.group_norm_forward(np.zeros((1, 4, 2, 2)), np.ones(4), np.zeros(4), 3), "num_groups"),
    (lambda: F.conv2d_forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 4, 3, 3)), None), "w:"),
    (lambda: F.conv2d_forward(np.zeros((1, 3, 4, 4), np.int64), np.zeros((2, 3, 3, 3)), None), "x:"),
    (lambda: F.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 3, 2, 2), "padding"),
    (lambda: F.softmax_cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3])), "labels"),
    (lambda: F.softmax_cross_entropy_forward(np.zeros((2, 3)), np.array([0.0, 1.0])), "labels"),
    (lambda: F.sigmoid_bce_with_logits_forward(np.zeros((2, 3)), np.zeros((3, 2))), "targets"),
    (lambda: F.smooth_l1_forward(np.zeros((2, 3), np.int32), np.zeros((2, 3))), "pred"),
    (lambda: F.nms(np.zeros((3, 5)), np.zeros(3), 0.5), "boxes"),
    (lambda: F.nms(np.zeros((3, 4)), np.array([0.1, np.nan, 0.2]), 0.5), "NaN"),
    (lambda: F.batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(2), 0.5), "labels"),
    (lambda: F.box_iou(np.zeros((3, 4)), np.zeros(4)), "b:"),
])
def test_bad_input_gets_the_reference_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_int_targets_and_float64_upstream_gradients():
    rng = np.random.default_rng(13)
    x = rand(rng, (4, 5), np.float32)
    t = rng.integers(0, 2, (4, 5))                           # integer targets: cast by the kernel
    loss, cache = F.sigmoid_bce_with_logits_forward(x, t)
    ref, rcache = F.sigmoid_bce_with_logits_forward.reference(x, t)
    close(loss, ref, np.float32)
    feats = rand(rng, (1, 3, 6, 6), np.float32)
    out, cache = F.roi_align_forward(feats, np.array([[0, 1.0, 1.0, 9.0, 8.0]]), 2, 0.5, 2, True)
    d = F.roi_align_backward(np.ones(out.shape, np.float64), cache)   # a float64 dout
    assert d.dtype == np.float32


@pytest.mark.parametrize("shape, size", [((3, 512, 512), (800, 800)), ((3, 390, 600), (799, 1230)),
                                         ((1, 30, 30), (57, 101)), ((2, 40, 30), (13, 9)), ((3, 5, 7), (5, 7))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interpolate_bilinear_kernel_is_the_reference_to_the_bit(shape, size, dtype):
    from mrcnn_np.backends.numba.interpolate import interpolate_bilinear as kernel
    from mrcnn_np.ops.interpolate import interpolate_bilinear as reference
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    out = kernel(x, size)
    assert out.dtype == dtype and np.array_equal(out, reference(x, size))
