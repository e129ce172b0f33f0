"""Every numba-cuda kernel against the NumPy reference: the checks, shared by the simulator tests
(``tests/numba_cuda_sim/``, tiny inputs, NumPy arrays) and the GPU tests
(``tests/test_gpu_numba_cuda.py``, larger inputs, CuPy arrays).

Each check builds its inputs with NumPy, runs the reference on them, then runs the backend's kernel
twice, through :mod:`mrcnn_np.functional` after ``set_backend("numba-cuda")`` and by calling the
registered kernel directly, on copies in the backend's array module, and compares forward and
backward. The caller has made ``numba-cuda`` the active backend (a fixture) and restores numpy.
"""
from __future__ import annotations

import inspect

import numpy as np

from mrcnn_np import dispatch, functional as F, get_backend
from mrcnn_np.backend import to_numpy

BACKEND = "numba-cuda"


def tolerances(dtype):
    """(rtol, atol relative to the reference's largest magnitude): the spec's ~1e-5 / ~1e-10."""
    return (1e-5, 1e-5) if np.dtype(dtype) == np.float32 else (1e-10, 1e-10)


def assert_close(got, ref, dtype, what):
    """``got`` (any array module) equals ``ref`` (NumPy) within the dtype's tolerance; same shape."""
    if ref is None:
        assert got is None, f"{what}: expected None"
        return
    got, ref = to_numpy(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    if ref.dtype.kind == "f":
        assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != reference {ref.dtype}"
    if ref.size == 0:
        return
    rtol, atol = tolerances(dtype)
    scale = max(float(np.abs(ref).max()), 1.0)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol * scale, err_msg=what)


def _device(v):
    xp = get_backend().xp
    return xp.asarray(v) if isinstance(v, np.ndarray) else v


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def check_pair(name, args, dtype, dout=None, seed=0):
    """Forward and backward of the pair ``name`` (e.g. ``"roi_align"``) with keyword ``args`` (NumPy
    arrays and numbers) against the reference. ``dout``: the upstream gradient (default: random of the
    output's shape; losses pass a number)."""
    fwd, bwd = getattr(F, f"{name}_forward"), getattr(F, f"{name}_backward")
    ref_out, ref_cache = fwd.reference(**args)
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(np.shape(ref_out)).astype(dtype)
    ref_grads = _as_tuple(bwd.reference(dout, ref_cache))
    dev_args = {k: _device(v) for k, v in args.items()}

    # 1. through mrcnn_np.functional (the dispatcher: checks, boundary, cache tag)
    out, cache = fwd(**dev_args)
    assert isinstance(cache, dispatch.KernelCache) and cache.backend == BACKEND, \
        f"{name}: functional did not run the {BACKEND} kernel"
    if np.ndim(ref_out):                          # arrays (not the losses' scalars) stay on the device
        assert isinstance(out, get_backend().xp.ndarray), f"{name}: output is a {type(out)}"
    assert_close(out, ref_out, dtype, f"{name} forward (functional)")
    grads = _as_tuple(bwd(_device(dout), cache))
    assert len(grads) == len(ref_grads)
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(g, r, dtype, f"{name} backward[{k}] (functional)")

    # 2. the registered kernels themselves, with every parameter named (defaults filled in)
    kf, kb = dispatch.kernel(BACKEND, f"{name}_forward"), dispatch.kernel(BACKEND, f"{name}_backward")
    bound = inspect.signature(fwd.reference).bind(**dev_args)
    bound.apply_defaults()
    out, cache = kf(**bound.arguments)
    assert_close(out, ref_out, dtype, f"{name} forward (kernel)")
    grads = _as_tuple(kb(_device(dout), cache))
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(g, r, dtype, f"{name} backward[{k}] (kernel)")


def check_op(name, args):
    """An op without a backward (``nms``, ``batched_nms``): the same result as the reference, exactly."""
    op = getattr(F, name)
    ref = op.reference(**args)
    dev_args = {k: _device(v) for k, v in args.items()}
    for got in (op(**dev_args), dispatch.kernel(BACKEND, name)(**dev_args)):
        got = to_numpy(got)
        assert got.dtype == np.int64, f"{name}: dtype {got.dtype}"
        np.testing.assert_array_equal(got, ref, err_msg=name)


