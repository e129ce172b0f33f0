"""NMS and batched NMS: hand cases, a plain-Python greedy reference, properties, torchvision."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_np.detection.boxes import box_iou
from mrcnn_np.ops.nms import batched_nms, batched_nms_coordinate_trick, nms

nms_module = importlib.import_module("mrcnn_np.ops.nms")


def reference_nms(boxes, scores, thr):
    """The textbook greedy loop, one box at a time, in Python floats (doubles)."""
    b = [tuple(float(v) for v in row) for row in boxes]
    order = sorted(range(len(b)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        x1, y1, x2, y2 = b[i]
        area_i = (x2 - x1) * (y2 - y1)
        ok = True
        for j in kept:
            u1, v1, u2, v2 = b[j]
            w = max(0.0, min(x2, u2) - max(x1, u1))
            h = max(0.0, min(y2, v2) - max(y1, v1))
            inter = w * h
            union = (u2 - u1) * (v2 - v1) + area_i - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return np.array(kept, dtype=np.int64)


def reference_batched(boxes, scores, labels, thr):
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.extend(idx[reference_nms(boxes[idx], scores[idx], thr)].tolist())
    keep = np.array(keep, dtype=np.int64)
    return keep[np.lexsort((keep, -scores[keep]))]                   # score desc, then index


def clustered_boxes(rng, n, img=200.0, clusters=8, dtype=np.float64):
    c = rng.uniform(0, img, (clusters, 2))
    s = rng.uniform(8, 60, (clusters, 2))
    k = rng.integers(0, clusters, n)
    ctr = c[k] + rng.normal(0, 0.15, (n, 2)) * s[k]
    wh = s[k] * np.exp(rng.normal(0, 0.25, (n, 2)))
    return np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=1).astype(dtype)


# ---- hand cases -------------------------------------------------------------------------------

def test_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) first; box 0 overlaps it with IoU 0.9 -> gone; box 1 vs 3: inter 9*8=72,
    # union 90 + 100 - 72 = 118, IoU 0.61 -> gone at 0.5, kept at 0.7; box 2 is far away.
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), [3, 1, 2])
    assert nms(boxes, scores, 0.5).dtype == np.int64


def test_strictly_greater_suppresses():
    boxes = np.array([[0, 0, 2, 1], [1, 0, 3, 1.0]])       # IoU exactly 1/3
    scores = np.array([0.9, 0.8])
    np.testing.assert_array_equal(nms(boxes, scores, 1 / 3), [0, 1])   # equal: not suppressed
    np.testing.assert_array_equal(nms(boxes, scores, 0.33), [0])
    # NOTE: in float32 the IoU 1/3 rounds *up* to 0.33333334, which is > the (double) threshold 1/3,
    # so torchvision suppresses here (checked against torchvision 0.29); we do the same.
    np.testing.assert_array_equal(nms(boxes.astype(np.float32), scores.astype(np.float32), 1 / 3), [0])


def test_ties_keep_index_order():
    boxes = np.array([[0, 0, 1, 1], [10, 10, 11, 11], [0, 0, 1, 1], [20, 20, 21, 21.0]])
    scores = np.array([0.5, 0.5, 0.5, 0.7])
    # equal scores: lower index first, so box 0 suppresses its copy, box 2
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 0, 1])


def test_empty_and_degenerate():
    out = nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert out.shape == (0,) and out.dtype == np.int64
    out = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
    assert out.shape == (0,) and out.dtype == np.int64
    pts = np.array([[1, 1, 1, 1], [1, 1, 1, 1.0]])        # zero-area boxes never suppress
    np.testing.assert_array_equal(nms(pts, np.array([0.2, 0.3]), 0.0), [1, 0])


def test_integer_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    np.testing.assert_array_equal(nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5), [0, 2])


def test_bad_input():
    with pytest.raises(ValueError, match=r"scores: expected shape \(2,\)"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"boxes: expected an \(N, 4\)"):
        nms(np.zeros((2, 5)), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        batched_nms(np.zeros((2, 4)), np.zeros(2), np.zeros(1, np.int64), 0.5)
    with pytest.raises(ValueError, match=r"scores: contains NaN"):
        nms(np.zeros((2, 4)), np.array([0.1, np.nan]), 0.5)
    with pytest.raises(ValueError, match=r"iou_threshold"):
        nms(np.zeros((2, 4)), np.zeros(2), "high")


def test_batched_hand_case():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    labels = np.array([0, 1, 0, 1])
    # class 0: 0 beats 2; class 1: 3 beats 1 (IoU 0.81)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), [3, 0])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3])


# ---- the reference, many blocks ----------------------------------------------------------------

@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_matches_reference_across_blocks(thr):
    rng = np.random.default_rng(int(thr * 10))
    n = 3 * nms_module._BLOCK + 17                      # several greedy blocks
    boxes = clustered_boxes(rng, n)
    scores = rng.random(n)
    np.testing.assert_array_equal(nms(boxes, scores, thr), reference_nms(boxes, scores, thr))
    labels = rng.integers(0, 3, n)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, thr),
                                  reference_batched(boxes, scores, labels, thr))


# ---- properties -------------------------------------------------------------------------------

@st.composite
def box_sets(draw, max_n=40):
    n = draw(st.integers(0, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    grid = draw(st.sampled_from([None, 1.0, 4.0]))       # snapping to a grid creates exact ties
    boxes = clustered_boxes(rng, n, img=60.0, clusters=3)
    if grid is not None:
        boxes = np.round(boxes / grid) * grid
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    scores = np.round(rng.random(n), draw(st.sampled_from([1, 2, 6])))   # few decimals: ties
    labels = rng.integers(0, draw(st.integers(1, 4)), n)
    return boxes, scores, labels


@settings(max_examples=150, deadline=None)
@given(data=box_sets(), thr=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_properties(data, thr):
    boxes, scores, _ = data
    keep = nms(boxes, scores, thr)
    np.testing.assert_array_equal(keep, reference_nms(boxes, scores, thr))
    # decreasing score, ties by index
    assert all((scores[a], -a) > (scores[b], -b) for a, b in zip(keep[:-1], keep[1:]))
    iou = box_iou(boxes, boxes)
    # no two kept boxes overlap above the threshold
    sub = iou[np.ix_(keep, keep)]
    assert not (np.triu(sub, 1) > thr).any()
    # every suppressed box overlaps a kept, higher-ranked box above the threshold
    rank = {int(i): r for r, i in enumerate(sorted(range(len(scores)), key=lambda i: (-scores[i], i)))}
    for j in set(range(len(boxes))) - set(keep.tolist()):
        assert any(iou[k, j] > thr and rank[int(k)] < rank[j] for k in keep)


@settings(max_examples=150, deadline=None)
@given(data=box_sets(), thr=st.sampled_from([0.3, 0.5, 0.7]))
def test_batched_nms_equals_per_class_loop(data, thr):
    boxes, scores, labels = data
    keep = batched_nms(boxes, scores, labels, thr)
    np.testing.assert_array_equal(keep, reference_batched(boxes, scores, labels, thr))
    loop = []                                          # the same loop, with our own nms
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        loop.extend(idx[nms(boxes[idx], scores[idx], thr)].tolist())
    assert sorted(loop) == sorted(keep.tolist())


@settings(max_examples=60, deadline=None)
@given(data=box_sets(), thr=st.sampled_from([0.3, 0.5, 0.7]))
def test_coordinate_trick_is_exact_on_integer_boxes(data, thr):
    boxes, scores, labels = data
    boxes = np.round(boxes)
    np.testing.assert_array_equal(batched_nms_coordinate_trick(boxes, scores, labels, thr),
                                  batched_nms(boxes, scores, labels, thr))


def test_float32_inputs_agree_with_float64_reference_on_grid_boxes():
    rng = np.random.default_rng(5)
    boxes = np.round(clustered_boxes(rng, 500))          # exactly representable in float32
    scores = rng.random(500)
    np.testing.assert_array_equal(nms(boxes.astype(np.float32), scores.astype(np.float32), 0.5),
                                  reference_nms(boxes, scores.astype(np.float32), 0.5))


# ---- torchvision (skipped where it is absent, e.g. CI) ------------------------------------------

@pytest.mark.parametrize("n", [10, 500, 3000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torchvision(n, dtype):
    torch = pytest.importorskip("torch")
    tvops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(n)
    boxes = clustered_boxes(rng, n, img=400.0, clusters=20, dtype=dtype)
    for scores in (rng.random(n).astype(dtype), np.round(rng.random(n), 1).astype(dtype)):  # with ties
        tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
        for thr in (0.3, 0.5, 0.7):
            np.testing.assert_array_equal(nms(boxes, scores, thr), tvops.nms(tb, ts, thr).numpy())
            labels = rng.integers(0, 5, n)
            ours = batched_nms(boxes, scores, labels, thr)
            theirs = tvops.batched_nms(tb, ts, torch.from_numpy(labels), thr).numpy()
            assert sorted(ours.tolist()) == sorted(theirs.tolist())
            np.testing.assert_array_equal(scores[ours], scores[theirs])
