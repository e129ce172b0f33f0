"""Every numba-cuda kernel against the NumPy reference under the CUDA simulator: forward and backward,
float32 and float64, random inputs and the spec's edge cases, through ``mrcnn_np.functional`` and by
calling the kernels directly. Inputs are tiny: the simulator runs each CUDA thread as a Python thread
(about 1 ms each)."""
import numpy as np
import pytest

from mrcnn_np import dispatch, functional as F
from mrcnn_np.backend import to_numpy
from mrcnn_np.backends.numba_cuda import MODULES
from mrcnn_np.backends.numba_cuda.paste import paste_masks
from numba_cuda_checks import (assert_close, check_box_iou, check_op, check_pair, nms_boxes, paste_reference_and_margin,
                               rois_cases, threshold_ties)

DTYPES = [np.float32, np.float64]


def test_the_backend_registers_every_kernel(numba_cuda):
    pairs = ["roi_align", "roi_pool", "conv2d", "conv_transpose2d", "group_norm", "max_pool2d",
             "softmax_cross_entropy", "smooth_l1", "sigmoid_bce_with_logits"]
    expected = ({f"{p}_{half}" for p in pairs for half in ("forward", "backward")}
                | {"nms", "batched_nms", "box_iou", "paste_masks"})
    assert set(dispatch.kernels_of("numba-cuda")) == expected
    assert set(MODULES) == {"roi_align", "roi_pool", "nms", "boxes", "conv", "norm", "pool", "losses",
                            "paste"}


# ---- RoIAlign / RoIPool -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align(numba_cuda, dtype, sampling_ratio, aligned):
    rng = np.random.default_rng(10 * sampling_ratio + aligned)
    features = rng.standard_normal((2, 2, 5, 6)).astype(dtype)
    rois = rois_cases(rng, 2, 5, 6, 0.5, dtype, n_random=2)         # 2 random + 7 edge cases
    check_pair("roi_align", dict(features=features, rois=rois, output_size=(2, 3), spatial_scale=0.5,
                                 sampling_ratio=sampling_ratio, aligned=aligned), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_align_hand_case_and_no_rois(numba_cuda, dtype):
    features = np.arange(25, dtype=dtype).reshape(1, 1, 5, 5)       # detectron2's 5x5 arange map
    rois = np.array([[0, 0, 0, 4, 4], [0, 0, 0, 1, 1], [0, 1, 1, 3, 3]], dtype)
    check_pair("roi_align", dict(features=features, rois=rois, output_size=2, spatial_scale=1.0,
                                 sampling_ratio=2, aligned=True), dtype)
    check_pair("roi_align", dict(features=features, rois=np.zeros((0, 5), dtype), output_size=2,
                                 spatial_scale=1.0, sampling_ratio=0, aligned=True), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_pool(numba_cuda, dtype):
    rng = np.random.default_rng(1)
    features = rng.integers(-2, 3, (2, 2, 5, 6)).astype(dtype)     # small integers: ties in bins
    rois = rois_cases(rng, 2, 5, 6, 0.5, dtype, n_random=2)
    rois = np.concatenate([rois, np.array([[1, 1.25, 0.75, 3.75, 6.25]], dtype)])   # .5 after scaling
    check_pair("roi_pool", dict(features=features, rois=rois, output_size=(2, 3), spatial_scale=0.5),
               dtype)
    check_pair("roi_pool", dict(features=features, rois=np.zeros((0, 5), dtype), output_size=2,
                                spatial_scale=0.5), dtype)


# ---- NMS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_random_with_ties_over_two_blocks(numba_cuda, dtype):
    rng = np.random.default_rng(2)
    boxes, scores = nms_boxes(rng, 70, dtype)        # 70 boxes: two 64-box blocks, both triangles
    for t in (0.3, 0.7):
        check_op("nms", dict(boxes=boxes, scores=scores, iou_threshold=t))
    labels = rng.integers(0, 3, 70)
    check_op("batched_nms", dict(boxes=boxes, scores=scores, labels=labels, iou_threshold=0.3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_edge_cases(numba_cuda, dtype):
    boxes, scores = threshold_ties(dtype)
    check_op("nms", dict(boxes=boxes, scores=scores, iou_threshold=0.5))       # IoU == t: kept
    check_op("nms", dict(boxes=boxes, scores=scores, iou_threshold=0.49))
    # identical boxes with different labels never suppress each other
    check_op("batched_nms", dict(boxes=boxes, scores=scores, labels=np.array([0, 0, 1, 1, 0, 1]),
                                 iou_threshold=0.5))
    empty = dict(boxes=np.zeros((0, 4), dtype), scores=np.zeros(0, dtype))
    check_op("nms", dict(**empty, iou_threshold=0.5))
    check_op("batched_nms", dict(**empty, labels=np.zeros(0, np.int64), iou_threshold=0.5))
    check_op("nms", dict(boxes=boxes[:1], scores=scores[:1], iou_threshold=0.5))
    # zero-area boxes (0/0 IoU never suppresses) and integer boxes (IoUs in float64)
    degenerate = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 2]], dtype)
    check_op("nms", dict(boxes=degenerate, scores=np.array([3, 2, 1], dtype), iou_threshold=0.0))
    check_op("nms", dict(boxes=boxes.astype(np.int64), scores=scores, iou_threshold=0.5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou(numba_cuda, dtype):
    rng = np.random.default_rng(9)
    a, _ = nms_boxes(rng, 4, dtype)
    b, _ = nms_boxes(rng, 3, dtype)
    b = np.concatenate([b, a[:1], np.array([[1, 1, 1, 1], [50, 50, 60, 60]], dtype)])  # same, empty, apart
    a = np.concatenate([a, np.array([[1, 1, 1, 1]], dtype)])        # zero area vs zero area: 0, not NaN
    check_box_iou(a, b)
    check_box_iou(a[:0], b)
    check_box_iou(a.astype(np.int64), b.astype(np.int64))           # integer boxes: float64 IoUs


# ---- conv ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,padding,k,bias", [(1, 1, 3, True), (2, 1, 3, True), (2, 0, 1, False),
                                                   (1, 0, (2, 3), True)])
def test_conv2d(numba_cuda, dtype, stride, padding, k, bias):
    rng = np.random.default_rng(stride + 2 * padding)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((2, 2, 4, 5)).astype(dtype)
    w = rng.standard_normal((3, 2, kh, kw)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype) if bias else None
    check_pair("conv2d", dict(x=x, w=w, b=b, stride=stride, padding=padding), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,padding,k,bias", [(2, 0, 2, True), (1, 1, 3, False), (2, 1, 3, True)])
def test_conv_transpose2d(numba_cuda, dtype, stride, padding, k, bias):
    rng = np.random.default_rng(stride + 2 * padding)
    x = rng.standard_normal((2, 2, 3, 2)).astype(dtype)
    w = rng.standard_normal((2, 3, k, k)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype) if bias else None
    check_pair("conv_transpose2d", dict(x=x, w=w, b=b, stride=stride, padding=padding), dtype)


# ---- GroupNorm, max-pool ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,groups", [(np.float32, 2), (np.float64, 1), (np.float64, 2),
                                          (np.float64, 4)])
