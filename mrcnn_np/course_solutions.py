"""The course's exercises: one solution per exercise, and the check the notebooks call.

Each notebook ends with a section "Exercises": a stub the learner fills in (its body is
``raise NotImplementedError``) and a cell ``course.check_exercise("<name>", my_function)``. The
check runs the learner's function on the exercise's test cases and compares every result with the
**project's own code** (the op or detection function the lesson teaches, e.g.
``mrcnn_np.functional.smooth_l1_backward``), not with the solution below. The solutions live here,
outside the notebooks, so that the suite (``tests/test_exercises.py``) proves every exercise solvable:
``check(name, solution)`` must return True.

``check`` never raises: an unattempted stub, an exception, a wrong shape or a wrong value is printed
(which case, the largest absolute and relative error) and gives False, so an unsolved notebook still
runs top to bottom.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

__all__ = ["Exercise", "EXERCISES", "check"]


# ----------------------------------------------------------------------------------------------------
# The solutions (plain NumPy, written as a learner would; none calls the op it is checked against)
# ----------------------------------------------------------------------------------------------------

def box_iou(a, b):
    """01. a ``(N, 4)``, b ``(M, 4)`` boxes ``(x1, y1, x2, y2)`` -> ``(N, M)`` IoU."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])                    # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def mask_iou(a, b):
    """01. Two binary masks ``(H, W)`` -> IoU (a float); 0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def decode_boxes(deltas, boxes, weights):
    """02. deltas ``(R, 4)`` ``(t_x, t_y, t_w, t_h)``, boxes ``(R, 4)``, weights ``(w_x, w_y, w_w, w_h)``
    -> decoded boxes ``(R, 4)``."""
    wx, wy, ww, wh = weights
    pw, ph = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    pcx, pcy = boxes[:, 0] + 0.5 * pw, boxes[:, 1] + 0.5 * ph
    cx = deltas[:, 0] / wx * pw + pcx
    cy = deltas[:, 1] / wy * ph + pcy
    w = np.exp(deltas[:, 2] / ww) * pw
    h = np.exp(deltas[:, 3] / wh) * ph
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def cell_anchors(sizes, aspect_ratios):
    """02. Zero-centred anchors ``(A, 4)``, ratio-major, ``A = len(aspect_ratios) * len(sizes)``."""
    out = []
    for r in aspect_ratios:
        for s in sizes:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return np.array(out)


def _corners(x, y):
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    lx, ly = x - x0, y - y0
    return [(y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
            (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)]


def bilinear_sample(f, x, y):
    """03. f ``(H, W)``, a point ``(x, y)`` in index space with ``0 <= x < W - 1``, ``0 <= y < H - 1``
    -> the bilinear interpolation of f there (a float)."""
    return float(sum(w * f[i, j] for i, j, w in _corners(x, y)))


def bilinear_sample_backward(dout, shape, x, y):
    """03. The gradient ``(H, W)`` of the map from ``dout`` = dL/d(bilinear_sample(f, x, y))."""
    df = np.zeros(shape)
    for i, j, w in _corners(x, y):
        df[i, j] += w * dout
    return df


def select_class_masks(mask_logits, labels):
    """04. mask_logits ``(D, K + 1, m, m)`` (channel 0 = background), labels ``(D,)`` in 1..K ->
    probabilities ``(D, m, m)``: the sigmoid of each detection's own class channel."""
    x = mask_logits[np.arange(len(labels)), labels]
    return 1.0 / (1.0 + np.exp(-x))


def conv_transpose_2x2(x, w, b):
    """04. x ``(C_in, H, W)``, w ``(C_in, C_out, 2, 2)``, b ``(C_out,)`` -> ``(C_out, 2H, 2W)``: the
    stride-2 transposed convolution (each input pixel writes ``x[c, i, j] * w[c]`` into the 2x2 block
    at ``(2i, 2j)``)."""
    cin, h, wd = x.shape
    out = np.zeros((w.shape[1], 2 * h, 2 * wd))
    for u in range(2):
        for v in range(2):
            out[:, u::2, v::2] = np.einsum("chw,co->ohw", x, w[:, :, u, v])
    return out + b[:, None, None]


