"""Mask pasting as a dispatched op: the reference (:mod:`mrcnn_np.ops.paste`) by hand, against a
straightforward full-image computation, and within its boxes' windows; every registered kernel
(numba; cupy on the CPU stand-in; numba-cuda under Numba's CUDA simulator, in a child process)
against the reference, directly and through ``functional`` and ``detections_to_original`` at an
original size; the boundary (no value read of a device array, boxes keep their dtype).

Every kernel evaluates the reference's arithmetic in the reference's order (coordinates in float64,
weights and blend in the masks' dtype, no fused multiply-add on the CPU), so on the CPU the masks
must be equal, not merely close.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import mrcnn_np
from mrcnn_np import dispatch
from mrcnn_np import functional as F
from mrcnn_np.detection import postprocess
from mrcnn_np.ops import paste as ops_paste
from mrcnn_np.ops.paste import check_paste_args, paste_window

import cupy_on_cpu

HERE = Path(__file__).resolve().parent
DTYPES = [np.float32, np.float64]
reference = ops_paste.paste_masks


# ------------------------------------------------------------------------------------ the inputs
def paste_cases(rng, h, w, m, dt, n_random=6):
    """``(masks (D, m, m), boxes (D, 4) float64)``: random boxes, some over the border, and the edge
    cases (each row says which)."""
    x1 = rng.uniform(-0.4 * w, w, n_random)
    y1 = rng.uniform(-0.4 * h, h, n_random)
    random = np.stack([x1, y1, x1 + rng.uniform(0.3, 0.9 * w, n_random),
                       y1 + rng.uniform(0.3, 0.9 * h, n_random)], 1)
    edge = np.array([
        [-5.3, -3.1, 4.7, 3.9],               # over the top-left corner
        [w - 3.2, h - 2.6, w + 6.0, h + 4.0],  # over the bottom-right corner
        [-7.0, -7.0, w + 7.0, h + 7.0],        # larger than the image
        [0.0, 0.0, w, h],                      # the whole image
        [2.6, 2.6, 3.4, 3.4],                  # tiny, holds no pixel centre
        [2.2, 1.2, 2.8, 1.8],                  # tiny, holds exactly the centre of pixel (2, 1)
        [1.5, 0.5, 3.5, 2.5],                  # edges on pixel centres (half-open: 1, 2 and 0, 1)
        [4.0, 4.0, 4.0, 9.0],                  # empty (zero width)
        [5.0, 2.0, 3.0, 6.0],                  # inverted (x2 < x1): empty
        [w + 1.0, h + 1.0, w + 9.0, h + 9.0],  # entirely outside
        [np.nan, 1.0, 5.0, 5.0],               # NaN: empty
        [-np.inf, 1.0, 5.0, 5.0],              # infinitely large: empty
    ])
    boxes = np.concatenate([random, edge])
    masks = rng.uniform(size=(boxes.shape[0], m, m)).astype(dt)
    return masks, boxes


def full_image_paste(masks, boxes, image_size, threshold):
    """(P1)-(P4) of :mod:`mrcnn_np.ops.paste` evaluated at *every* pixel of the image for every box,
    with the reference's roundings: ``(M (D, h, w) bool, value (D, h, w) float64)`` (value NaN
    outside the box). The plain statement of the op, for comparison."""
    h, w = image_size
    dt = masks.dtype
    d_n, m_h, m_w = masks.shape
    out = np.zeros((d_n, h, w), bool)
    values = np.full((d_n, h, w), np.nan)
    cy, cx = np.arange(h) + 0.5, np.arange(w) + 0.5          # every pixel centre
    for d, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64).tolist()):
        if not (x2 > x1 and y2 > y1) or not (m_w / (x2 - x1) > 0 and m_h / (y2 - y1) > 0):
            continue
        inside = ((cy >= y1) & (cy < y2))[:, None] & ((cx >= x1) & (cx < x2))[None, :]   # (P1)
        v = np.clip((cy - y1) * (m_h / (y2 - y1)) - 0.5, 0, m_h - 1)                     # (P2)
        u = np.clip((cx - x1) * (m_w / (x2 - x1)) - 0.5, 0, m_w - 1)
        i0, j0 = np.floor(v).astype(int), np.floor(u).astype(int)
        i1, j1 = np.minimum(i0 + 1, m_h - 1), np.minimum(j0 + 1, m_w - 1)
        wy0, wy1 = (1 - (v - i0)).astype(dt)[:, None], (v - i0).astype(dt)[:, None]
        wx0, wx1 = (1 - (u - j0)).astype(dt)[None, :], (u - j0).astype(dt)[None, :]
        mk = masks[d]
        t0 = wy0 * mk[i0][:, j0] + wy1 * mk[i1][:, j0]                                    # (P3)
        t1 = wy0 * mk[i0][:, j1] + wy1 * mk[i1][:, j1]
        value = t0 * wx0 + t1 * wx1
        out[d] = inside & (value >= dt.type(threshold))                                   # (P4)
        values[d] = np.where(inside, value, np.nan)
    return out, values


def host(a):
    return a.get() if hasattr(a, "get") and type(a).__module__.startswith("cupy") else np.asarray(a)


def assert_same_masks(got, want):
    got = host(got)
    assert got.dtype == bool and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    bad = got != want
    assert not bad.any(), f"{int(bad.sum())} pixels differ, first (d, y, x): {np.argwhere(bad)[:5].tolist()}"


# ------------------------------------------------------------------------------ the reference
def test_reference_by_hand():
    # m = 2, box [0, 4) x [0, 2) in a (3, 5) image. Pixel centres x 0.5 .. 3.5 (4.5 is outside):
    # u = c * 2/4 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clipped 0, 0.25, 0.75, 1; centres y 0.5, 1.5:
    # v = c * 2/2 - 0.5 = 0, 1 (the mask's two rows exactly). Row 0 of the mask (0, 1) gives
    # 0, 0.25, 0.75, 1; row 1 (0.8, 0.2) gives 0.8 - 0.6 u = 0.8, 0.65, 0.35, 0.2.
    mask = np.array([[[0.0, 1.0], [0.8, 0.2]]])
    box = np.array([[0.0, 0.0, 4.0, 2.0]])
    expected = np.zeros((1, 3, 5), bool)
    expected[0, 0, 2:4] = True                      # 0.75, 1 >= 0.5
    expected[0, 1, 0:2] = True                      # 0.8, 0.65 >= 0.5
    for dt in DTYPES:
        assert_same_masks(reference(mask.astype(dt), box, (3, 5)), expected)
    expected[0, 1, 2] = True                        # 0.35 >= 0.3; 0.25 and 0.2 stay below
    assert_same_masks(reference(mask, box, (3, 5), threshold=0.3), expected)
    # a fractional box: centres 1.5, 2.5 lie in [1.2, 2.6) and 0.5, 1.5 in [0.4, 1.6); m = 1
    out = reference(np.full((1, 1, 1), 0.7), np.array([[1.2, 0.4, 2.6, 1.6]]), (4, 4))
    expected = np.zeros((1, 4, 4), bool)
    expected[0, 0:2, 1:3] = True
    assert_same_masks(out, expected)
    # an interior blend: m = 2 over [0, 4) x [0, 4), pixel (1, 1): u = v = 1.5 * 0.5 - 0.5 = 0.25
    # value = 0.75 (0.75 a + 0.25 b) + 0.25 (0.75 c + 0.25 d) with a, b / c, d the mask's rows
    mask = np.array([[[0.2, 0.9], [0.6, 0.1]]])
    by_hand = 0.75 * (0.75 * 0.2 + 0.25 * 0.9) + 0.25 * (0.75 * 0.6 + 0.25 * 0.1)     # 0.40
    box = np.array([[0.0, 0.0, 4.0, 4.0]])
    assert reference(mask, box, (4, 4), threshold=by_hand - 1e-9)[0, 1, 1]
    assert not reference(mask, box, (4, 4), threshold=by_hand + 1e-9)[0, 1, 1]


@pytest.mark.parametrize("dt", DTYPES)
def test_reference_equals_the_full_image_computation(dt):
    rng = np.random.default_rng(1)
    for (h, w, m) in ((16, 20, 5), (9, 7, 1), (24, 13, 28)):
        masks, boxes = paste_cases(rng, h, w, m, dt)
        want, _ = full_image_paste(masks, boxes, (h, w), 0.5)
        assert_same_masks(reference(masks, boxes, (h, w), 0.5), want)
        for thr in (0.3, -np.inf, 2.0):
            assert_same_masks(reference(masks, boxes, (h, w), thr),
                              full_image_paste(masks, boxes, (h, w), thr)[0])


def test_reference_zero_detections_and_empty_images():
    for dt in DTYPES:
        out = reference(np.zeros((0, 28, 28), dt), np.zeros((0, 4)), (8, 9))
        assert out.shape == (0, 8, 9) and out.dtype == bool
    out = reference(np.ones((2, 3, 3)), np.array([[0, 0, 4, 4], [1, 1, 2, 2]], np.float32), (0, 5))
    assert out.shape == (2, 0, 5)
    # integer boxes are exact coordinates too
    out = reference(np.ones((1, 3, 3)), np.array([[1, 2, 4, 3]]), (5, 5))
    assert out[0].sum() == 3 and out[0, 2, 1:4].all()


def test_window_is_exactly_the_pixels_whose_centres_lie_inside():
    rng = np.random.default_rng(2)
    edges = np.concatenate([rng.uniform(-6, 26, 400), np.arange(-3, 24) * 0.5])   # half-pixels too
    for lo, hi in zip(edges, np.roll(edges, 7)):
        start, stop, i0, i1, frac = paste_window(float(lo), float(hi), 20, 7)
        centres = np.arange(20) + 0.5
        inside = np.flatnonzero((centres >= lo) & (centres < hi))
        np.testing.assert_array_equal(np.arange(start, max(stop, start)), inside)
        assert i0.shape == i1.shape == frac.shape == inside.shape
        assert ((0 <= i0) & (i0 <= i1) & (i1 <= 6) & (frac >= 0) & (frac < 1)).all()


def test_reference_visits_only_the_boxes_windows():
    """Four small boxes into a 3000 x 4000 image: the memory the paste takes is its (D, H, W) bool
    result and a few window-sized arrays, where one full-image float plane per detection (what the
    computation of every pixel needs) would be 48 MB each."""
    rng = np.random.default_rng(3)
    masks = rng.uniform(size=(4, 28, 28)).astype(np.float32)
    boxes = np.array([[10, 10, 60, 50], [200, 100, 260, 180], [3950, 2950, 4100, 3100],
                      [-20, -30, 30, 20]], np.float64)
    tracemalloc.start()
    try:
        out = reference(masks, boxes, (3000, 4000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes == 4 * 3000 * 4000
    assert peak < out.nbytes + (1 << 20), f"peak {peak} bytes for a {out.nbytes}-byte result"
    # and the windows are right: compare a crop around each box with the full-image computation
    for d, (x0, y0) in enumerate([(0, 0), (190, 90), (3900, 2900), (0, 0)]):
        crop = (slice(y0, y0 + 100), slice(x0, x0 + 100))
        b = boxes[d:d + 1] - np.array([x0, y0, x0, y0])
        want, _ = full_image_paste(masks[d:d + 1], b, (100, 100), 0.5)   # the crop's pixels
        np.testing.assert_array_equal(out[d][crop], want[0])
        assert out[d].sum() == out[d][crop].sum()                           # nothing outside it


def test_the_check_reads_shapes_only_and_names_the_argument():
    masks, boxes = np.zeros((2, 4, 4), np.float32), np.zeros((2, 4))
    assert check_paste_args(masks, boxes, (8, 9)) == (8, 9)
    for args, match in [
        ((np.zeros((3, 4, 4)), boxes, (8, 8)), r"masks: expected shape \(2, m, m\) \(one per box\)"),
        ((masks.astype(np.int64), boxes, (8, 8)), r"masks: expected a float32 or float64 array"),
        ((np.zeros((2, 0, 4)), boxes, (8, 8)), r"masks: expected at least one cell"),
        ((masks, np.zeros((2, 5)), (8, 8)), r"boxes: expected an \(N, 4\) array"),
        ((masks, boxes.astype(bool), (8, 8)), r"boxes: expected a float or integer array"),
        ((masks, boxes, (8,)), r"image_size: expected \(h, w\)"),
        ((masks, boxes, (8, -1)), r"image_size: expected two whole numbers >= 0"),
        ((masks, boxes, (8, 2.5)), r"image_size: expected two whole numbers >= 0"),
        ((masks, boxes, (np.inf, 8)), r"image_size: expected two whole numbers >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            reference(*args)
    with pytest.raises(ValueError, match=r"threshold: expected a number, got ndarray"):
        reference(masks, boxes, (8, 8), np.array(0.5))            # a 0-d array: would be a sync


def test_public_paste_masks_is_the_dispatched_op():
    rng = np.random.default_rng(4)
    masks, boxes = paste_cases(rng, 12, 10, 4, np.float32)
    assert_same_masks(postprocess.paste_masks(masks, boxes, (12, 10)), reference(masks, boxes, (12, 10)))
    assert F.paste_masks.reference is reference
    # 0/1 masks are pasted as probabilities, as before
    ones = np.ones((1, 3, 3), np.uint8)
    assert postprocess.paste_masks(ones, np.array([[1.0, 1.0, 3.0, 3.0]]), (4, 4))[0].sum() == 4
    with pytest.raises(ValueError, match="mode: expected one of"):
        postprocess.paste_masks(masks, boxes, (12, 10), mode="nearest")


# --------------------------------------------------------------------------------------- numba
@pytest.fixture
def numba_backend():
    pytest.importorskip("numba")
    yield mrcnn_np.set_backend("numba")
    mrcnn_np.set_backend("numpy")


@pytest.mark.parametrize("dt", DTYPES)
def test_numba_kernel_equals_the_reference(numba_backend, dt):
    from mrcnn_np.backends.numba.paste import paste_masks as kernel
    assert dispatch.kernel("numba", "paste_masks") is kernel
    rng = np.random.default_rng(5)
    for (h, w, m) in ((16, 20, 5), (9, 7, 1), (48, 40, 28)):
        masks, boxes = paste_cases(rng, h, w, m, dt)
        want = reference(masks, boxes, (h, w))
        assert_same_masks(kernel(masks, boxes, (h, w)), want)
        assert_same_masks(F.paste_masks(masks, boxes, (h, w)), want)                # dispatched
        assert_same_masks(F.paste_masks(masks, boxes.astype(np.float32), (h, w), 0.3),
                          reference(masks, boxes.astype(np.float32), (h, w), 0.3))
        int_boxes = np.round(boxes[:6]).astype(np.int64)
        assert_same_masks(F.paste_masks(masks[:6], int_boxes, (h, w)),
                          reference(masks[:6], int_boxes, (h, w)))
    assert F.paste_masks(np.zeros((0, 28, 28), dt), np.zeros((0, 4)), (8, 9)).shape == (0, 8, 9)


def test_boxes_keep_their_dtype_at_the_boundary(numba_backend):
    """float32 masks, float64 boxes: the box edge 2.5 + 1e-9 excludes pixel 2 (centre 2.5); cast to
    float32 it would be 2.5 and include it. The kernel must see the boxes as given."""
    masks = np.ones((1, 2, 2), np.float32)
    boxes = np.array([[2.5 + 1e-9, 0.0, 6.0, 3.0]])
    want = reference(masks, boxes, (4, 8))
    assert not want[0, :, 2].any() and want[0, :3, 3:6].all()
    assert_same_masks(F.paste_masks(masks, boxes, (4, 8)), want)


@pytest.mark.parametrize("mode", ["centres", "torchvision"])
def test_detections_to_original_under_numba_equals_numpy(numba_backend, mode):
    """Parity at the original size, through the path ``predict`` takes."""
    rng = np.random.default_rng(6)
    masks, boxes = paste_cases(rng, 32, 40, 14, np.float32, n_random=10)
    keep = np.isfinite(boxes).all(1) & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    boxes = np.clip(boxes[keep], 0, [40, 32, 40, 32]).astype(np.float32)  # as the model gives them
    det = {"boxes": boxes, "scores": np.linspace(1, 0.1, len(boxes)).astype(np.float32),
           "labels": np.ones(len(boxes), np.int64), "mask_probs": masks[keep]}
    got = postprocess.detections_to_original(det, (32, 40), (75, 93), mode=mode)
    mrcnn_np.set_backend("numpy")
    want = postprocess.detections_to_original(det, (32, 40), (75, 93), mode=mode)
    assert set(got) == set(want) == {"boxes", "scores", "labels", "masks"}
    np.testing.assert_array_equal(got["boxes"], want["boxes"])
    assert_same_masks(got["masks"], want["masks"])
    assert want["masks"].shape == (len(boxes), 75, 93) and want["masks"].any()


# ---------------------------------------------------------------------- cupy, on the CPU stand-in
@pytest.fixture
def cp():
    """The cupy backend on :mod:`cupy_on_cpu` (NumPy arrays; the launcher's ``kernels/paste.cu``
    compiled by g++), as in tests/test_cupy_launchers_cpu.py; everything is put back afterwards."""
    if cupy_on_cpu.GXX is None:
        pytest.skip("g++ not found: the CPU emulation of the CUDA kernels needs it")
    with cupy_on_cpu.activate() as shim:
        yield shim


@pytest.mark.parametrize("dt", DTYPES)
def test_cupy_kernel_equals_the_reference(cp, dt):
    from mrcnn_np.backends.cupy.paste import paste_masks as kernel
    assert dispatch.kernel("cupy", "paste_masks") is kernel
    rng = np.random.default_rng(7)
    for (h, w, m) in ((16, 20, 5), (9, 7, 1), (30, 26, 28)):
        masks, boxes = paste_cases(rng, h, w, m, dt)
        want = reference(masks, boxes, (h, w))
        assert_same_masks(kernel(cp.asarray(masks), cp.asarray(boxes), (h, w)), want)
        assert_same_masks(F.paste_masks(cp.asarray(masks), cp.asarray(boxes), (h, w), 0.5), want)
        assert_same_masks(postprocess.paste_masks(cp.asarray(masks), cp.asarray(boxes), (h, w), 0.7),
                          reference(masks, boxes, (h, w), 0.7))
    out = F.paste_masks(cp.zeros((0, 28, 28), dt), cp.zeros((0, 4)), (8, 9))
    assert out.shape == (0, 8, 9) and out.dtype == bool


def test_cupy_detections_to_original_at_the_original_size(cp):
    rng = np.random.default_rng(8)
    masks, boxes = paste_cases(rng, 20, 24, 7, np.float32, n_random=8)
    boxes = np.clip(boxes[:12], 0, [24, 20, 24, 20]).astype(np.float32)
    det = {"boxes": boxes, "scores": np.ones(12, np.float32), "labels": np.ones(12, np.int64),
           "mask_probs": masks[:12]}
    got = postprocess.detections_to_original({k: cp.asarray(v) for k, v in det.items()}, (20, 24),
                                             (37, 50))
    mrcnn_np.set_backend("numpy")
    want = postprocess.detections_to_original(det, (20, 24), (37, 50))
    assert_same_masks(got["masks"], want["masks"])


# ------------------------------------------------------- the strict stand-in: no value read back
@pytest.fixture
def strict():
    if cupy_on_cpu.GXX is None:
        pytest.skip("g++ not found: the CPU emulation of the CUDA kernels needs it")
    cupy_strict = pytest.importorskip("cupy_strict", reason="tests/cupy_strict.py (the strict CuPy "
                                                            "stand-in) is not in this checkout")
    with cupy_strict.activate() as cp:
        yield cp, cupy_strict


def test_the_cupy_paste_reads_nothing_back_from_the_device(strict):
    """Device arrays of their own type; every device -> host transfer is counted. The dispatched
    paste (check, boundary, launcher) and ``detections_to_original`` must make none."""
    cp, cupy_strict = strict
    rng = np.random.default_rng(9)
    masks, boxes = paste_cases(rng, 12, 14, 6, np.float32, n_random=4)
    boxes = np.clip(boxes[:8], 0, [14, 12, 14, 12]).astype(np.float32)
    masks = masks[:8]
    dm, db = cp.asarray(masks), cp.asarray(boxes)
    det = {"boxes": db, "scores": cp.asarray(np.ones(8, np.float32)),
           "labels": cp.asarray(np.ones(8, np.int64)), "mask_probs": dm}
    with cupy_strict.counting() as log:
        out = F.paste_masks(dm, db, (12, 14))
        res = postprocess.detections_to_original(det, (12, 14), (25, 29))
    assert log.syncs == 0, log.table()
    assert isinstance(out, cp.ndarray) and isinstance(res["masks"], cp.ndarray)
    assert_same_masks(cp.asnumpy(out), reference(masks, boxes, (12, 14)))
    assert res["masks"].shape == (8, 25, 29)
    # host arrays under the GPU backend are pasted on the host, by the reference
    host_out = postprocess.paste_masks(masks, boxes, (12, 14))
    assert isinstance(host_out, np.ndarray)
    assert_same_masks(host_out, reference(masks, boxes, (12, 14)))


def test_predict_pastes_on_the_device_and_copies_only_the_results(strict, monkeypatch):
    """``predict`` hands device detections to ``detections_to_original`` (so the paste runs on the
    device) and returns host NumPy arrays."""
    from mrcnn_np.model import build_model, get_config
    from mrcnn_np.model import mask_rcnn
    cp, _ = strict
    seen = []
    original = mask_rcnn.detections_to_original

    def spy(det, *args, **kwargs):
        seen.append({k: type(v) for k, v in det.items()})
        out = original(det, *args, **kwargs)
        seen.append({k: type(v) for k, v in out.items()})
        return out
    monkeypatch.setattr(mask_rcnn, "detections_to_original", spy)
    model = build_model(get_config("tiny"), seed=0)
    images = np.random.default_rng(0).uniform(size=(1, 3, 64, 64)).astype(np.float32)
    res = model.predict(images, original_sizes=[(96, 80)])[0]
    assert seen and all(t is cp.ndarray for d in seen for t in d.values()), seen
    assert set(res) == {"boxes", "scores", "labels", "masks"}
    assert all(type(v) is np.ndarray for v in res.values())
    assert res["masks"].dtype == bool and res["masks"].shape[1:] == (96, 80)


# ----------------------------------------------------- numba-cuda, under Numba's CUDA simulator
def _numba_cuda_parity():
    """Run in a child process with NUMBA_ENABLE_CUDASIM=1 (it must be set before numba.cuda is first
    imported, and would change numba.cuda for the rest of this process)."""
    mrcnn_np.set_backend("numba-cuda")
    from mrcnn_np.backends.numba_cuda.paste import paste_masks as kernel
    assert dispatch.kernel("numba-cuda", "paste_masks") is kernel
    rng = np.random.default_rng(10)
    for dt in DTYPES:
        # the simulator runs each CUDA thread in Python (about 1 ms): small planes
        masks, boxes = paste_cases(rng, 7, 9, 3, dt, n_random=3)
        want = reference(masks, boxes, (7, 9))
        assert_same_masks(kernel(masks, boxes, (7, 9)), want)
        assert_same_masks(F.paste_masks(masks, boxes, (7, 9)), want)
        assert F.paste_masks(masks[:0], boxes[:0], (7, 9)).shape == (0, 7, 9)
        det = {"boxes": np.clip(boxes[:4], 0, [9, 7, 9, 7]).astype(dt), "mask_probs": masks[:4],
               "scores": np.ones(4, dt), "labels": np.ones(4, np.int64)}
        got = postprocess.detections_to_original(det, (7, 9), (11, 13))
        mrcnn_np.set_backend("numpy")
        assert_same_masks(got["masks"], postprocess.detections_to_original(det, (7, 9), (11, 13))["masks"])
        mrcnn_np.set_backend("numba-cuda")
    print("numba-cuda paste parity ok")


def test_numba_cuda_kernel_equals_the_reference_under_the_simulator():
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("MRCNN_BACKEND", None)
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_paste_op; "
            f"test_paste_op._numba_cuda_parity()")
    proc = subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning", "-c", code],
                          cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "parity ok" in output, output
