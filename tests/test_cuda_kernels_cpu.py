"""The cupy backend's CUDA kernels (kernels/*.cu) run on the CPU and agree with the NumPy reference.

Each .cu is compiled once per session by g++ with kernels/cuda_cpu_emu.h (-DMRCNN_CPU_EMU), which
turns the CUDA grid into loops (threads as std::threads with a barrier where a kernel uses
__syncthreads); the host entry points at the end of each .cu launch the kernels through that
emulated grid and are called here with ctypes. The launches use small, odd grids so the kernels'
grid-stride loops wrap around. What this cannot check (races, real GPU rounding of exp/log, the
CuPy launchers' Python): tests/test_gpu_parity.py on a GPU (make test-gpu).
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from mrcnn_np.backends.cupy import _module
from mrcnn_np.ops import conv, losses, nms as nms_ref, norm, pool, roi_align, roi_pool

import cupy_on_cpu
from parity_checks import assert_masks_match

SOURCES = ("roi_align", "roi_pool", "nms", "conv", "norm", "pool", "losses", "paste")

pytestmark = pytest.mark.skipif(
    cupy_on_cpu.GXX is None, reason="g++ not found: the CPU emulation of the CUDA kernels is compiled with g++")

DTYPES = [np.float32, np.float64]
SUFFIX = {np.float32: "f32", np.float64: "f64"}


def tol(dt):
    return dict(rtol=1e-5, atol=1e-5) if dt == np.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def libs():
    """Every .cu, exactly as CuPy gets it (``_module.source``: the common header pasted in), compiled
    in parallel by g++ for the emulation; {name: ctypes.CDLL}."""
    files = [f"{name}.cu" for name in SOURCES]
    return dict(zip(SOURCES, cupy_on_cpu.compile_all(_module.source(f) for f in files)))


def _arg(a):
    if isinstance(a, np.ndarray):
        assert a.flags.c_contiguous
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, (ctypes.c_longlong, ctypes.c_double, ctypes.c_int, ctypes.c_void_p)):
        return a
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, float):
        return ctypes.c_double(a)
    if isinstance(a, (bool, int, np.integer)):
        return ctypes.c_int(int(a))
    raise TypeError(type(a))


def call(lib, name, *args, restype=None):
    fn = getattr(lib, name)
    fn.restype = restype
    return fn(*[_arg(a) for a in args])


I64 = ctypes.c_longlong
GRID = (3, 1, 32)         # grid (x, y) and block: 3 blocks of 32 threads, so grid-stride loops wrap


# ---------------------------------------------------------------- RoIAlign / RoIPool
def _rois(rng, n_batch, h, w, scale, r, dt):
    """Random RoIs in image coordinates, with some off the map, zero-sized and at the borders."""
    img_w, img_h = w / scale, h / scale
    b = rng.integers(0, n_batch, r)
    x1 = rng.uniform(-0.3 * img_w, img_w, r)
    y1 = rng.uniform(-0.3 * img_h, img_h, r)
    x2 = x1 + rng.uniform(0, 0.8 * img_w, r)
    y2 = y1 + rng.uniform(0, 0.8 * img_h, r)
    rois = np.stack([b, x1, y1, x2, y2], axis=1)
    if r >= 6:
        rois[0, 1:] = [-40, -30, -20, -10]                     # entirely off the map (before it)
        rois[1, 1:] = [img_w + 5, img_h + 5, img_w + 9, img_h + 20]   # beyond it
        rois[2, 3:] = rois[2, 1:3]                             # zero size
        rois[3, 1:] = [0, 0, img_w, img_h]                     # the whole map
        rois[4, 1:] = [-1 / scale, -1 / scale, (w + 1) / scale, (h + 1) / scale]  # to [-1, W+1]
        rois[5, 1:] = np.round(rois[5, 1:])                    # integer corners
    return rois.astype(dt)


def _emu_roi_align(libs, features, rois, out_hw, scale, sr, aligned, dt):
    n, c, h, w = features.shape
    r = rois.shape[0]
    out = np.zeros((r, c) + out_hw, dt)
    call(libs["roi_align"], f"emu_roi_align_forward_{SUFFIX[dt]}", features, rois, r, c, h, w, *out_hw,
         float(scale), sr, aligned, out, *GRID)
    return out


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sr", [0, 1, 2])
def test_roi_align_forward_backward(libs, dt, aligned, sr):
    rng = np.random.default_rng(10 * sr + aligned)
    features = rng.standard_normal((2, 3, 7, 9)).astype(dt)
    for scale, out_hw in ((0.5, (2, 3)), (1.0, (3, 3)), (0.25, (1, 1))):
        rois = _rois(rng, 2, 7, 9, scale, 12, dt)
        ref, cache = roi_align.roi_align_forward(features, rois, out_hw, scale, sr, aligned)
        out = _emu_roi_align(libs, features, rois, out_hw, scale, sr, aligned, dt)
        np.testing.assert_allclose(out, ref, **tol(dt))
        dout = rng.standard_normal(out.shape).astype(dt)
        dref = roi_align.roi_align_backward(dout, cache)
        dfeat = np.zeros_like(features)
        call(libs["roi_align"], f"emu_roi_align_backward_{SUFFIX[dt]}", dout, rois, rois.shape[0], 3,
             7, 9, *out_hw, float(scale), sr, aligned, dfeat, *GRID)
        np.testing.assert_allclose(dfeat, dref, **tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
def test_roi_align_no_rois(libs, dt):
    features = np.ones((1, 2, 4, 4), dt)
    rois = np.zeros((0, 5), dt)
    assert _emu_roi_align(libs, features, rois, (2, 2), 1.0, 0, True, dt).shape == (0, 2, 2, 2)


@pytest.mark.parametrize("dt", DTYPES)
def test_roi_pool_forward_backward(libs, dt):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((2, 3, 8, 10)).astype(dt)
    features[0, 0, 2:5, 2:5] = 1.5                                # ties: first max wins
    lib = libs["roi_pool"]
    for scale, out_hw in ((0.5, (2, 2)), (1.0, (3, 4)), (0.25, (7, 7))):
        rois = _rois(rng, 2, 8, 10, scale, 12, dt)
        ref, cache = roi_pool.roi_pool_forward(features, rois, out_hw, scale)
        r = rois.shape[0]
        out = np.zeros((r, 3) + out_hw, dt)
        argmax = np.zeros((r, 3) + out_hw, np.int32)
        call(lib, f"emu_roi_pool_forward_{SUFFIX[dt]}", features, rois, r, 3, 8, 10, *out_hw,
             float(scale), out, argmax, *GRID)
        np.testing.assert_array_equal(out, ref)
        dout = rng.standard_normal(out.shape).astype(dt)
        dref = roi_pool.roi_pool_backward(dout, cache)
        dfeat = np.zeros_like(features)
        call(lib, f"emu_roi_pool_backward_{SUFFIX[dt]}", dout, rois, argmax, r, 3, 8, 10, *out_hw,
             dfeat, *GRID)
        np.testing.assert_allclose(dfeat, dref, **tol(dt))


# ---------------------------------------------------------------- NMS
def _emu_nms(libs, boxes, scores, labels, t):
    """What the launcher does: stable descending sort, then the two kernels, then map back."""
    n = boxes.shape[0]
    order = np.argsort(0 - scores, kind="stable")
    b = np.ascontiguousarray(boxes[order])
    if b.dtype not in (np.float32, np.float64):
        b = b.astype(np.float64)
    lab = (np.ascontiguousarray(labels[order].astype(np.int64)) if labels is not None
           else np.zeros(1, np.int64))
    col_blocks = max((n + 63) // 64, 1)
    mask = np.zeros((max(n, 1), col_blocks), np.uint64)
    removed = np.zeros(col_blocks, np.uint64)
    keep = np.zeros(max(n, 1), np.int64)
    num_keep = np.zeros(1, np.int32)
    if n:
        call(libs["nms"], f"emu_nms_mask_{SUFFIX[b.dtype.type]}", b, lab, labels is not None, n,
             float(t), mask, col_blocks, col_blocks, 64)
        call(libs["nms"], "emu_nms_greedy", mask, n, removed, keep, num_keep, 1, 1, 1)
    return order[keep[:num_keep[0]]]


def _boxes(rng, n, dt, integer=False):
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(1, 30, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if integer:
        boxes = np.round(boxes)
    return boxes.astype(dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 5, 64, 65, 200])
def test_nms_matches_reference(libs, dt, n):
    rng = np.random.default_rng(n)
    for integer in (False, True):
        boxes = _boxes(rng, n, dt, integer)
        scores = np.round(rng.uniform(0, 1, n), 1).astype(dt)     # many tied scores
        for t in (0.0, 0.3, 0.5, 0.7, 1.0):
            np.testing.assert_array_equal(_emu_nms(libs, boxes, scores, None, t),
                                          nms_ref.nms(boxes, scores, t))
            labels = rng.integers(0, 3, n)
            np.testing.assert_array_equal(_emu_nms(libs, boxes, scores, labels, t),
                                          nms_ref.batched_nms(boxes, scores, labels, t))


@pytest.mark.parametrize("dt", DTYPES)
def test_nms_iou_exactly_at_threshold_is_kept(libs, dt):
    # IoU([0,0,2,1], [1,0,3,1]) = 1/3 exactly; [0,0,4,1] vs [0,0,2,1] = 1/2: strict '>' keeps both
    boxes = np.array([[0, 0, 4, 1], [0, 0, 2, 1], [1, 0, 3, 1], [0, 0, 4, 1]], dt)
    scores = np.array([0.9, 0.8, 0.8, 0.9], dt)                      # ties: lower index first
    for t in (0.5, 1 / 3, 0.49, 0.2):
        np.testing.assert_array_equal(_emu_nms(libs, boxes, scores, None, t),
                                      nms_ref.nms(boxes, scores, t))
    # the same boxes under different labels never suppress each other
    labels = np.array([0, 1, 1, 2])
    np.testing.assert_array_equal(_emu_nms(libs, boxes, scores, labels, 0.1),
                                  nms_ref.batched_nms(boxes, scores, labels, 0.1))


def test_nms_integer_boxes_and_zero_area(libs):
    boxes = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 10, 10], [1, 1, 10, 10]], np.int64)
    scores = np.array([0.5, 0.6, 0.7, 0.7])
    np.testing.assert_array_equal(_emu_nms(libs, boxes, scores, None, 0.5),
                                  nms_ref.nms(boxes, scores, 0.5))


# ---------------------------------------------------------------- conv (im2col / col2im + GEMM)
def _im2col(libs, x, kh, kw, s, p, oh, ow):
    n, c, h, w = x.shape
    cols = np.zeros((n * oh * ow, c * kh * kw), x.dtype)
    call(libs["conv"], f"emu_im2col_{SUFFIX[x.dtype.type]}", x, n, c, h, w, kh, kw, s, p, oh, ow, cols,
         *GRID)
    return cols


def _col2im(libs, cols, shape, kh, kw, s, p, oh, ow):
    x = np.zeros(shape, cols.dtype)
    call(libs["conv"], f"emu_col2im_{SUFFIX[cols.dtype.type]}", np.ascontiguousarray(cols), *shape, kh,
         kw, s, p, oh, ow, x, *GRID)
    return x


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (2, 2, 0), (5, 3, 2)])
def test_conv2d_through_im2col_col2im(libs, dt, k, s, p):
    """The cupy launcher's composition (backends/cupy/conv.py) with NumPy GEMMs."""
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dt)
    w = rng.standard_normal((4, 3, k, k)).astype(dt)
    b = rng.standard_normal(4).astype(dt)
    ref, cache = conv.conv2d_forward(x, w, b, s, p)
    oh, ow = ref.shape[2:]
    cols = _im2col(libs, x, k, k, s, p, oh, ow)
    w2d = w.reshape(4, -1)
    out = (cols @ w2d.T + b).reshape(2, oh, ow, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, ref, **tol(dt))
    dout = rng.standard_normal(ref.shape).astype(dt)
    dx_ref, dw_ref, db_ref = conv.conv2d_backward(dout, cache)
    dout2d = dout.transpose(0, 2, 3, 1).reshape(-1, 4)
    dx = _col2im(libs, dout2d @ w2d, x.shape, k, k, s, p, oh, ow)
    np.testing.assert_allclose(dx, dx_ref, **tol(dt))
    np.testing.assert_allclose((dout2d.T @ cols).reshape(w.shape), dw_ref, **tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (4, 2, 1), (3, 1, 0)])
