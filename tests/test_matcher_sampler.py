"""Matcher, balanced sampler, RPN targets."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_np.detection.boxes import BoxCoder
from mrcnn_np.detection.matcher import Matcher
from mrcnn_np.detection.rpn_targets import build_rpn_targets
from mrcnn_np.detection.sampler import BalancedPositiveNegativeSampler, as_generator

Q = np.array([[0.9, 0.1, 0.5, 0.00],
              [0.2, 0.6, 0.4, 0.00],
              [0.1, 0.6, 0.1, 0.25]])


# ---- matcher ----------------------------------------------------------------------------------

def test_rpn_thresholds_by_hand():
    # anchor 0: 0.9 >= 0.7 -> gt 0;  anchor 1: 0.6 in [0.3, 0.7) -> ignored;
    # anchor 2: 0.5 -> ignored;  anchor 3: 0.25 < 0.3 -> negative
    np.testing.assert_array_equal(Matcher(0.7, 0.3)(Q), [0, -2, -2, -1])


def test_low_quality_matches_by_hand():
    # gt 1's best anchor is 1 (0.6) -> anchor 1 becomes positive. gt 2's best is also anchor 1
    # (tie at 0.6), but anchor 1 goes to *its* best gt, the first of the tie: gt 1.
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)(Q)
    np.testing.assert_array_equal(m, [0, 1, -2, -1])
    assert m.dtype == np.int64


def test_low_quality_takes_all_ties():
    q = np.array([[0.4, 0.4, 0.1]])
    np.testing.assert_array_equal(Matcher(0.7, 0.3)(q), [-2, -2, -1])
    np.testing.assert_array_equal(Matcher(0.7, 0.3, True)(q), [0, 0, -1])


def test_low_quality_ignores_a_gt_that_overlaps_nothing():
    q = np.array([[0.8, 0.0, 0.0], [0.0, 0.0, 0.0]])     # gt 1 overlaps no anchor
    np.testing.assert_array_equal(Matcher(0.7, 0.3, True)(q), [0, -1, -1])


def test_roi_thresholds_have_no_ignored_band():
    q = np.array([[0.5, 0.49999, 0.7, 0.0]])
    np.testing.assert_array_equal(Matcher(0.5, 0.5)(q), [0, -1, 0, -1])


def test_no_ground_truth_means_all_negative():
    m = Matcher(0.7, 0.3, True)(np.zeros((0, 5)))
    np.testing.assert_array_equal(m, [-1] * 5)
    assert m.dtype == np.int64
    assert Matcher(0.5, 0.5)(np.zeros((2, 0))).shape == (0,)


def test_matcher_bad_input():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match=r"quality: expected a 2-D"):
        Matcher(0.5, 0.5)(np.zeros(3))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), g=st.integers(1, 5), a=st.integers(1, 30), low_q=st.booleans())
def test_matcher_matches_torchvision(seed, g, a, low_q):
    torch = pytest.importorskip("torch")
    det_utils = pytest.importorskip("torchvision.models.detection._utils")
    rng = np.random.default_rng(seed)
    q = np.round(rng.random((g, a)), 1).astype(np.float32)            # coarse values: many ties
    q[:, 0] = np.maximum(q[:, 0], 0.1)          # every gt overlaps something (see the matcher's NOTE)
    ours = Matcher(0.7, 0.3, low_q)(q)
    theirs = det_utils.Matcher(0.7, 0.3, low_q)(torch.from_numpy(q)).numpy()
    np.testing.assert_array_equal(ours, theirs)


# ---- sampler ----------------------------------------------------------------------------------

def test_sampler_counts_and_fraction():
    labels = np.array([1] * 50 + [0] * 300 + [-1] * 20)
    pos, neg = BalancedPositiveNegativeSampler(256, 0.5)(labels, 0)
    assert pos.size == 50 and neg.size == 206                         # negatives fill the budget
    assert pos.dtype == np.int64 and (np.diff(pos) > 0).all() and (np.diff(neg) > 0).all()
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    labels = np.array([2] * 400 + [0] * 1000)
    pos, neg = BalancedPositiveNegativeSampler(512, 0.25)(labels, 0)
    assert pos.size == 128 and neg.size == 384
    pos, neg = BalancedPositiveNegativeSampler(512, 0.25)(np.array([0] * 10 + [-1] * 5), 0)
    assert pos.size == 0 and neg.size == 10


def test_sampler_is_deterministic_given_a_seed():
    labels = np.array([1] * 200 + [0] * 2000)
    s = BalancedPositiveNegativeSampler(256, 0.5)
    a = s(labels, 7)
    b = s(labels, np.random.default_rng(7))
    c = s(labels, 8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    gen = np.random.default_rng(3)
    first, second = s(labels, gen), s(labels, gen)                   # a generator advances
    assert not np.array_equal(first[1], second[1])


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedPositiveNegativeSampler(0, 0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(16, 1.5)
    with pytest.raises(ValueError, match="labels: expected a 1-D"):
        BalancedPositiveNegativeSampler(16, 0.5)(np.zeros((2, 2)), 0)
    with pytest.raises(ValueError, match="rng"):
        as_generator("seed")


# ---- RPN targets ------------------------------------------------------------------------------

def grid_anchors_16():
    xs = np.arange(0, 64, 8.0)
    x, y = np.meshgrid(xs, xs)
    c = np.stack([x.ravel(), y.ravel()], 1)
    return np.concatenate([c - 8, c + 8], 1).astype(np.float32)      # 16 x 16 squares, stride 8


def test_rpn_targets_for_an_image_without_objects():
    anchors = grid_anchors_16()
    t = build_rpn_targets(anchors, np.zeros((0, 4), np.float32), rng=0)
    assert (t.labels <= 0).all() and (t.labels == 0).sum() == min(256, len(anchors))
    assert t.pos_idx.size == 0 and np.isfinite(t.regression_targets).all()
    assert (t.matched_gt == -1).all()


def test_rpn_targets_with_objects():
    anchors = grid_anchors_16()
    gt = np.array([[0, 0, 16, 16], [30, 30, 50, 50]], np.float32)     # exact anchor; in-between box
    t = build_rpn_targets(anchors, gt, rng=0)
    assert t.labels.shape == (len(anchors),) and set(np.unique(t.labels)) <= {-1, 0, 1}
    pos = np.flatnonzero(t.labels == 1)
    np.testing.assert_array_equal(pos, t.pos_idx)
    assert set(t.matched_gt[pos]) == {0, 1}                          # both objects get positives
    exact = np.flatnonzero((anchors == gt[0]).all(1))[0]
    assert t.labels[exact] == 1 and t.matched_gt[exact] == 0
    np.testing.assert_allclose(t.regression_targets[exact], 0, atol=1e-6)
    expected = BoxCoder().encode(gt[t.matched_gt[pos]], anchors[pos])
    np.testing.assert_allclose(t.regression_targets[pos], expected, rtol=1e-6)
    assert np.isfinite(t.regression_targets).all()
    assert (t.regression_targets[t.labels != 1] == 0).all()


def test_rpn_targets_degenerate_ground_truth():
    anchors = grid_anchors_16()
    gt = np.array([[10, 10, 10, 30], [0, 0, 16, 16]], np.float32)   # box 0 has zero width
    with pytest.warns(UserWarning, match=r"gt_boxes: dropping 1 zero-area box\(es\) at index \[0\]"):
        t = build_rpn_targets(anchors, gt, rng=0)
    assert set(t.matched_gt[t.labels == 1]) == {1}                  # indices into the caller's list
    with pytest.raises(ValueError, match=r"gt_boxes: box 1 has x2 < x1"):
        build_rpn_targets(anchors, np.array([[0, 0, 4, 4], [9, 0, 3, 4]], np.float32), rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # a clean gt list warns nothing
        build_rpn_targets(anchors, gt[1:], rng=0)


def test_sampler_batch_equals_one_image_at_a_time():
    """sample_batch draws each image's keys in turn from the generator: the same samples as calling
    the sampler image by image with that generator, with one read of the counts for all."""
    rng = np.random.default_rng(3)
    labels = [rng.choice([-1, 0, 1, 2], size=n, p=[0.2, 0.6, 0.1, 0.1]) for n in (50, 300, 7)]
    s = BalancedPositiveNegativeSampler(64, 0.25)
    batch = s.sample_batch(labels, np.random.default_rng(11))
    gen = np.random.default_rng(11)
    for lab, (pos, neg) in zip(labels, batch):
        want_pos, want_neg = s(lab, gen)
        np.testing.assert_array_equal(pos, want_pos)
        np.testing.assert_array_equal(neg, want_neg)
        assert (lab[pos] >= 1).all() and (lab[neg] == 0).all()
        assert len(pos) == min((lab >= 1).sum(), 16) and len(neg) == min((lab == 0).sum(), 64 - len(pos))
