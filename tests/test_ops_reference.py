"""Forward passes against independent truths: naive loops, adjoint identities, hand-computed values."""
import numpy as np
import pytest

from mrcnn_np import functional as F


def naive_conv2d(x, w, b, stride, padding):
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, k, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride: i * stride + kh, j * stride: j * stride + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 0, 1), (3, 2, 5)])
def test_conv2d_matches_naive_loop(stride, padding, k):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, k, k)), rng.standard_normal(4)
    out, _ = F.conv2d_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(out, naive_conv2d(x, w, b, stride, padding), atol=1e-12)


@pytest.mark.parametrize("stride,padding,k", [(2, 0, 2), (2, 1, 3), (1, 1, 3), (3, 0, 3)])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(stride, padding, k):
    # <conv2d(x, w), y> == <x, conv_transpose2d(y, w)> for every x, y: the definition of a transpose.
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, k, k))             # conv2d: 3 -> 4; as transposed conv: 4 -> 3
    y = rng.standard_normal((2, 4, 5, 6))
    t, _ = F.conv_transpose2d_forward(y, w, None, stride, padding)
    x = rng.standard_normal(t.shape)
    cx, _ = F.conv2d_forward(x, w, None, stride, padding)
    assert cx.shape == y.shape
    assert np.sum(cx * y) == pytest.approx(np.sum(x * t), rel=1e-12)
    assert t.shape[2] == (5 - 1) * stride - 2 * padding + k


def test_conv_transpose2d_hand_case():
    x = np.array([[[[1.0, 2.0]]]])                    # (1, 1, 1, 2)
    w = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])  # (1, 1, 2, 2)
    out, _ = F.conv_transpose2d_forward(x, w, np.array([0.5]), stride=1)
    np.testing.assert_allclose(out[0, 0], [[1.5, 12.5, 20.5], [100.5, 1200.5, 2000.5]])


def test_max_pool_hand_case_and_ties():
    x = np.array([[[[1.0, 3.0, 2.0], [4.0, 0.0, 4.0], [1.0, 2.0, 9.0]]]])
    out, cache = F.max_pool2d_forward(x, 2, 1, 0)
    np.testing.assert_array_equal(out[0, 0], [[4, 4], [4, 9]])
    dx = F.max_pool2d_backward(np.ones_like(out), cache)
    # windows (0, 0) and (1, 0) both pick the 4 at (1, 0); (0, 1) the 4 at (1, 2); (1, 1) the 9
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0], [2, 0, 1], [0, 0, 1]])
    # a tie inside one window goes to the first max in row-major order, as in PyTorch
    tie = np.array([[[[5.0, 5.0], [5.0, 2.0]]]])
    out, cache = F.max_pool2d_forward(tie, 2, 2, 0)
    np.testing.assert_array_equal(F.max_pool2d_backward(np.ones_like(out), cache)[0, 0], [[1, 0], [0, 0]])


def test_max_pool_padding_is_minus_infinity():
    x = -np.ones((1, 1, 2, 2))
    out, _ = F.max_pool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 1, 1)))


def test_upsample_and_relu():
    x = np.arange(4.0).reshape(1, 1, 2, 2) - 1.5
    up, _ = F.upsample_nearest2d_forward(x, 2)
    np.testing.assert_array_equal(up[0, 0], np.kron(x[0, 0], np.ones((2, 2))))
    r, cache = F.relu_forward(x)
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    np.testing.assert_array_equal(F.relu_backward(np.ones_like(x), cache), (x > 0).astype(float))


def test_group_norm_matches_direct_formula():
    rng = np.random.default_rng(2)
    x, g, b = rng.standard_normal((2, 6, 3, 4)) * 5 + 3, rng.standard_normal(6), rng.standard_normal(6)
    out, _ = F.group_norm_forward(x, g, b, 3, eps=1e-5)
    for n in range(2):
        for grp in range(3):
            chunk = x[n, 2 * grp: 2 * grp + 2]
            norm = (chunk - chunk.mean()) / np.sqrt(chunk.var() + 1e-5)
            expect = norm * g[2 * grp: 2 * grp + 2, None, None] + b[2 * grp: 2 * grp + 2, None, None]
            np.testing.assert_allclose(out[n, 2 * grp: 2 * grp + 2], expect, atol=1e-12)