def smooth_l1_backward(pred, target, beta, dloss):
    """05. dL/dpred of ``L = dloss * sum smooth_l1(pred - target; beta)``, shape of pred (beta > 0)."""
    d = pred - target
    return dloss * np.where(np.abs(d) < beta, d / beta, np.sign(d))


def sigmoid_bce_backward(logits, targets, dloss):
    """05. dL/dlogits of ``L = dloss * mean BCE(sigmoid(logits), targets)``, shape of logits."""
    return dloss * (1.0 / (1.0 + np.exp(-logits)) - targets) / logits.size


def softmax_mask_ce_backward(logits, targets, dloss):
    """06. logits ``(R, C, m, m)``, targets ``(R, m, m)`` int class per pixel -> dL/dlogits of
    ``L = dloss * mean over R m^2 pixels of -log softmax_c(z)[y]``."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.arange(logits.shape[1])[None, :, None, None] == targets[:, None]
    return dloss * (p - onehot) / targets.size


def sigmoid_mask_backward(logits, labels, targets, dloss):
    """06. logits ``(R, C, m, m)``, labels ``(R,)``, targets ``(R, m, m)`` in {0, 1} -> dL/dlogits of
    the decoupled loss ``L = dloss * mean BCE(sigmoid(logits[r, labels[r]]), targets)``."""
    d = np.zeros_like(logits)
    own = logits[np.arange(len(labels)), labels]
    d[np.arange(len(labels)), labels] = dloss * (1 / (1 + np.exp(-own)) - targets) / targets.size
    return d


def mask_targets(gt_masks, rois, matched_gt, m):
    """07. gt_masks ``(G, H, W)``, rois ``(P, 4)``, matched_gt ``(P,)`` -> targets ``(P, m, m)`` of 0/1:
    RoIAlign (float32, scale 1, sampling_ratio 2, aligned) of each RoI's own mask, >= 0.5."""
    from mrcnn_np.functional import roi_align_forward    # as the notebook imports it
    masks = gt_masks[:, None].astype(np.float32)                        # (G, 1, H, W)
    rois5 = np.concatenate([matched_gt[:, None], rois], axis=1).astype(np.float32)
    out, _ = roi_align_forward(masks, rois5, (m, m), 1.0, 2, True)
    return (out[:, 0] >= 0.5).astype(np.float64)