def check_box_iou(a, b):
    """``box_iou`` (no backward): the reference's values and dtype."""
    ref = F.box_iou.reference(a, b)
    for got in (F.box_iou(_device(a), _device(b)), dispatch.kernel(BACKEND, "box_iou")(_device(a), _device(b))):
        assert isinstance(got, get_backend().xp.ndarray)
        assert_close(got, ref, ref.dtype, "box_iou")


# ---- inputs -------------------------------------------------------------------------------------

def rois_cases(rng, n_img, h, w, scale, dtype, n_random):
    """RoIs [b, x1, y1, x2, y2] in image coordinates (map size h x w at ``scale``): random ones plus
    the edge cases: off the map (partly and wholly), zero-sized, zero-width, the whole map, inverted."""
    img_h, img_w = h / scale, w / scale
    x1 = rng.uniform(-0.2 * img_w, img_w, n_random)
    y1 = rng.uniform(-0.2 * img_h, img_h, n_random)
    x2 = x1 + rng.uniform(0, 0.8 * img_w, n_random)
    y2 = y1 + rng.uniform(0, 0.8 * img_h, n_random)
    b = rng.integers(0, n_img, n_random)
    fixed = [[0, -3 / scale, -2 / scale, 2 / scale, 3 / scale],        # hangs over the top-left
             [n_img - 1, img_w - 1, img_h - 2, img_w + 5, img_h + 9],   # over the bottom-right
             [0, img_w + 4, img_h + 4, img_w + 9, img_h + 9],           # wholly off the map
             [0, 2 / scale, 2 / scale, 2 / scale, 2 / scale],           # zero size
             [n_img - 1, 1.5 / scale, 2.5 / scale, 1.5 / scale, 4 / scale],   # zero width
             [0, 0, 0, img_w, img_h],                                   # the whole map
             [n_img - 1, 3 / scale, 3 / scale, 1 / scale, 1 / scale]]   # inverted (x2 < x1, y2 < y1)
    rand = np.stack([b, x1, y1, x2, y2], axis=1)
    return np.concatenate([rand, np.array(fixed)]).astype(dtype)


def nms_boxes(rng, n, dtype, span=30.0):
    """n boxes with many overlaps and tied scores (scores from a few values)."""
    xy = rng.uniform(0, span, (n, 2))
    wh = rng.uniform(2, span / 2, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(dtype)
    scores = rng.integers(0, 6, n).astype(dtype) / 5      # ties on purpose
    return boxes, scores


def threshold_ties(dtype):
    """Boxes whose IoU with the first is exactly 0.5 (and 1/3): strict '>' keeps them at t = 0.5."""
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [2, 0, 6, 4], [0, 0, 4, 4], [10, 10, 12, 12],
                      [10, 10, 12, 12]], dtype)
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.5, 0.5], dtype)
    return boxes, scores


def paste_reference_and_margin(masks, boxes, image_size, threshold):
    """The reference paste and, per pixel, how far its bilinear value is from the threshold (inf
    outside the box), so a test can skip the few pixels that rounding may put on either side."""
    from mrcnn_np.detection import postprocess
    ref = postprocess.paste_masks(masks, boxes, image_size, threshold)
    inside = postprocess.paste_masks(masks, boxes, image_size, -np.inf)    # every pixel of the box
    margin = np.full(ref.shape, np.inf)
    h, w = image_size
    m_h, m_w = masks.shape[1:]
    for i in range(len(boxes)):
        if not inside[i].any():
            continue
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        v = np.clip((np.arange(h) + 0.5 - y1) * (m_h / (y2 - y1)) - 0.5, 0, m_h - 1)
        u = np.clip((np.arange(w) + 0.5 - x1) * (m_w / (x2 - x1)) - 0.5, 0, m_w - 1)
        i0, j0 = np.floor(v).astype(int), np.floor(u).astype(int)
        i1, j1 = np.minimum(i0 + 1, m_h - 1), np.minimum(j0 + 1, m_w - 1)
        fy, fx = (v - i0)[:, None], (u - j0)[None, :]
        m = masks[i].astype(np.float64)
        value = ((1 - fy) * ((1 - fx) * m[i0][:, j0] + fx * m[i0][:, j1])
                 + fy * ((1 - fx) * m[i1][:, j0] + fx * m[i1][:, j1]))
        margin[i] = np.where(inside[i], np.abs(value - threshold), np.inf)
    return ref, margin
