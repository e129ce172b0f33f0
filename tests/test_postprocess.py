"""Postprocessing: score threshold, per-class NMS, top-N, mask channel selection, mask pasting."""
import math
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_np.detection.postprocess import (paste_masks, postprocess_boxes, postprocess_masks,
                                            select_class_masks)


def logits_for(probs):
    """Logits whose softmax is ``probs`` (rows sum to 1)."""
    return np.log(np.asarray(probs, dtype=np.float64))


# ---- boxes ------------------------------------------------------------------------------------

def test_hand_case():
    proposals = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    # K = 2 classes; proposal 0: class 1 (0.7); proposal 1: class 1 (0.6) and 2 (0.3);
    # proposal 2: background mostly, class 2 at 0.04 (below 0.05)
    logits = logits_for([[0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.95, 0.01, 0.04]])
    deltas = np.zeros((3, 12), np.float32)                       # boxes = proposals
    det = postprocess_boxes(logits, deltas, proposals, (64, 64))
    # class 1: proposals 0 (0.7) and 1 (0.6) overlap (IoU 90/110 = 0.82) -> 0 only;
    # class 2: proposal 1 (0.3) suppresses proposal 0 (0.1); proposal 2 is below 0.05 everywhere
    np.testing.assert_array_equal(det["labels"], [1, 2])
    np.testing.assert_allclose(det["scores"], [0.7, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(det["boxes"], proposals[[0, 1]])
    assert det["labels"].dtype == np.int64
    det = postprocess_boxes(logits, deltas, proposals, (64, 64), nms_thresh=0.9)   # no suppression
    np.testing.assert_array_equal(det["labels"], [1, 1, 2, 2])
    np.testing.assert_allclose(det["scores"], [0.7, 0.6, 0.3, 0.1], rtol=1e-6)
    det = postprocess_boxes(logits, deltas, proposals, (64, 64), nms_thresh=0.9, detections_per_img=3)
    np.testing.assert_array_equal(det["labels"], [1, 1, 2])
    det = postprocess_boxes(logits, deltas, proposals, (64, 64), score_thresh=0.5)
    np.testing.assert_array_equal(det["labels"], [1])


def test_delta_layouts_with_and_without_background_agree():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 40, (20, 2))
    proposals = np.concatenate([xy, xy + rng.uniform(10, 50, (20, 2))], 1).astype(np.float32)
    logits = rng.normal(size=(20, 4)).astype(np.float32)
    deltas = rng.normal(size=(20, 16)).astype(np.float32)
    a = postprocess_boxes(logits, deltas, proposals, (100, 100))
    b = postprocess_boxes(logits, deltas[:, 4:], proposals, (100, 100))
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (a["boxes"] >= 0).all() and (a["boxes"] <= 100).all()       # clipped


def test_no_detections():
    proposals = np.zeros((0, 4), np.float32)
    det = postprocess_boxes(np.zeros((0, 3), np.float32), np.zeros((0, 12), np.float32), proposals, (8, 8))
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].shape == (0,)
    det = postprocess_masks(det, np.zeros((0, 3, 28, 28), np.float32), (8, 8))
    assert det["masks"].shape == (0, 8, 8) and det["masks"].dtype == bool


def test_bad_input():
    p = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"class_logits: expected shape \(2, K\+1\)"):
        postprocess_boxes(np.zeros((3, 3)), np.zeros((2, 12)), p, (8, 8))
    with pytest.raises(ValueError, match=r"box_deltas: expected shape \(2, 12\) or \(2, 8\)"):
        postprocess_boxes(np.zeros((2, 3)), np.zeros((2, 10)), p, (8, 8))
    with pytest.raises(ValueError, match=r"masks: expected shape \(2, m, m\)"):
        paste_masks(np.zeros((3, 4, 4)), p, (8, 8))
    with pytest.raises(ValueError, match=r"labels: channel out of range"):
        select_class_masks(np.zeros((1, 3, 4, 4)), np.array([3]))