def level_mapper(boxes, k_min, k_max, canonical_scale, canonical_level):
    """08. boxes ``(R, 4)`` -> int ``(R,)``: ``clamp(floor(k0 + log2(sqrt(wh) / s0) + 1e-6), k_min,
    k_max) - k_min``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    k = np.floor(canonical_level + np.log2(np.sqrt(area) / canonical_scale) + 1e-6)
    return (np.clip(k, k_min, k_max) - k_min).astype(np.int64)


def num_anchors(H, W, strides, anchors_per_cell):
    """09. The number of anchors of an ``H x W`` input (multiples of the largest stride)."""
    return sum(anchors_per_cell * (H // s) * (W // s) for s in strides)


def resized_size(H, W, min_size, max_size):
    """10. torchvision's resized ``(h, w)``: ``floor(side * min(min_size / min(H, W), max_size /
    max(H, W)))``."""
    s = min(min_size / min(H, W), max_size / max(H, W))
    return int(math.floor(H * s)), int(math.floor(W * s))


# ----------------------------------------------------------------------------------------------------
# The references: the project's own code, the thing each exercise is checked against
# ----------------------------------------------------------------------------------------------------

def _ref_box_iou(a, b):
    from .functional import box_iou as ref
    return ref(a, b)


def _ref_mask_iou(a, b):
    from pycocotools import mask as mask_utils
    enc = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in (a, b)]
    return float(mask_utils.iou([enc[0]], [enc[1]], [0])[0, 0])


def _ref_decode_boxes(deltas, boxes, weights):
    from .detection.boxes import BoxCoder
    return BoxCoder(weights).decode(deltas, boxes)


def _ref_cell_anchors(sizes, aspect_ratios):
    from .detection.anchors import cell_anchors as ref
    return ref(sizes, aspect_ratios)


def _point_roi(x, y):
    """A tiny aligned RoI around (x, y) whose one bin, sampled once, samples exactly (x, y)."""
    return np.array([[0.0, x + 0.4, y + 0.4, x + 0.6, y + 0.6]])


def _ref_bilinear_sample(f, x, y):
    from .functional import roi_align_forward
    out, _ = roi_align_forward(f[None, None], _point_roi(x, y), 1, 1.0, 1, True)
    return float(out[0, 0, 0, 0])


def _ref_bilinear_sample_backward(dout, shape, x, y):
    from .functional import roi_align_backward, roi_align_forward
    _, cache = roi_align_forward(np.zeros((1, 1) + tuple(shape)), _point_roi(x, y), 1, 1.0, 1, True)
    return roi_align_backward(np.full((1, 1, 1, 1), dout), cache)[0, 0]


def _ref_select_class_masks(mask_logits, labels):
    from .detection.postprocess import select_class_masks as ref
    return ref(mask_logits, labels, background_channel=True)


def _ref_conv_transpose_2x2(x, w, b):
    from .functional import conv_transpose2d_forward
    return conv_transpose2d_forward(x[None], w, b, stride=2)[0][0]


def _ref_smooth_l1_backward(pred, target, beta, dloss):
    from .functional import smooth_l1_backward as bwd, smooth_l1_forward as fwd
    _, cache = fwd(pred, target, beta=beta)
    return bwd(dloss, cache)


def _ref_sigmoid_bce_backward(logits, targets, dloss):
    from .functional import sigmoid_bce_with_logits_backward as bwd, sigmoid_bce_with_logits_forward as fwd
    _, cache = fwd(logits, targets)
    return bwd(dloss, cache)


def _ref_softmax_mask_ce_backward(logits, targets, dloss):
    from .ops.losses import softmax_mask_cross_entropy_backward as bwd
    from .ops.losses import softmax_mask_cross_entropy_forward as fwd
    _, cache = fwd(logits, targets)
    return bwd(dloss, cache)


def _ref_sigmoid_mask_backward(logits, labels, targets, dloss):
    # as RoIHeads.backward does it: the BCE's gradient on each RoI's own channel, zero elsewhere
    from .functional import sigmoid_bce_with_logits_backward as bwd, sigmoid_bce_with_logits_forward as fwd
    idx = np.arange(len(labels))
    _, cache = fwd(logits[idx, labels], targets)
    d = np.zeros_like(logits)
    d[idx, labels] = bwd(dloss, cache)
    return d


def _ref_mask_targets(gt_masks, rois, matched_gt, m):
    from .detection.mask_targets import build_mask_targets
    return build_mask_targets(gt_masks, rois, matched_gt, mask_size=m, dtype=np.float64)


def _ref_level_mapper(boxes, k_min, k_max, canonical_scale, canonical_level):
    from .detection.level_mapper import LevelMapper
    return LevelMapper(k_min, k_max, canonical_scale, canonical_level)(boxes)


def _ref_num_anchors(H, W, strides, anchors_per_cell):
    from .detection.anchors import AnchorGenerator
    ratios = tuple(0.5 * 2.0 ** (i / max(anchors_per_cell - 1, 1)) for i in range(anchors_per_cell))
    gen = AnchorGenerator(sizes=tuple(8 * s for s in strides), aspect_ratios=ratios, strides=strides)
    return sum(len(a) for a in gen([(H // s, W // s) for s in strides]))


def _ref_resized_size(H, W, min_size, max_size):
    from .model.transform import resized_size_min_max
    return resized_size_min_max(H, W, min_size, max_size)


# ----------------------------------------------------------------------------------------------------
# The test cases (deterministic; float64 wherever the reference allows it)
# ----------------------------------------------------------------------------------------------------

def _random_boxes(rng, n, lo=0.0, hi=50.0, min_wh=1.0, max_wh=30.0):
    xy = rng.uniform(lo, hi, (n, 2))
    wh = rng.uniform(min_wh, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _cases_box_iou():
    rng = np.random.default_rng(0)
    same = np.array([[10.0, 10.0, 20.0, 30.0]])
    return [(same, same),                                                  # identical: 1
            (np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[20.0, 20.0, 30.0, 30.0],    # disjoint: 0
                                                           [5.0, 5.0, 15.0, 15.0],      # partial
                                                           [2.0, 2.0, 4.0, 4.0],        # inside
                                                           [10.0, 0.0, 20.0, 10.0]])),  # touching: 0
            (_random_boxes(rng, 7), _random_boxes(rng, 5))]


def _cases_mask_iou():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :40]
    disk = (xx - 15) ** 2 + (yy - 16) ** 2 < 81
    return [(disk, disk), (disk, np.roll(disk, 3, axis=1)), (disk, ~disk),
            (rng.random((32, 40)) < 0.3, rng.random((32, 40)) < 0.5)]


def _cases_decode_boxes():
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 6, min_wh=4.0)
    return [(np.zeros((6, 4)), boxes, (1.0, 1.0, 1.0, 1.0)),                # zero deltas: the boxes
            (rng.normal(0, 0.3, (6, 4)), boxes, (1.0, 1.0, 1.0, 1.0)),
            (rng.normal(0, 2.0, (6, 4)), boxes, (10.0, 10.0, 5.0, 5.0))]   # the box head's weights


def _cases_cell_anchors():
    return [((32,), (0.5, 1.0, 2.0)), ((16, 24), (1.0,)), ((32, 64, 128), (0.5, 1.0, 2.0))]


def _cases_bilinear():
    rng = np.random.default_rng(3)
    f = rng.standard_normal((5, 6))
    return [(f, x, y) for x, y in [(2.3, 1.6), (0.0, 0.0), (4.75, 3.5), (1.5, 2.999)]]


def _cases_bilinear_backward():
    return [(dout, (5, 6), x, y) for dout, x, y in [(1.0, 2.3, 1.6), (-2.5, 0.1, 3.7), (0.7, 4.6, 0.2)]]


def _cases_select_class_masks():
    rng = np.random.default_rng(4)
    return [(rng.normal(0, 3, (3, 4, 5, 5)), np.array([1, 3, 1])),
            (rng.normal(0, 3, (1, 2, 4, 4)), np.array([1]))]


def _cases_conv_transpose():
    rng = np.random.default_rng(5)
    return [(rng.standard_normal((1, 2, 2)), rng.standard_normal((1, 1, 2, 2)), np.zeros(1)),
            (rng.standard_normal((3, 3, 4)), rng.standard_normal((3, 2, 2, 2)), rng.standard_normal(2))]


def _cases_smooth_l1():
    rng = np.random.default_rng(6)
    pred, target = rng.normal(0, 1, (8, 4)), rng.normal(0, 1, (8, 4))
    return [(pred, target, 1.0, 1.0), (pred, target, 1 / 9, 0.5), (pred * 0.05, target * 0.05, 1 / 9, 2.0)]


def _cases_sigmoid_bce():
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, (2, 6, 6))
    t = (rng.random((2, 6, 6)) < 0.5).astype(np.float64)
    return [(x, t, 1.0), (x * 5, t, 0.3), (np.array([[30.0, -30.0, 0.0]]), np.array([[0.0, 1.0, 1.0]]), 1.0)]


def _cases_softmax_mask_ce():
    rng = np.random.default_rng(8)
    return [(rng.normal(0, 2, (2, 4, 5, 5)), rng.integers(0, 4, (2, 5, 5)), 1.0),
            (rng.normal(0, 2, (1, 3, 3, 3)), rng.integers(0, 3, (1, 3, 3)), 0.5)]


def _cases_sigmoid_mask():
    rng = np.random.default_rng(9)
    t = (rng.random((3, 5, 5)) < 0.5).astype(np.float64)
    return [(rng.normal(0, 2, (3, 4, 5, 5)), np.array([1, 3, 2]), t, 1.0),
            (rng.normal(0, 2, (1, 3, 4, 4)), np.array([2]), t[:1, :4, :4], 0.5)]


def _cases_mask_targets():
    H = W = 48
    yy, xx = np.mgrid[:H, :W] + 0.5
    disk = (xx - 20) ** 2 + (yy - 22) ** 2 < 11 ** 2
    square = (np.abs(xx - 33) < 8) & (np.abs(yy - 30) < 6)
    masks = np.stack([disk, square]).astype(np.uint8)
    rois = np.array([[8.3, 10.6, 31.7, 33.2], [20.1, 18.4, 44.9, 40.3], [4.2, 15.7, 25.9, 29.1]])
    return [(masks, rois, np.array([0, 1, 0]), 14), (masks, rois[1:2], np.array([1]), 7)]


def _cases_level_mapper():
    rng = np.random.default_rng(10)
    s = np.array([8.0, 20.0, 55.5, 112.0, 150.0, 224.0, 300.0, 448.0, 800.0, 1200.0])
    square = np.stack([np.zeros_like(s), np.zeros_like(s), s, s], axis=1)
    return [(square, 2, 5, 224.0, 4), (_random_boxes(rng, 20, hi=400.0, max_wh=600.0), 2, 5, 224.0, 4),
            (_random_boxes(rng, 20, hi=100.0, max_wh=128.0), 2, 5, 64.0, 4)]


def _cases_num_anchors():
    return [(128, 128, (4, 8, 16, 32), 3), (800, 1216, (4, 8, 16, 32, 64), 3), (64, 96, (8, 16), 1)]


def _cases_resized_size():
    return [(480, 640, 800, 1333), (300, 451, 800, 1333), (1080, 1920, 800, 1333), (500, 2000, 800, 1333),
            (800, 800, 800, 1333), (333, 517, 600, 1000), (1, 3, 800, 1333)]


# ----------------------------------------------------------------------------------------------------
# The registry and the check
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise: its notebook, the solution, the reference (project code) and the test cases."""
    notebook: str
    solution: Callable
    reference: Callable
    cases: Callable                     # () -> list of argument tuples
    rtol: float = 1e-9
    atol: float = 1e-12
    what: str = ""

    def run(self, fn, args):
        return fn(*_copy(args))