def test_linear():
    x, w, b = np.array([[1.0, 2.0]]), np.array([[3.0, 4.0], [5.0, 6.0], [0.0, 1.0]]), np.array([1.0, 0, 0])
    np.testing.assert_array_equal(F.linear_forward(x, w, b)[0], [[12.0, 17.0, 2.0]])


# --- RoIAlign on a 5x5 `arange` map, f(y, x) = 5y + x. Bilinear interpolation reproduces a linear
# function exactly, so an output is f at the mean of its bin's sample points (all inside the map).
ARANGE = np.arange(25.0).reshape(1, 1, 5, 5)


def f_lin(y, x):
    return 5 * y + x


def test_roi_align_aligned_hand_values():
    # RoI [1, 1, 3, 3], aligned: start 0.5, size 2, one bin, sampling 2 -> samples at 1.0 and 2.0
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, 1.0, 1.0, 3.0, 3.0]]), 1, 1.0, 2, True)
    assert out[0, 0, 0, 0] == pytest.approx(f_lin(1.5, 1.5))
    # 2x2 bins of size 1, sampling 2: bin (0, 1) samples x in {1.75, 2.25}, y in {0.75, 1.25}
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, 1.0, 1.0, 3.0, 3.0]]), 2, 1.0, 2, True)
    np.testing.assert_allclose(out[0, 0], [[f_lin(1.0, 1.0), f_lin(1.0, 2.0)],
                                           [f_lin(2.0, 1.0), f_lin(2.0, 2.0)]])


def test_roi_align_legacy_and_adaptive_grid():
    # not aligned: start 1, size 2; adaptive grid = ceil(2 / 1) = 2 per bin for a 2x2 output
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, 1.0, 1.0, 3.0, 3.0]]), 2, 1.0, 0, False)
    np.testing.assert_allclose(out[0, 0], [[f_lin(1.5, 1.5), f_lin(1.5, 2.5)],
                                           [f_lin(2.5, 1.5), f_lin(2.5, 2.5)]])
    # legacy forces a tiny RoI to size 1: [2, 2, 2.2, 2.2] -> start 2, size 1, sample at 2.5
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, 2.0, 2.0, 2.2, 2.2]]), 1, 1.0, 1, False)
    assert out[0, 0, 0, 0] == pytest.approx(f_lin(2.5, 2.5))


def test_roi_align_spatial_scale():
    # image RoI [2, 2, 6, 6] on a stride-2 map is [1, 1, 3, 3] in map cells
    a, _ = F.roi_align_forward(ARANGE, np.array([[0, 2.0, 2.0, 6.0, 6.0]]), 2, 0.5, 2, True)
    b, _ = F.roi_align_forward(ARANGE, np.array([[0, 1.0, 1.0, 3.0, 3.0]]), 2, 1.0, 2, True)
    np.testing.assert_allclose(a, b)


def test_roi_align_border_clamp_and_outside():
    # aligned RoI [4.5, 0.5, 5.5, 1.5] -> one sample at x = 4.5 (clamped to column 4), y = 0.5
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, 4.5, 0.5, 5.5, 1.5]]), 1, 1.0, 1, True)
    assert out[0, 0, 0, 0] == pytest.approx(5 * 0.5 + 4)
    # x in [-1, 0] is clamped to column 0; beyond -1 the sample contributes zero
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, 0.0, 1.0, 1.0, 2.0]]), 1, 1.0, 1, True)
    assert out[0, 0, 0, 0] == pytest.approx(f_lin(1.0, 0.0))
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, -3.0, 1.0, -1.0, 2.0]]), 1, 1.0, 1, True)
    assert out[0, 0, 0, 0] == 0.0
    # two samples, one beyond -1 (zero) and one inside: the mean still divides by 2
    out, _ = F.roi_align_forward(ARANGE, np.array([[0, -2.5, 1.0, 3.5, 2.0]]), (1, 1), 1.0, 0, True)
    # adaptive grid: width 6 -> 6 samples at x = -2.5, -1.5, -0.5, 0.5, 1.5, 2.5 (first two are zero)
    xs = np.array([0, 0, 0.0, 0.5, 1.5, 2.5])
    assert out[0, 0, 0, 0] == pytest.approx((5 * 1.0 * 4 + xs.sum()) / 6)


