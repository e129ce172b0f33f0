"""Proposals: top-k per level, decode, clip, small-box removal, per-level NMS, top-k per image."""
import functools
import types

import numpy as np
import pytest

from mrcnn_np.detection.anchors import AnchorGenerator
from mrcnn_np.detection.boxes import BoxCoder
from mrcnn_np.detection.proposals import ProposalSettings, generate_proposals, top_k_indices


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_hand_case():
    anchors = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [-5, -5, 5, 5]], np.float32)
    logits = np.array([[3.0, 2.0, 1.0, 0.0]], np.float32)
    deltas = np.zeros((1, 4, 4), np.float32)
    # anchor 2 is clipped to a point (16, 16, 16, 16) and removed; anchor 1 overlaps anchor 0 with
    # IoU 81 / 119 = 0.68 (suppressed at 0.5); anchor 3 is clipped to (0, 0, 5, 5): IoU 0.25, kept
    ((boxes, scores),) = generate_proposals([logits], [deltas], [anchors], [(16, 16)],
                                            ProposalSettings(nms_thresh=0.5))
    np.testing.assert_array_equal(boxes, [[0, 0, 10, 10], [0, 0, 5, 5]])
    np.testing.assert_allclose(scores, sigmoid(np.array([3.0, 0.0])), rtol=1e-6)
    ((boxes, _),) = generate_proposals([logits], [deltas], [anchors], [(16, 16)], ProposalSettings())
    assert len(boxes) == 3                                                 # at 0.7 anchor 1 survives


def test_deltas_are_decoded():
    anchors = np.array([[0, 0, 10, 10]], np.float32)
    deltas = np.array([[[0.5, 0.0, np.log(2), 0.0]]], np.float32)
    ((boxes, _),) = generate_proposals([np.zeros((1, 1), np.float32)], [deltas], [anchors], [(100, 100)])
    np.testing.assert_allclose(boxes, [[0, 0, 20, 10]], atol=1e-5)


def test_nms_is_per_level_and_top_k_per_level():
    box = np.array([[0, 0, 10, 10]], np.float32)
    lv0 = np.tile(box, (5, 1)) + np.arange(5, dtype=np.float32)[:, None] * 20   # 5 separate boxes
    lv1 = box.copy()                                                          # same as lv0[0]
    logits = [np.array([[5.0, 4.0, 3.0, 2.0, 1.0]], np.float32), np.array([[0.5]], np.float32)]
    deltas = [np.zeros((1, 5, 4), np.float32), np.zeros((1, 1, 4), np.float32)]
    settings = ProposalSettings(pre_nms_top_n=2, post_nms_top_n=10)
    ((boxes, scores),) = generate_proposals(logits, deltas, [lv0, lv1], [(200, 200)], settings)
    # level 0 keeps its top 2; the level-1 copy of box 0 survives NMS (different level)
    np.testing.assert_array_equal(boxes, [lv0[0], lv0[1], lv1[0]])
    np.testing.assert_allclose(scores, sigmoid(np.array([5.0, 4.0, 0.5])), rtol=1e-6)
    settings = ProposalSettings(pre_nms_top_n=5, post_nms_top_n=3)
    ((boxes, _),) = generate_proposals(logits, deltas, [lv0, lv1], [(200, 200)], settings)
    assert len(boxes) == 3


def test_batch_and_image_sizes():
    gen = AnchorGenerator(sizes=((16,), (32,)), strides=(4, 8))
    anchors = gen([(8, 8), (4, 4)])
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(2, a.shape[0])).astype(np.float32) for a in anchors]
    deltas = [rng.normal(scale=0.1, size=(2, a.shape[0], 4)).astype(np.float32) for a in anchors]
    out = generate_proposals(logits, deltas, anchors, [(32, 32), (20, 28)], ProposalSettings.test())
    assert len(out) == 2
    for (boxes, scores), (h, w) in zip(out, [(32, 32), (20, 28)]):
        assert boxes.shape[1] == 4 and scores.shape == (boxes.shape[0],)
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all()
        assert (np.diff(scores) <= 0).all() and np.isfinite(boxes).all()