def _copy(args):
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)


EXERCISES: dict[str, Exercise] = {
    "box_iou": Exercise("01", box_iou, _ref_box_iou, _cases_box_iou, what="mrcnn_np.functional.box_iou"),
    "mask_iou": Exercise("01", mask_iou, _ref_mask_iou, _cases_mask_iou, what="pycocotools.mask.iou"),
    "decode_boxes": Exercise("02", decode_boxes, _ref_decode_boxes, _cases_decode_boxes,
                             what="mrcnn_np.detection.boxes.BoxCoder.decode"),
    "cell_anchors": Exercise("02", cell_anchors, _ref_cell_anchors, _cases_cell_anchors,
                             what="mrcnn_np.detection.anchors.cell_anchors"),
    "bilinear_sample": Exercise("03", bilinear_sample, _ref_bilinear_sample, _cases_bilinear,
                                what="mrcnn_np.functional.roi_align_forward (one bin, one sample)"),
    "bilinear_sample_backward": Exercise("03", bilinear_sample_backward, _ref_bilinear_sample_backward,
                                         _cases_bilinear_backward,
                                         what="mrcnn_np.functional.roi_align_backward (one bin, one sample)"),
    "select_class_masks": Exercise("04", select_class_masks, _ref_select_class_masks,
                                   _cases_select_class_masks,
                                   what="mrcnn_np.detection.postprocess.select_class_masks"),
    "conv_transpose_2x2": Exercise("04", conv_transpose_2x2, _ref_conv_transpose_2x2, _cases_conv_transpose,
                                   what="mrcnn_np.functional.conv_transpose2d_forward (stride 2)"),
    "smooth_l1_backward": Exercise("05", smooth_l1_backward, _ref_smooth_l1_backward, _cases_smooth_l1,
                                   what="mrcnn_np.functional.smooth_l1_backward"),
    "sigmoid_bce_backward": Exercise("05", sigmoid_bce_backward, _ref_sigmoid_bce_backward,
                                     _cases_sigmoid_bce,
                                     what="mrcnn_np.functional.sigmoid_bce_with_logits_backward"),
    "softmax_mask_ce_backward": Exercise("06", softmax_mask_ce_backward, _ref_softmax_mask_ce_backward,
                                         _cases_softmax_mask_ce,
                                         what="mrcnn_np.ops.losses.softmax_mask_cross_entropy_backward"),
    "sigmoid_mask_backward": Exercise("06", sigmoid_mask_backward, _ref_sigmoid_mask_backward,
                                      _cases_sigmoid_mask,
                                      what="RoIHeads' mask-loss backward (sigmoid_bce_with_logits_backward "
                                           "on the RoI's own channel)"),
    "mask_targets": Exercise("07", mask_targets, _ref_mask_targets, _cases_mask_targets, rtol=0, atol=0,
                             what="mrcnn_np.detection.mask_targets.build_mask_targets"),
    "level_mapper": Exercise("08", level_mapper, _ref_level_mapper, _cases_level_mapper, rtol=0, atol=0,
                             what="mrcnn_np.detection.level_mapper.LevelMapper"),
    "num_anchors": Exercise("09", num_anchors, _ref_num_anchors, _cases_num_anchors, rtol=0, atol=0,
                            what="mrcnn_np.detection.anchors.AnchorGenerator"),
    "resized_size": Exercise("10", resized_size, _ref_resized_size, _cases_resized_size, rtol=0, atol=0,
                             what="mrcnn_np.model.transform.resized_size_min_max"),
}