def test_roi_align_zero_size_roi_gives_zero():
    out, cache = F.roi_align_forward(ARANGE, np.array([[0, 2.0, 2.0, 2.0, 2.0]]), 2, 1.0, 0, True)
    np.testing.assert_array_equal(out, 0)
    np.testing.assert_array_equal(F.roi_align_backward(np.ones_like(out), cache), 0)


def test_roi_align_no_rois():
    out, cache = F.roi_align_forward(ARANGE, np.zeros((0, 5)), 3, 1.0, 2, True)
    assert out.shape == (0, 1, 3, 3)
    assert F.roi_align_backward(out, cache).shape == ARANGE.shape


def test_roi_align_float32_matches_float64():
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((2, 8, 16, 16))
    rois = np.concatenate([rng.integers(0, 2, (40, 1)), rng.uniform(0, 30, (40, 2))], 1)
    rois = np.concatenate([rois, rois[:, 1:3] + rng.uniform(1, 30, (40, 2))], 1)
    a, _ = F.roi_align_forward(feats, rois, 7, 0.5, 0, True)
    b, _ = F.roi_align_forward(feats.astype(np.float32), rois.astype(np.float32), 7, 0.5, 0, True)
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_roi_pool_hand_case():
    # RoI [1, 1, 3, 3] -> cells 1..3 (3 wide, quantised), 2x2 bins: [1,3) and [2,4) in each axis
    out, _ = F.roi_pool_forward(ARANGE, np.array([[0, 1.0, 1.0, 3.0, 3.0]]), 2, 1.0)
    np.testing.assert_array_equal(out[0, 0], [[f_lin(2, 2), f_lin(2, 3)], [f_lin(3, 2), f_lin(3, 3)]])
    # rounding half away from zero: 1.5 -> 2
    out, _ = F.roi_pool_forward(ARANGE, np.array([[0, 1.5, 1.5, 1.5, 1.5]]), 1, 1.0)
    assert out[0, 0, 0, 0] == f_lin(2, 2)


def test_softmax_cross_entropy_hand_value():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    loss, cache = F.softmax_cross_entropy_forward(logits, np.array([0, 0]))
    assert loss == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)
    d = F.softmax_cross_entropy_backward(1.0, cache)
    np.testing.assert_allclose(d, [[-0.25, 0.25], [-0.125, 0.125]])
    big, _ = F.softmax_cross_entropy_forward(np.array([[1000.0, -1000.0]]), np.array([1]))
    assert big == pytest.approx(2000.0)


def test_smooth_l1_hand_value():
    pred = np.array([0.5, -2.0, 0.0])
    loss, cache = F.smooth_l1_forward(pred, np.zeros(3), beta=1.0)
    assert loss == pytest.approx(0.125 + 1.5)
    np.testing.assert_allclose(F.smooth_l1_backward(2.0, cache), [1.0, -2.0, 0.0])
    l1, _ = F.smooth_l1_forward(pred, np.zeros(3), beta=0.0)
    assert l1 == pytest.approx(2.5)


def test_bce_extreme_logits_are_finite_and_exact():
    x = np.array([1000.0, -1000.0, 1000.0, -1000.0, 0.0])
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    loss, cache = F.sigmoid_bce_with_logits_forward(x, t)
    assert loss == pytest.approx((0 + 0 + 1000 + 1000 + np.log(2)) / 5)
    d = F.sigmoid_bce_with_logits_backward(1.0, cache)
    assert np.all(np.isfinite(d))
    np.testing.assert_allclose(d, np.array([0, 0, 1, -1, -0.5]) / 5)
    loss32, _ = F.sigmoid_bce_with_logits_forward(x.astype(np.float32), t.astype(np.float32))
    assert np.isfinite(loss32)