def test_conv_transpose2d_through_col2im_im2col(libs, dt, k, s, p):
    rng = np.random.default_rng(k + s + p)
    x = rng.standard_normal((2, 3, 5, 4)).astype(dt)
    w = rng.standard_normal((3, 2, k, k)).astype(dt)
    ref, cache = conv.conv_transpose2d_forward(x, w, None, s, p)
    oh, ow = ref.shape[2:]
    x2d = x.transpose(0, 2, 3, 1).reshape(-1, 3)
    w2d = w.reshape(3, -1)
    out = _col2im(libs, x2d @ w2d, (2, 2, oh, ow), k, k, s, p, 5, 4)
    np.testing.assert_allclose(out, ref, **tol(dt))
    dout = rng.standard_normal(ref.shape).astype(dt)
    dx_ref, dw_ref, _ = conv.conv_transpose2d_backward(dout, cache)
    dcols = _im2col(libs, dout, k, k, s, p, 5, 4)
    dx = (dcols @ w2d.T).reshape(2, 5, 4, 3).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(dx, dx_ref, **tol(dt))
    np.testing.assert_allclose((x2d.T @ dcols).reshape(w.shape), dw_ref, **tol(dt))


# ---------------------------------------------------------------- GroupNorm (shared memory)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,groups,threads,blocks", [
    ((2, 8, 5, 3), 4, 64, 3),        # fewer blocks than (n, g): the block-stride loop wraps
    ((1, 6, 4, 4), 2, 256, 2),       # the launchers' block size
    ((3, 4, 1, 1), 4, 32, 12),       # one number per group: var 0, x_hat 0
])
def test_group_norm_forward_backward(libs, dt, shape, groups, threads, blocks):
    rng = np.random.default_rng(groups)
    n, c, h, w = shape
    x = (rng.standard_normal(shape) * 3 + 1).astype(dt)
    gamma = rng.standard_normal(c).astype(dt)
    beta = rng.standard_normal(c).astype(dt)
    ref, cache = norm.group_norm_forward(x, gamma, beta, groups, 1e-5)
    y, x_hat = np.zeros_like(x), np.zeros_like(x)
    inv_std = np.zeros((n, groups), dt)
    lib = libs["norm"]
    call(lib, f"emu_group_norm_forward_{SUFFIX[dt]}", x, gamma, beta, n, c, groups, h * w, 1e-5, y,
         x_hat, inv_std, blocks, 1, threads)
    np.testing.assert_allclose(y, ref, **tol(dt))
    np.testing.assert_allclose(inv_std, cache[1].reshape(n, groups), **tol(dt))
    dout = rng.standard_normal(shape).astype(dt)
    dx_ref, dg_ref, db_ref = norm.group_norm_backward(dout, cache)
    dx, dg, db = np.zeros_like(x), np.zeros(c, dt), np.zeros(c, dt)
    call(lib, f"emu_group_norm_backward_params_{SUFFIX[dt]}", dout, x_hat, n, c, h * w, dg, db,
         blocks, 1, threads)
    call(lib, f"emu_group_norm_backward_input_{SUFFIX[dt]}", dout, x_hat, gamma, inv_std, n, c,
         groups, h * w, dx, blocks, 1, threads)
    np.testing.assert_allclose(dx, dx_ref, **tol(dt))
    np.testing.assert_allclose(dg, dg_ref, **tol(dt))
    np.testing.assert_allclose(db, db_ref, **tol(dt))