def _describe(args):
    parts = []
    for a in args:
        if isinstance(a, np.ndarray):
            parts.append(f"array{tuple(a.shape)} {a.dtype}")
        else:
            parts.append(repr(a))
    return "(" + ", ".join(parts) + ")"


def _as_array(v):
    from .backend import to_numpy
    if isinstance(v, (tuple, list)):
        return np.asarray([float(x) for x in v])
    return np.asarray(to_numpy(v) if hasattr(v, "shape") else v, dtype=np.float64)


def check(name: str, fn) -> bool:
    """Run ``fn`` on exercise ``name``'s test cases and compare it with the project's reference.

    Prints what it found and returns True (correct) or False (not attempted, raised, wrong shape or
    wrong value); it never raises for the learner's errors.
    """
    if name not in EXERCISES:
        print(f"exercise {name!r}: no such exercise (known: {', '.join(sorted(EXERCISES))})")
        return False
    # NOTE: the exercises are NumPy code on host arrays, so both the learner's function and the
    # reference run on the numpy backend, whichever backend the notebook uses (under cupy the
    # reference's dispatched ops would refuse host arrays)
    from .backend import get_backend, set_backend
    previous = get_backend().name
    set_backend("numpy")
    try:
        return _check(name, fn)
    finally:
        set_backend(previous)