def test_group_norm(numba_cuda, dtype, groups):
    rng = np.random.default_rng(groups)
    # D = C/G*H*W = 2*3*7 = 42 numbers per (image, group) at G=2: more than the 16 threads of a
    # simulator block, so the threads' strided loops and the tree reduction both matter
    x = (rng.standard_normal((2, 4, 3, 7)) * 3 + 5).astype(dtype)
    gamma, beta = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    check_pair("group_norm", dict(x=x, gamma=gamma, beta=beta, num_groups=groups), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), ((3, 2), (1, 2), 1), (1, 2, 0)])
def test_max_pool2d_first_max_wins(numba_cuda, dtype, k, s, p):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (2, 2, 5, 5)).astype(dtype)     # many ties inside each window
    check_pair("max_pool2d", dict(x=x, kernel_size=k, stride=s, padding=p), dtype)


# ---- losses -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(numba_cuda, dtype):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 4)).astype(dtype)
    logits[0] = [1000, -1000, 0, 1000]                     # +-1000: log-sum-exp must not overflow
    logits[1] = [-1000, -1000, -1000, -1000]
    labels = np.array([1, 0, 3, 2, 2, 0], np.int32)         # any integer dtype
    check_pair("softmax_cross_entropy", dict(logits=logits, labels=labels), dtype, dout=0.7)
    check_pair("softmax_cross_entropy", dict(logits=np.zeros((0, 4), dtype),
                                             labels=np.zeros(0, np.int64)), dtype, dout=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [0.0, 1 / 9, 1.0])
def test_smooth_l1(numba_cuda, dtype, beta):
    rng = np.random.default_rng(5)
    pred = rng.standard_normal((5, 4)).astype(dtype)
    target = rng.standard_normal((5, 4)).astype(dtype)
    target[0, 0] = pred[0, 0]                               # d == 0 (sign 0 for beta 0)
    check_pair("smooth_l1", dict(pred=pred, target=target, beta=beta), dtype, dout=0.3)
    check_pair("smooth_l1", dict(pred=np.zeros((0, 4), dtype), target=np.zeros((0, 4), dtype),
                                 beta=beta), dtype, dout=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_bce_with_logits(numba_cuda, dtype):
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((2, 3, 3)) * 3).astype(dtype)
    logits[0, 0] = [1000, -1000, 0]                         # exact at +-1000
    targets = (rng.random((2, 3, 3)) > 0.5).astype(dtype)
    check_pair("sigmoid_bce_with_logits", dict(logits=logits, targets=targets), dtype, dout=1.0)
    check_pair("sigmoid_bce_with_logits", dict(logits=np.zeros((0, 3), dtype),
                                               targets=np.zeros((0, 3), dtype)), dtype, dout=1.0)