# ---------------------------------------------------------------- max pool
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (1, 2, 0), ((3, 2), (1, 2), 1), (3, 1, 1)])
def test_max_pool_forward_backward(libs, dt, k, s, p):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 8)).astype(dt)
    x[0, 0, :4, :4] = 0.25                                        # ties: the first max wins
    x[1, 2] = np.round(x[1, 2])                                   # more ties
    ref, cache = pool.max_pool2d_forward(x, k, s, p)
    (kh, kw), (sh, sw), pad, (oh, ow) = pool.check_max_pool2d_args(x, k, s, p)
    out = np.zeros(ref.shape, dt)
    arg = np.zeros(ref.shape, np.int32)
    lib = libs["pool"]
    call(lib, f"emu_max_pool2d_forward_{SUFFIX[dt]}", x, 2, 3, 7, 8, kh, kw, sh, sw, pad, oh, ow, out,
         arg, *GRID)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(arg, cache[0])
    dout = rng.standard_normal(ref.shape).astype(dt)
    dx = np.zeros_like(x)
    call(lib, f"emu_max_pool2d_backward_{SUFFIX[dt]}", dout, arg, 2, 3, 7, 8, kh, kw, sh, sw, pad, oh,
         ow, dx, *GRID)
    np.testing.assert_allclose(dx, pool.max_pool2d_backward(dout, cache), **tol(dt))