def test_matches_torchvision_postprocess_detections():
    torch = pytest.importorskip("torch")
    roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
    det_utils = pytest.importorskip("torchvision.models.detection._utils")
    rng = np.random.default_rng(3)
    r, k1 = 300, 5
    xy = rng.uniform(0, 80, (r, 2))
    proposals = np.concatenate([xy, xy + rng.uniform(4, 40, (r, 2))], 1).astype(np.float32)
    logits = (rng.normal(size=(r, k1)) * 2).astype(np.float32)
    deltas = (rng.normal(size=(r, 4 * k1)) * 0.5).astype(np.float32)
    stub = types.SimpleNamespace(box_coder=det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), score_thresh=0.05,
                                 nms_thresh=0.5, detections_per_img=100)
    boxes, scores, labels = roi_heads.RoIHeads.postprocess_detections(
        stub, torch.from_numpy(logits), torch.from_numpy(deltas), [torch.from_numpy(proposals)], [(90, 100)])
    ours = postprocess_boxes(logits, deltas, proposals, (90, 100))
    np.testing.assert_array_equal(ours["labels"], labels[0].numpy())
    np.testing.assert_allclose(ours["scores"], scores[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours["boxes"], boxes[0].numpy(), rtol=1e-5, atol=1e-4)


# ---- masks ------------------------------------------------------------------------------------

def test_select_class_masks():
    logits = np.zeros((2, 3, 2, 2))
    logits[0, 2] = 10.0
    logits[1, 0] = -10.0
    p = select_class_masks(logits, np.array([2, 1]))                  # channel = label
    np.testing.assert_allclose(p[0], 1 / (1 + math.exp(-10)))
    np.testing.assert_allclose(p[1], 0.5)
    p = select_class_masks(logits, np.array([3, 1]), background_channel=False)   # channel = label - 1
    np.testing.assert_allclose(p[0], 1 / (1 + math.exp(-10)))
    np.testing.assert_allclose(p[1], 1 / (1 + math.exp(10)))


def test_paste_bilinear_by_hand():
    mask = np.array([[[0.0, 1.0], [0.0, 1.0]]])                       # m = 2: left cells 0, right 1
    box = np.array([[0.0, 0.0, 4.0, 4.0]])
    # pixel centres 0.5 .. 3.5 -> u = c * 2 / 4 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped to
    # 0, 0.25, 0.75, 1 -> values 0, 0.25, 0.75, 1
    out = paste_masks(mask, box, (6, 6))
    expected = np.zeros((6, 6), bool)
    expected[:4, 2:4] = True
    np.testing.assert_array_equal(out[0], expected)
    expected[:4, 1] = True
    np.testing.assert_array_equal(paste_masks(mask, box, (6, 6), threshold=0.2)[0], expected)


def test_paste_edge_cases():
    ones = np.ones((4, 5, 5))
    boxes = np.array([[-10, -10, 3.2, 2.7],       # sticks out of the top-left corner
                      [30, 30, 40, 40],           # entirely outside
                      [2.6, 2.6, 3.4, 3.4],       # under a pixel, with no pixel centre inside
                      [2.2, 2.2, 2.8, 2.8]])      # under a pixel, around the centre of pixel (2, 2)
    out = paste_masks(ones, boxes, (8, 8))
    assert out[0, :3, :3].all() and out[0].sum() == 9                 # centres 0.5, 1.5, 2.5
    assert not out[1].any() and not out[2].any()
    assert out[3].sum() == 1 and out[3, 2, 2]
    assert not paste_masks(np.zeros((1, 5, 5)), boxes[:1], (8, 8)).any()


@settings(max_examples=200, deadline=None)
@given(x1=st.floats(-8, 24), y1=st.floats(-8, 24), w=st.floats(0, 20), h=st.floats(0, 20),
       m=st.integers(1, 9))
def test_full_mask_pastes_to_exactly_the_box_pixels(x1, y1, w, h, m):
    """All-ones m x m mask -> exactly the pixels whose centres lie in [x1, x2) x [y1, y2), clipped."""
    x2, y2 = x1 + w, y1 + h
    out = paste_masks(np.ones((1, m, m), np.float32), np.array([[x1, y1, x2, y2]]), (16, 20))
    cy = np.arange(16)[:, None] + 0.5
    cx = np.arange(20)[None, :] + 0.5
    expected = (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2)
    np.testing.assert_array_equal(out[0], expected)


def test_postprocess_masks_end_to_end():
    det = {"boxes": np.array([[2.0, 2.0, 6.0, 6.0]]), "scores": np.array([0.9]), "labels": np.array([1])}
    logits = np.full((1, 2, 4, 4), -5.0)
    logits[0, 1] = 5.0                                                 # class 1: everything inside
    out = postprocess_masks(det, logits, (8, 8))
    assert set(out) == {"boxes", "scores", "labels", "masks"}
    expected = np.zeros((8, 8), bool)
    expected[2:6, 2:6] = True
    np.testing.assert_array_equal(out["masks"][0], expected)


def test_batched_postprocess_equals_image_by_image():
    """postprocess_boxes_batch (one NMS for the batch, label = image * (K + 1) + class) gives each
    image exactly what postprocess_boxes gives it alone, including images with no RoIs."""
    from mrcnn_np.detection.postprocess import postprocess_boxes, postprocess_boxes_batch
    rng = np.random.default_rng(7)
    counts, sizes, k1 = [30, 0, 45], [(60, 80), (50, 50), (64, 40)], 4
    logits = rng.normal(0, 2, (sum(counts), k1))
    deltas = rng.normal(0, 0.5, (sum(counts), 4 * k1))
    props = []
    for c, (h, w) in zip(counts, sizes):
        xy = rng.uniform(0, [w - 10, h - 10], (c, 2))
        props.append(np.concatenate([xy, xy + rng.uniform(4, 30, (c, 2))], 1))
    props = np.concatenate(props)
    got = postprocess_boxes_batch(logits, deltas, props, counts, sizes, score_thresh=0.1,
                                  nms_thresh=0.5, detections_per_img=12)
    start = 0
    for i, c in enumerate(counts):
        want = postprocess_boxes(logits[start:start + c], deltas[start:start + c], props[start:start + c],
                                 sizes[i], score_thresh=0.1, nms_thresh=0.5, detections_per_img=12)
        start += c
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(got[i][key], want[key], err_msg=f"image {i} {key}")
    assert [len(d["scores"]) for d in got][1] == 0 and len(got[0]["scores"]) == 12