# ---- mask pasting (standalone, unregistered) ----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_paste_masks_matches_the_current_reference(numba_cuda, dtype):
    rng = np.random.default_rng(7)
    masks = rng.random((6, 4, 4)).astype(dtype)
    boxes = np.array([[1.2, 0.7, 7.9, 6.3],      # inside
                      [-3.0, -2.0, 4.0, 3.0],     # over the top-left corner
                      [6.5, 5.5, 14.0, 11.0],     # over the bottom-right corner
                      [3.0, 3.0, 3.0, 5.0],       # empty (zero width)
                      [2.1, 2.2, 2.4, 2.6],       # too thin to hold a pixel centre
                      [0.0, 0.0, 10.0, 8.0]])     # the whole image
    ref, margin = paste_reference_and_margin(masks, boxes, (8, 10), 0.5)
    got = to_numpy(paste_masks(numba_cuda.xp.asarray(masks), numba_cuda.xp.asarray(boxes), (8, 10), 0.5))
    assert got.shape == ref.shape == (6, 8, 10) and got.dtype == bool
    decided = margin > 1e-5                      # the reference's value is not at the threshold
    np.testing.assert_array_equal(got[decided], ref[decided])
    assert decided.mean() > 0.95
    assert paste_masks(masks[:0], boxes[:0], (8, 10)).shape == (0, 8, 10)


# ---- the boundary ------------------------------------------------------------------------------

def test_backward_follows_its_cache_after_switching_back_to_numpy(numba_cuda):
    import mrcnn_np
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 4, 4))
    out, cache = F.max_pool2d_forward(numba_cuda.xp.asarray(x), 2, 2, 0)
    mrcnn_np.set_backend("numpy")
    dx = F.max_pool2d_backward(numba_cuda.xp.ones_like(out), cache)  # runs the numba-cuda kernel
    assert isinstance(dx, numba_cuda.xp.ndarray)
    ref_out, ref_cache = F.max_pool2d_forward(x, 2, 2, 0)
    np.testing.assert_array_equal(to_numpy(dx), F.max_pool2d_backward(np.ones_like(ref_out), ref_cache))


# ---- kernels feeding kernels --------------------------------------------------------------------

def _small_network(x, w1, gamma, beta, rois, w2, targets):
    """conv -> GroupNorm -> ReLU (reference) -> max-pool -> RoIAlign -> transposed conv -> BCE, and
    back: every gradient, in the order of the arguments. Outputs of one kernel are the next one's
    inputs, views and all, as in the model."""
    y1, c1 = F.conv2d_forward(x, w1, None, 1, 1)
    y2, c2 = F.group_norm_forward(y1, gamma, beta, 2)
    y3, c3 = F.relu_forward(y2)
    y4, c4 = F.max_pool2d_forward(y3, 2, 2, 0)
    y5, c5 = F.roi_align_forward(y4, rois, 2, 0.5, 0, True)
    y6, c6 = F.conv_transpose2d_forward(y5, w2, None, 2, 0)
    loss, c7 = F.sigmoid_bce_with_logits_forward(y6[:, 0], targets)
    d6 = F.sigmoid_bce_with_logits_backward(1.0, c7)
    d6_full = y6 * 0
    d6_full[:, 0] = d6
    d5, dw2, _ = F.conv_transpose2d_backward(d6_full, c6)
    d4 = F.roi_align_backward(d5, c5)
    d3 = F.max_pool2d_backward(d4, c4)
    d2 = F.relu_backward(d3, c3)
    d1, dgamma, dbeta = F.group_norm_backward(d2, c2)
    dx, dw1, _ = F.conv2d_backward(d1, c1)
    return loss, dx, dw1, dgamma, dbeta, dw2


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_small_network_forward_and_backward_match_numpy(numba_cuda, dtype):
    import mrcnn_np
    rng = np.random.default_rng(11)
    args = [rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((4, 2, 3, 3)) / 3,
            rng.standard_normal(4), rng.standard_normal(4),
            np.array([[0, 0, 0, 11, 11], [1, 2, 1, 7, 9]]), rng.standard_normal((4, 2, 2, 2)) / 2,
            (rng.random((2, 4, 4)) > 0.5)]
    args = [a.astype(dtype) for a in args]
    got = _small_network(*[numba_cuda.xp.asarray(a) for a in args])
    mrcnn_np.set_backend("numpy")
    ref = _small_network(*args)
    for k, (g, r) in enumerate(zip(got, ref)):
        assert_close(g, r, dtype, f"network output {k}")