def test_settings():
    assert ProposalSettings.train().pre_nms_top_n == 2000
    assert ProposalSettings.test().post_nms_top_n == 1000
    assert ProposalSettings.test(nms_thresh=0.6).nms_thresh == 0.6
    with pytest.raises(ValueError, match="post_nms_top_n"):
        ProposalSettings(post_nms_top_n=0)


def test_top_k_indices_ties_by_index():
    s = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0])
    np.testing.assert_array_equal(top_k_indices(s, 3), [1, 3, 2])
    np.testing.assert_array_equal(top_k_indices(s, 4), [1, 3, 2, 4])
    np.testing.assert_array_equal(top_k_indices(s, 10), [1, 3, 2, 4, 5, 0])
    assert top_k_indices(np.zeros(0), 3).shape == (0,)


def test_bad_input():
    a = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"deltas\[0\]: expected shape \(1, 4, 4\)"):
        generate_proposals([np.zeros((1, 4))], [np.zeros((1, 3, 4))], [a], [(8, 8)])
    with pytest.raises(ValueError, match=r"anchors\[0\]"):
        generate_proposals([np.zeros((1, 4))], [np.zeros((1, 4, 4))], [a[:3]], [(8, 8)])
    with pytest.raises(ValueError, match=r"image_sizes: expected 1"):
        generate_proposals([np.zeros((1, 4))], [np.zeros((1, 4, 4))], [a], [])


def test_matches_torchvision_filter_proposals():
    torch = pytest.importorskip("torch")
    rpn = pytest.importorskip("torchvision.models.detection.rpn")
    det_utils = pytest.importorskip("torchvision.models.detection._utils")
    gen = AnchorGenerator(sizes=((16,), (32,), (64,)), strides=(4, 8, 16))
    anchors = gen([(16, 16), (8, 8), (4, 4)])
    rng = np.random.default_rng(1)
    logits = [rng.normal(size=(2, a.shape[0])).astype(np.float32) for a in anchors]
    deltas = [rng.normal(scale=0.3, size=(2, a.shape[0], 4)).astype(np.float32) for a in anchors]
    sizes = [(64, 64), (50, 60)]
    settings = ProposalSettings(pre_nms_top_n=300, post_nms_top_n=200)
    ours = generate_proposals(logits, deltas, anchors, sizes, settings)
    # torchvision: decode every anchor, then filter (unbound method on a stand-in RPN)
    stub = types.SimpleNamespace(pre_nms_top_n=lambda: 300, post_nms_top_n=lambda: 200,
                                 min_size=1e-3, score_thresh=0.0, nms_thresh=0.7)
    stub._get_top_n_idx = functools.partial(rpn.RegionProposalNetwork._get_top_n_idx, stub)
    all_anchors = torch.from_numpy(np.concatenate(anchors))
    all_deltas = torch.from_numpy(np.concatenate(deltas, axis=1)).reshape(-1, 4)
    decoded = det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(all_deltas, [all_anchors, all_anchors])
    boxes_t, scores_t = rpn.RegionProposalNetwork.filter_proposals(
        stub, decoded.reshape(2, -1, 4), torch.from_numpy(np.concatenate(logits, axis=1)), sizes,
        [a.shape[0] for a in anchors])
    for (b, s), bt, st in zip(ours, boxes_t, scores_t):
        np.testing.assert_allclose(b, bt.numpy(), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(s, st.numpy(), rtol=1e-6)


def test_box_coder_is_configurable():
    anchors = np.array([[0, 0, 10, 10]], np.float32)
    deltas = np.array([[[5.0, 0.0, 0.0, 0.0]]], np.float32)
    ((boxes, _),) = generate_proposals([np.zeros((1, 1), np.float32)], [deltas], [anchors], [(100, 100)],
                                       box_coder=BoxCoder((10, 10, 5, 5)))
    np.testing.assert_allclose(boxes, [[5, 0, 15, 10]], atol=1e-5)