# ---------------------------------------------------------------- losses
def _partials(blocks, dt):
    return np.zeros(blocks, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n,k", [(0, 3), (1, 2), (37, 5), (300, 4)])
def test_softmax_cross_entropy(libs, dt, n, k):
    rng = np.random.default_rng(n)
    logits = (rng.standard_normal((n, k)) * 5).astype(dt)
    if n > 2:
        logits[0] = [1000] + [-1000] * (k - 1)                    # +-1000: no overflow
        logits[1] = -1000
    labels = rng.integers(0, k, n)
    ref, cache = losses.softmax_cross_entropy_forward(logits, labels)
    lib = libs["losses"]
    log_p, partial = np.zeros_like(logits), _partials(2, dt)
    if n:
        call(lib, f"emu_softmax_cross_entropy_forward_{SUFFIX[dt]}", logits, labels.astype(np.int64),
             n, k, log_p, partial, 2, 1, 64)
    loss = partial.sum() / max(n, 1)
    np.testing.assert_allclose(loss, ref, **tol(dt))
    np.testing.assert_allclose(log_p, cache[0], **tol(dt))
    dref = losses.softmax_cross_entropy_backward(0.7, cache)
    d = np.zeros_like(logits)
    call(lib, f"emu_softmax_cross_entropy_backward_{SUFFIX[dt]}", log_p, labels.astype(np.int64), n, k,
         0.7 / max(n, 1), d, *GRID)
    np.testing.assert_allclose(d, dref, **tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("beta", [0.0, 1 / 9, 1.0])
def test_smooth_l1(libs, dt, beta):
    rng = np.random.default_rng(5)
    pred = (rng.standard_normal((37, 4)) * 2).astype(dt)
    target = (rng.standard_normal((37, 4)) * 2).astype(dt)
    target[0, 0] = pred[0, 0]                                     # d = 0: sign 0
    ref, cache = losses.smooth_l1_forward(pred, target, beta)
    lib = libs["losses"]
    diff, partial = np.zeros_like(pred), _partials(3, dt)
    call(lib, f"emu_smooth_l1_forward_{SUFFIX[dt]}", pred, target, I64(pred.size), float(beta), diff,
         partial, 3, 1, 32)
    np.testing.assert_allclose(partial.sum(), ref, **tol(dt))
    dref = losses.smooth_l1_backward(2.0, cache)
    d = np.zeros_like(pred)
    call(lib, f"emu_smooth_l1_backward_{SUFFIX[dt]}", diff, I64(pred.size), float(beta), 2.0, d, *GRID)
    np.testing.assert_allclose(d, dref, **tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
def test_sigmoid_bce_with_logits(libs, dt):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((5, 7, 7)) * 4).astype(dt)
    x[0, 0, :4] = [1000, -1000, 1000, -1000]                      # exact, no overflow
    t = (rng.uniform(size=x.shape) > 0.5).astype(dt)
    t[0, 0, :4] = [1, 0, 0, 1]
    ref, cache = losses.sigmoid_bce_with_logits_forward(x, t)
    lib = libs["losses"]
    partial = _partials(2, dt)
    call(lib, f"emu_sigmoid_bce_forward_{SUFFIX[dt]}", x, t, I64(x.size), partial, 2, 1, 128)
    loss = partial.sum() / x.size
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, ref, **tol(dt))
    dref = losses.sigmoid_bce_with_logits_backward(1.0, cache)
    d = np.zeros_like(x)
    call(lib, f"emu_sigmoid_bce_backward_{SUFFIX[dt]}", x, t, I64(x.size), 1.0 / x.size, d, *GRID)
    np.testing.assert_allclose(d, dref, **tol(dt))


# ---------------------------------------------------------------- mask pasting
@pytest.mark.parametrize("dt", DTYPES)
def test_paste_masks(libs, dt):
    rng = np.random.default_rng(7)
    d, m, h, w = 6, 7, 20, 24
    masks = rng.uniform(size=(d, m, m)).astype(dt)
    boxes = np.array([[2.3, 1.7, 15.2, 12.9], [-5, -3, 8, 9], [10, 10, 30, 25],
                      [4, 4, 4, 9], [3.5, 2.5, 4.4, 3.4], [0, 0, 24, 20]], np.float64)
    out = np.zeros((d, h, w), np.uint8)
    call(libs["paste"], f"emu_paste_masks_{SUFFIX[dt]}", masks, boxes, d, m, m, h, w, 0.5, out, *GRID)
    assert_masks_match(out.astype(bool), masks, boxes, (h, w))
