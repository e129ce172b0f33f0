"""Mask targets: the matched object's mask, cropped to each positive RoI with RoIAlign, thresholded."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_np.detection.mask_targets import build_mask_targets
from mrcnn_np.detection.roi_targets import build_roi_targets


def rect_mask(h, w, x1, y1, x2, y2):
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def test_roi_equal_to_the_object_box_is_all_ones():
    masks = rect_mask(16, 16, 4, 2, 12, 10)[None]
    t = build_mask_targets(masks, np.array([[4, 2, 12, 10]], np.float32), np.array([0]), mask_size=4)
    assert t.shape == (1, 4, 4) and t.dtype == np.float32
    np.testing.assert_array_equal(t, 1.0)


def test_half_covered_roi_by_hand():
    masks = rect_mask(16, 16, 0, 0, 8, 16)[None]                     # left half of the image
    t = build_mask_targets(masks, np.array([[0, 0, 16, 16]], np.float32), np.array([0]), mask_size=4)
    np.testing.assert_array_equal(t[0], [[1, 1, 0, 0]] * 4)
    # a RoI shifted right by 4 px sees the object in its first quarter only
    t = build_mask_targets(masks, np.array([[4, 0, 20, 16]], np.float32), np.array([0]), mask_size=4)
    np.testing.assert_array_equal(t[0], [[1, 0, 0, 0]] * 4)


def test_each_roi_uses_its_own_object():
    masks = np.stack([rect_mask(20, 20, 0, 0, 10, 20), rect_mask(20, 20, 10, 0, 20, 20),
                      rect_mask(20, 20, 0, 0, 20, 20)])
    rois = np.array([[0, 0, 20, 20]] * 3, np.float32)
    t = build_mask_targets(masks, rois, np.array([1, 0, 1]), mask_size=2)
    np.testing.assert_array_equal(t, [[[0, 1], [0, 1]], [[1, 0], [1, 0]], [[0, 1], [0, 1]]])
    assert build_mask_targets(masks, rois, np.array([1, 0, 1])).shape == (3, 28, 28)


def test_no_positives():
    t = build_mask_targets(np.zeros((2, 8, 8), bool), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert t.shape == (0, 28, 28)


def test_image_without_objects_end_to_end():
    proposals = np.array([[0, 0, 10, 10], [2, 2, 30, 30]], np.float32)
    t = build_roi_targets(proposals, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng=0)
    masks = build_mask_targets(np.zeros((0, 32, 32), bool), t.rois[:t.num_pos], t.matched_gt[:t.num_pos])
    assert masks.shape == (0, 28, 28)
    assert not np.isnan(t.regression_targets).any() and (t.labels == 0).all()


def test_pipeline_with_objects():
    gt = np.array([[4, 4, 20, 28], [24, 8, 40, 24]], np.float32)
    gt_masks = np.stack([rect_mask(48, 48, 4, 4, 20, 28), rect_mask(48, 48, 24, 8, 40, 24)])
    rng = np.random.default_rng(0)
    proposals = np.repeat(gt, 20, axis=0) + rng.normal(0, 1.5, (40, 4)).astype(np.float32)
    t = build_roi_targets(proposals, gt, np.array([1, 2]), rng=0)
    pos = slice(0, t.num_pos)
    masks = build_mask_targets(gt_masks, t.rois[pos], t.matched_gt[pos])
    assert masks.shape == (t.num_pos, 28, 28) and t.num_pos > 0
    assert masks.mean() > 0.7                                         # RoIs sit on their objects
    # the gt box RoI (added as a proposal) sees a full mask
    is_gt = (t.rois[pos][:, None] == gt[None]).all(-1).any(-1)
    assert is_gt.any() and (masks[is_gt] == 1).all()


def test_bad_input():
    masks = np.zeros((2, 8, 8), bool)
    with pytest.raises(ValueError, match=r"matched_gt: expected object indices in \[0, 1\]"):
        build_mask_targets(masks, np.zeros((1, 4), np.float32), np.array([2]))
    with pytest.raises(ValueError, match=r"matched_gt: expected shape \(1,\)"):
        build_mask_targets(masks, np.zeros((1, 4), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"gt_masks: expected a \(G, H, W\)"):
        build_mask_targets(masks[0], np.zeros((1, 4), np.float32), np.array([0]))


@settings(max_examples=40, deadline=None)
@given(x1=st.floats(0, 20), y1=st.floats(0, 20), w=st.floats(1, 20), h=st.floats(1, 20))
def test_full_mask_gives_full_target_inside_the_image(x1, y1, w, h):
    masks = np.ones((1, 48, 48), bool)
    t = build_mask_targets(masks, np.array([[x1, y1, x1 + w, y1 + h]], np.float32), np.array([0]),
                           mask_size=7)
    np.testing.assert_array_equal(t, 1.0)


def test_matches_torchvision_roi_align():
    torch = pytest.importorskip("torch")
    tvops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(0)
    masks = rng.random((3, 40, 50)) > 0.5
    rois = np.concatenate([rng.uniform(0, 25, (30, 2)), rng.uniform(30, 50, (30, 2))], 1).astype(np.float32)
    matched = rng.integers(0, 3, 30)
    ours = build_mask_targets(masks, rois, matched, mask_size=14)
    boxes = torch.from_numpy(np.concatenate([matched[:, None].astype(np.float32), rois], 1))
    theirs = tvops.roi_align(torch.from_numpy(masks[:, None].astype(np.float32)), boxes, (14, 14), 1.0, 2,
                             aligned=True)[:, 0].numpy() >= 0.5
    np.testing.assert_array_equal(ours, theirs.astype(np.float32))
