"""Boxes: IoU, area, clipping, small-box removal, the box coder."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_np.detection.boxes import (BBOX_XFORM_CLIP, BoxCoder, box_area, box_iou, check_boxes,
                                      clip_boxes, remove_small_boxes)


def random_boxes(rng, n, size=100.0, dtype=np.float32):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(0.5, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


# ---- hand-computed cases -----------------------------------------------------------------------

def test_iou_unit_squares_offset_by_half():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    b = np.array([[0.5, 0.0, 1.5, 1.0]])
    # intersection 0.5 x 1, union 1 + 1 - 0.5
    np.testing.assert_allclose(box_iou(a, b), [[0.5 / 1.5]])


def test_iou_matrix_shape_and_values():
    a = np.array([[0, 0, 2, 2], [10, 10, 12, 12]], dtype=np.float64)
    b = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]], dtype=np.float64)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou, [[1.0, 1 / 7, 0.0], [0.0, 0.0, 0.0]])


def test_iou_zero_area_is_zero_not_nan():
    a = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]])      # a point and a line
    b = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    iou = box_iou(a, b)
    assert not np.isnan(iou).any()
    np.testing.assert_array_equal(iou, 0.0)


def test_iou_empty_inputs_and_dtypes():
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert box_iou(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)
    f32 = np.array([[0, 0, 1, 1]], dtype=np.float32)
    assert box_iou(f32, f32).dtype == np.float32
    ints = np.array([[0, 0, 2, 2]])
    assert box_iou(ints, ints).dtype == np.float64
    assert box_iou(ints, ints)[0, 0] == 1.0


def test_box_area():
    boxes = np.array([[0, 0, 2, 3], [1, 1, 1, 4], [0.5, 0.5, 1.0, 1.5]])
    np.testing.assert_allclose(box_area(boxes), [6.0, 0.0, 0.5])
    assert box_area(boxes.reshape(3, 1, 4)).shape == (3, 1)


def test_clip_boxes_x_to_width_y_to_height():
    boxes = np.array([[-5.0, -5.0, 50.0, 50.0], [10.0, 20.0, 30.0, 25.0]])
    out = clip_boxes(boxes, (20, 40))                               # h = 20, w = 40
    np.testing.assert_array_equal(out, [[0, 0, 40, 20], [10, 20, 30, 20]])
    assert boxes[0, 0] == -5.0                                       # input untouched
    class_specific = np.tile(boxes[:, None], (1, 3, 1))             # (R, K, 4)
    np.testing.assert_array_equal(clip_boxes(class_specific, (20, 40))[:, 2], out)


def test_remove_small_boxes_returns_kept_indices():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.5, 2], [0, 0, 2, 0.99], [0, 0, 3, 3.0]])
    keep = remove_small_boxes(boxes, 1.0)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(keep, [0, 3])
    assert remove_small_boxes(np.zeros((0, 4)), 1.0).shape == (0,)


def test_encode_known_box():
    proposal = np.array([[0.0, 0.0, 10.0, 10.0]])                    # centre (5, 5), 10 x 10
    gt = np.array([[5.0, 5.0, 25.0, 15.0]])                           # centre (15, 10), 20 x 10
    np.testing.assert_allclose(BoxCoder().encode(gt, proposal), [[1.0, 0.5, math.log(2), 0.0]])
    np.testing.assert_allclose(BoxCoder((10, 10, 5, 5)).encode(gt, proposal),
                               [[10.0, 5.0, 5 * math.log(2), 0.0]])


def test_decode_known_deltas_and_clamp():
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    out = BoxCoder().decode(np.array([[1.0, 0.5, math.log(2), 0.0]]), box)
    np.testing.assert_allclose(out, [[5.0, 5.0, 25.0, 15.0]])
    big = BoxCoder().decode(np.array([[0.0, 0.0, 100.0, 100.0]]), box)   # clamped at log(1000/16)
    np.testing.assert_allclose(big[0, 2] - big[0, 0], 10 * math.exp(BBOX_XFORM_CLIP))
    np.testing.assert_allclose(big[0, 2] - big[0, 0], 625.0)
    assert np.isfinite(BoxCoder().decode(np.full((1, 4), 1e6), box)).all()


def test_decode_class_specific_layouts_agree():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 6, dtype=np.float64)
    deltas = rng.normal(size=(6, 3, 4))
    coder = BoxCoder((10, 10, 5, 5))
    out3 = coder.decode(deltas, boxes)                                # (R, K, 4) -> (R, K, 4)
    out2 = coder.decode(deltas.reshape(6, 12), boxes)                 # (R, 4K) -> (R, 4K)
    assert out3.shape == (6, 3, 4) and out2.shape == (6, 12)
    np.testing.assert_array_equal(out2.reshape(6, 3, 4), out3)
    for k in range(3):                                                 # each class decodes alone
        np.testing.assert_allclose(coder.decode(deltas[:, k], boxes), out3[:, k])


def test_decode_empty():
    assert BoxCoder().decode(np.zeros((0, 8)), np.zeros((0, 4))).shape == (0, 8)


# ---- bad input --------------------------------------------------------------------------------

def test_bad_shapes_raise_value_error_naming_the_argument():
    with pytest.raises(ValueError, match=r"a: expected an \(N, 4\).*\(3, 5\)"):
        box_iou(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"deltas: expected \(R, 4\)"):
        BoxCoder().decode(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"deltas: expected 3 rows"):
        BoxCoder().decode(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"proposals: expected 2 boxes"):
        BoxCoder().encode(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"weights"):
        BoxCoder((1, 1, 0, 1))
    with pytest.raises(ValueError, match=r"image_size: expected \(h, w\)"):
        clip_boxes(np.zeros((1, 4)), 5)


def test_check_boxes_ordered_names_the_offending_box():
    good = np.array([[0, 0, 1, 1.0], [2, 2, 2, 3.0]])
    check_boxes("gt_boxes", good, ordered=True)
    bad = np.array([[0, 0, 1, 1.0], [0, 0, 1, 1.0], [5, 0, 4, 1.0]])
    with pytest.raises(ValueError, match=r"gt_boxes: box 2 has x2 < x1"):
        check_boxes("gt_boxes", bad, ordered=True)
    with pytest.raises(ValueError, match=r"gt_boxes: box 0 is not finite"):
        check_boxes("gt_boxes", np.array([[0, 0, np.nan, 1.0]]), ordered=True)


# ---- properties -------------------------------------------------------------------------------

coord = st.floats(-1000, 1000, allow_nan=False, width=64)
log_ratio = st.floats(-3.0, 3.0)                      # well inside the decode clamp (log 62.5 = 4.1)


@settings(max_examples=200, deadline=None)
@given(x=coord, y=coord, w=st.floats(0.5, 500), h=st.floats(0.5, 500),
       dx=st.floats(-3, 3), dy=st.floats(-3, 3), lw=log_ratio, lh=log_ratio,
       weights=st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]))
def test_encode_decode_round_trip(x, y, w, h, dx, dy, lw, lh, weights):
    p = np.array([[x, y, x + w, y + h]])
    gw, gh = w * math.exp(lw), h * math.exp(lh)
    gx, gy = x + dx * w, y + dy * h
    g = np.array([[gx, gy, gx + gw, gy + gh]])
    coder = BoxCoder(weights)
    t = coder.encode(g, p)
    np.testing.assert_allclose(coder.decode(t, p), g, rtol=1e-9, atol=1e-9 * (1 + abs(g).max()))
    # and the other way round: encode(decode(t)) == t
    np.testing.assert_allclose(coder.encode(coder.decode(t, p), p), t, rtol=1e-7, atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 12), m=st.integers(0, 12))
def test_iou_is_symmetric_bounded_and_one_on_itself(seed, n, m):
    rng = np.random.default_rng(seed)
    a = np.round(random_boxes(rng, n, size=20, dtype=np.float64))   # rounding makes some degenerate
    b = np.round(random_boxes(rng, m, size=20, dtype=np.float64))
    iou = box_iou(a, b)
    assert iou.shape == (n, m) and np.isfinite(iou).all()
    assert ((iou >= 0) & (iou <= 1)).all()
    np.testing.assert_array_equal(iou, box_iou(b, a).T)
    d = np.diag(box_iou(a, a))
    np.testing.assert_array_equal(d, np.where(box_area(a) > 0, 1.0, 0.0))


# ---- torchvision cross-check (skipped where torchvision is absent, e.g. CI) -----------------

def test_matches_torchvision():
    torch = pytest.importorskip("torch")
    tvops = pytest.importorskip("torchvision.ops")
    det_utils = pytest.importorskip("torchvision.models.detection._utils")
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 50), random_boxes(rng, 40)
    t = torch.from_numpy
    np.testing.assert_array_equal(box_iou(a, b), tvops.box_iou(t(a), t(b)).numpy())
    np.testing.assert_array_equal(clip_boxes(a, (60, 80)),
                                  tvops.clip_boxes_to_image(torch.from_numpy(a), (60, 80)).numpy())
    np.testing.assert_array_equal(remove_small_boxes(a, 20.0),
                                  tvops.remove_small_boxes(torch.from_numpy(a), 20.0).numpy())
    weights = (10.0, 10.0, 5.0, 5.0)
    ours, theirs = BoxCoder(weights), det_utils.BoxCoder(weights)
    g = random_boxes(rng, 50)
    np.testing.assert_allclose(ours.encode(g, a), theirs.encode_single(t(g), t(a)).numpy(), rtol=1e-5, atol=1e-5)
    deltas = rng.normal(size=(50, 12)).astype(np.float32) * 3
    np.testing.assert_allclose(ours.decode(deltas, a).reshape(50, 3, 4),
                               theirs.decode(torch.from_numpy(deltas), [torch.from_numpy(a)]).numpy(),
                               rtol=1e-5, atol=1e-3)