def _check(name: str, fn) -> bool:
    ex = EXERCISES[name]
    cases = ex.cases()
    for k, args in enumerate(cases):
        try:
            got = ex.run(fn, args)
        except NotImplementedError:
            print(f"exercise {name}: not attempted yet (replace the `raise NotImplementedError` with "
                  f"your code)")
            return False
        except Exception as e:                              # noqa: BLE001 - reported, never raised
            print(f"exercise {name}: case {k + 1} of {len(cases)} {_describe(args)} raised "
                  f"{type(e).__name__}: {e}")
            return False
        want = _as_array(ex.run(ex.reference, args))
        try:
            got_a = _as_array(got)
        except Exception as e:                              # noqa: BLE001
            print(f"exercise {name}: case {k + 1}: the result ({type(got).__name__}) is not a number "
                  f"or an array: {e}")
            return False
        if got_a.shape != want.shape:
            print(f"exercise {name}: case {k + 1} of {len(cases)} {_describe(args)}: shape "
                  f"{got_a.shape}, expected {want.shape}")
            return False
        if not np.allclose(got_a, want, rtol=ex.rtol, atol=ex.atol, equal_nan=False):
            err = np.abs(got_a - want)
            err = np.where(np.isnan(err), np.inf, err)
            at = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
            rel = float(err[at] / max(abs(float(want[at])), 1e-300))
            print(f"exercise {name}: case {k + 1} of {len(cases)} {_describe(args)} is wrong: max abs "
                  f"error {float(err[at]):.3g} at index {tuple(int(i) for i in at)} (got "
                  f"{float(got_a[at]):.6g}, expected {float(want[at]):.6g}; rel error {rel:.3g}; "
                  f"tolerance rtol={ex.rtol:g}, atol={ex.atol:g})")
            return False
    print(f"exercise {name}: correct ({len(cases)} cases, checked against {ex.what})")
    return True
