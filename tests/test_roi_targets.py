"""RoI-head targets (add gt, match 0.5, sample, encode) and FPN level assignment."""
import math

import numpy as np
import pytest

from mrcnn_np.detection.boxes import BoxCoder
from mrcnn_np.detection.level_mapper import LevelMapper
from mrcnn_np.detection.roi_targets import build_roi_targets


def test_hand_case():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    labels = np.array([3])
    proposals = np.array([[0, 0, 10, 12],          # IoU 100/120 = 0.83 -> class 3
                          [5, 0, 15, 10],          # IoU 50/150 = 0.33 -> background
                          [40, 40, 50, 50]],       # IoU 0 -> background
                         np.float32)
    t = build_roi_targets(proposals, gt, labels, rng=0)
    assert t.num_pos == 2                                            # proposal 0 and the gt itself
    assert t.rois.shape == (4, 4) and t.labels.dtype == np.int64     # 3 proposals + 1 gt
    np.testing.assert_array_equal(t.labels, [3, 3, 0, 0])           # positives first
    np.testing.assert_array_equal(t.matched_gt, [0, 0, -1, -1])
    # encoded with weights (10, 10, 5, 5): (0, 10 * (5 - 6) / 12, 0, 5 log(10 / 12)) for proposal 0
    row = int(np.flatnonzero((t.rois[:2] == proposals[0]).all(1))[0])
    np.testing.assert_allclose(t.regression_targets[row], [0, -10 / 12, 0, 5 * math.log(10 / 12)], rtol=1e-5)
    np.testing.assert_allclose(t.regression_targets[1 - row], 0, atol=1e-6)   # the gt itself
    assert (t.regression_targets[2:] == 0).all()


def test_sampling_budget_and_fraction():
    rng = np.random.default_rng(0)
    gt = np.array([[10, 10, 60, 60], [100, 100, 180, 150]], np.float32)
    jitter = rng.normal(0, 2, (600, 4)).astype(np.float32)
    near = np.repeat(gt, 300, axis=0) + jitter                       # many positives
    far = rng.uniform(200, 400, (1000, 2)).astype(np.float32)
    far = np.concatenate([far, far + 20], 1)
    t = build_roi_targets(np.concatenate([near, far]), gt, np.array([1, 2]), rng=1)
    assert t.rois.shape[0] == 512 and t.num_pos == 128
    assert (t.labels[:128] >= 1).all() and (t.labels[128:] == 0).all()
    # class-specific regression: each positive's target re-creates its own gt from its RoI
    decoded = BoxCoder((10, 10, 5, 5)).decode(t.regression_targets[:128], t.rois[:128])
    np.testing.assert_allclose(decoded, gt[t.matched_gt[:128]], atol=1e-3)
    np.testing.assert_array_equal(t.labels[:128], np.array([1, 2])[t.matched_gt[:128]])
    again = build_roi_targets(np.concatenate([near, far]), gt, np.array([1, 2]), rng=1)
    np.testing.assert_array_equal(again.rois, t.rois)                 # seeded: reproducible


def test_image_without_objects():
    proposals = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    t = build_roi_targets(proposals, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng=0)
    assert t.num_pos == 0 and t.rois.shape == (2, 4)
    assert (t.labels == 0).all() and (t.matched_gt == -1).all()
    assert np.isfinite(t.regression_targets).all() and (t.regression_targets == 0).all()
    t = build_roi_targets(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32),
                          np.zeros(0, np.int64), rng=0)
    assert t.rois.shape == (0, 4) and t.labels.shape == (0,)


def test_degenerate_ground_truth():
    proposals = np.array([[0, 0, 10, 10]], np.float32)
    gt = np.array([[3, 3, 3, 8], [0, 0, 10, 10]], np.float32)     # box 0: zero width
    with pytest.warns(UserWarning, match=r"gt_boxes: dropping 1 zero-area"):
        t = build_roi_targets(proposals, gt, np.array([1, 2]), rng=0)
    assert set(t.matched_gt[:t.num_pos]) == {1}                      # index into the original list
    assert (t.labels[:t.num_pos] == 2).all()
    bad = np.array([[0, 0, 10, 10], [0, 9, 10, 2]], np.float32)     # y2 < y1 in box 1
    with pytest.raises(ValueError, match=r"gt_boxes: box 1 has x2 < x1 or y2 < y1"):
        build_roi_targets(proposals, bad, np.array([1, 1]), rng=0)
    with pytest.raises(ValueError, match=r"gt_labels: label 0 is 0"):
        build_roi_targets(proposals, gt[1:], np.array([0]), rng=0)
    with pytest.raises(ValueError, match=r"gt_labels: expected shape \(1,\)"):
        build_roi_targets(proposals, gt[1:], np.array([1, 2]), rng=0)


# ---- level mapper -----------------------------------------------------------------------------

def box(side):
    return np.array([[0.0, 0.0, side, side]])


def test_canonical_box_goes_to_k0():
    m = LevelMapper(2, 5)
    assert m(box(224))[0] == 4 - 2                                   # P4, index 2
    assert m(box(448))[0] == 3 and m(box(112))[0] == 1 and m(box(56))[0] == 0
    assert m(box(223.9))[0] == 1                                      # just below: one level down
    assert m(box(8))[0] == 0 and m(box(5000))[0] == 3                 # clamped to P2 / P5
    assert m(np.array([[0.0, 0, 0, 0]]))[0] == 0                      # zero area -> k_min
    assert m(np.zeros((0, 4))).shape == (0,)
    assert m(box(224)).dtype == np.int64


def test_canonical_scale_is_settable_for_small_images():
    small = np.array([[0, 0, 16, 16], [0, 0, 32, 32], [0, 0, 64, 64], [0, 0, 128, 128.0]])
    # s0 = 224: 4 + log2(128 / 224) = 3.19, so nothing reaches P4 or P5
    np.testing.assert_array_equal(LevelMapper(2, 5)(small), [0, 0, 0, 1])
    np.testing.assert_array_equal(LevelMapper(2, 5, canonical_scale=32)(small), [1, 2, 3, 3])
    np.testing.assert_array_equal(LevelMapper(2, 5, 32, canonical_level=3)(small), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="canonical_scale"):
        LevelMapper(2, 5, canonical_scale=0)


def test_level_mapper_matches_torchvision():
    torch = pytest.importorskip("torch")
    poolers = pytest.importorskip("torchvision.ops.poolers")
    rng = np.random.default_rng(0)
    wh = np.exp(rng.uniform(np.log(4), np.log(1000), (500, 2)))
    boxes = np.concatenate([np.zeros((500, 2)), wh], 1).astype(np.float32)
    boxes = np.concatenate([boxes, np.array([[0, 0, 2.0**k, 2.0**k] for k in range(2, 11)], np.float32)])
    for s0 in (224, 32):
        theirs = poolers.LevelMapper(2, 5, canonical_scale=s0)([torch.from_numpy(boxes)]).numpy()
        np.testing.assert_array_equal(LevelMapper(2, 5, canonical_scale=s0)(boxes), theirs)
