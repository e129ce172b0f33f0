"""Inference postprocessing: from box-head and mask-head outputs to the seed's ``{(c_i, b_i, M_i)}``.

Boxes (per image, ``R`` proposals, ``K`` object classes, class 0 = background)::

    p[r, k]   = softmax(class_logits[r])_k                          (R, K+1)
    box[r, k] = clip(decode(deltas[r, k], proposal_r))             (R, K, 4) for k = 1..K
    candidates: every (r, k) with p[r, k] > score_thresh and both sides >= min_size
    keep      = batched_nms(box, p, k, nms_thresh)                 (per class)
    the first detections_per_img of keep (highest scores)

Box deltas may come as ``(R, 4(K+1))`` (a column group for the background too, torchvision's layout;
it is ignored) or ``(R, 4K)`` (object classes only); the column group of class ``k`` is then
``4k : 4k+4`` or ``4(k-1) : 4k``. One proposal can yield detections of several classes.

Masks: the mask head sees the kept boxes and outputs ``(D, C, m, m)`` logits; the channel of each
detection's class is taken (notes, section 4), passed through a sigmoid, and pasted into the image.

Pasting (``paste_masks``). A box ``(x1, y1, x2, y2)`` of size ``w x h`` holds an ``m x m`` probability
map; mask cell ``(i, j)`` has its centre at ``(x1 + (j + 0.5) w / m,  y1 + (i + 0.5) h / m)``.
Image pixel ``(px, py)`` is represented by its centre ``(px + 0.5, py + 0.5)``::

    inside(px, py) = x1 <= px + 0.5 < x2  and  y1 <= py + 0.5 < y2        (half-open: adjacent
                                                                            boxes share no pixel)
    u = (px + 0.5 - x1) m / w - 0.5,   v = (py + 0.5 - y1) m / h - 0.5      (mask-cell coordinates)
    value = bilinear(mask, v, u), with u, v clamped to [0, m - 1] (edge cells extend to the border)
    M(px, py) = inside and value >= threshold

Pixels outside the box are 0; parts of the box outside the image are cut off; a box too thin to
contain a pixel centre gives an empty mask. This is a dispatched op, ``functional.paste_masks``: its
reference, :mod:`mrcnn_np.ops.paste` (equations P1-P4 there), computes only each box's window of
pixels, and every backend has a kernel for it, so under a GPU backend the masks are pasted on the
device and only the finished ``(D, H, W)`` masks travel to the host.

Where to paste (``detections_to_original``). The model sees a resized image; its boxes are in input
pixels. Rather than paste at the input size and enlarge the result (a 28x28 mask would pass through
the coarse input grid, then be blown up nearest-neighbour into staircases), each box is mapped to the
original image, ``x * W / w`` and ``y * H / h``, and the ``m x m`` mask is pasted there directly, at
the original resolution. This is what torchvision does (``transform.postprocess`` rescales the boxes,
then ``paste_masks_in_image`` pastes at the original size). Its pasting differs from ours in two
details: it pads the ``m x m`` mask with one cell of zeros and enlarges the box to match (so the
probability fades to 0 across the box edge instead of being cut there), and it rounds the box to whole
pixels (``int``, with the legacy ``+ 1`` width) before resizing the mask with ``interpolate(...,
mode="bilinear", align_corners=False)``; it returns probabilities, which its evaluation thresholds at
``> 0.5``. We keep the sub-pixel box and pixel-centre sampling described above (detectron2's choice),
which differs from torchvision by at most a pixel along the box edge.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..backend import get_array_module, get_backend, to_numpy
from .boxes import BoxCoder, _image_size, check_boxes, clip_boxes, remove_small_boxes
from ..functional import batched_nms
from ..functional import interpolate_bilinear
from ..ops._check import values_on_host

__all__ = ["postprocess_boxes", "postprocess_boxes_batch", "select_class_masks", "paste_masks",
           "paste_masks_torchvision", "postprocess_masks", "detections_to_original", "PASTE_MODES"]

#: ``paste_masks(mode=...)``: our pixel-centre sampling, or torchvision's ``paste_masks_in_image``.
PASTE_MODES = ("centres", "torchvision")


def _softmax(x):
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _per_class_boxes(class_logits, box_deltas, proposals, box_coder):
    """The argument check, then each RoI's box decoded for every class and the class scores:
    ``(boxes (R, K, 4) unclipped, scores (R*K,))``, background left out."""
    check_boxes("proposals", proposals)
    if class_logits.ndim != 2 or class_logits.shape[0] != proposals.shape[0] or class_logits.shape[1] < 2:
        raise ValueError(f"class_logits: expected shape ({proposals.shape[0]}, K+1) with K >= 1, got "
                         f"{tuple(class_logits.shape)}")
    r, k1 = class_logits.shape
    k = k1 - 1
    if box_deltas.shape not in ((r, 4 * k1), (r, 4 * k)):
        raise ValueError(f"box_deltas: expected shape ({r}, {4 * k1}) or ({r}, {4 * k}) for "
                         f"{k} classes, got {tuple(box_deltas.shape)}")
    box_coder = box_coder or BoxCoder((10.0, 10.0, 5.0, 5.0))
    boxes = box_coder.decode(box_deltas, proposals).reshape(r, box_deltas.shape[1] // 4, 4)  # (R, C, 4)
    if boxes.shape[1] == k1:
        boxes = boxes[:, 1:]                                              # drop the background group
    return boxes, _softmax(class_logits)[:, 1:].reshape(-1)               # (R, K) -> (R*K,)


def postprocess_boxes(class_logits, box_deltas, proposals, image_size, score_thresh: float = 0.05,
                      nms_thresh: float = 0.5, detections_per_img: int = 100, min_size: float = 1e-2,
                      box_coder: BoxCoder | None = None):
    """Box-head outputs of one image -> detections.

    class_logits ``(R, K+1)``; box_deltas ``(R, 4(K+1))`` or ``(R, 4K)``; proposals ``(R, 4)``;
    image_size ``(h, w)``. Defaults follow torchvision (score > 0.05, NMS 0.5, 100 per image,
    ``BoxCoder((10, 10, 5, 5))``).
    Returns ``{"boxes": (D, 4), "scores": (D,), "labels": (D,) int64 in 1..K}``, by decreasing score.
    """
    xp = get_array_module(class_logits)
    boxes, scores = _per_class_boxes(class_logits, box_deltas, proposals, box_coder)
    r, k1 = class_logits.shape
    boxes = clip_boxes(boxes, tuple(image_size)).reshape(-1, 4)           # (R, K, 4) -> (R*K, 4)
    labels = xp.tile(xp.arange(1, k1, dtype=xp.int64), r)                 # (R*K,): 1..K, 1..K, ...
    keep = xp.nonzero(scores > score_thresh)[0]
    keep = keep[remove_small_boxes(boxes[keep], min_size)]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def postprocess_boxes_batch(class_logits, box_deltas, proposals, counts, image_sizes,
                            score_thresh: float = 0.05, nms_thresh: float = 0.5,
                            detections_per_img: int = 100, min_size: float = 1e-2,
                            box_coder: BoxCoder | None = None):
    """:func:`postprocess_boxes` for the RoIs of several images at once, with the same result per image.

    class_logits ``(R, K+1)``, box_deltas ``(R, 4(K+1))`` or ``(R, 4K)``, proposals ``(R, 4)``: the
    RoIs of image 0 first, ``counts[i]`` of image ``i``; image_sizes: one ``(h, w)`` per image.
    Returns one dict per image, as :func:`postprocess_boxes` gives it.

    Why batched: each data-dependent step (which candidates pass the score and size filters, what NMS
    keeps, how many each image keeps) is then one read for the batch instead of one per image; on a
    GPU each read is a wait for the device. NMS runs once over all images with the label
    ``image * (K + 1) + class``, so boxes of different images never suppress each other; its output is
    in decreasing score order (ties: lower index, i.e. earlier image, first), and a stable grouping
    by image gives each image's detections in the order :func:`postprocess_boxes` returns them.
    """
    xp = get_array_module(class_logits)
    counts = [int(c) for c in counts]
    n = len(counts)
    if len(image_sizes) != n or sum(counts) != proposals.shape[0]:
        raise ValueError(f"counts: expected one count per image ({len(image_sizes)} image sizes) "
                         f"summing to the {proposals.shape[0]} proposals, got {counts}")
    boxes, scores = _per_class_boxes(class_logits, box_deltas, proposals, box_coder)
    r, k1 = class_logits.shape
    k = k1 - 1
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    boxes = xp.concatenate([clip_boxes(boxes[starts[i]:starts[i + 1]], tuple(image_sizes[i]))
                            for i in range(n)]).reshape(-1, 4) if n else boxes.reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    valid = to_numpy((scores > score_thresh) & (w >= min_size) & (h >= min_size))   # one read
    image = np.repeat(np.arange(n), np.asarray(counts) * k)               # (R*K,) on the host
    label = np.tile(np.arange(1, k1), r)
    cand = np.flatnonzero(valid)
    boxes, scores = boxes[xp.asarray(cand)], scores[xp.asarray(cand)]
    labels = xp.asarray(label[cand])
    groups = xp.asarray(image[cand] * k1 + label[cand])
    keep = batched_nms(boxes, scores, groups, nms_thresh)                # one read (the greedy pass)
    img_of_keep = xp.asarray(image[cand])[keep]
    order = keep[xp.argsort(img_of_keep, kind="stable")]                 # grouped by image, in order
    per_image = to_numpy(xp.bincount(img_of_keep, minlength=n)).tolist()  # one read
    out, start = [], 0
    for c in per_image:
        take = order[start:start + min(c, detections_per_img)]
        start += c
        out.append({"boxes": boxes[take], "scores": scores[take], "labels": labels[take]})
    return out


def select_class_masks(mask_logits, labels, background_channel: bool = True):
    """mask_logits ``(D, C, m, m)``, labels ``(D,)`` in 1..K -> probabilities ``(D, m, m)``:
    ``sigmoid(mask_logits[d, c_d])`` with ``c_d = label_d`` when the head has a background channel
    (``C = K + 1``), else ``label_d - 1`` (``C = K``)."""
    xp = get_array_module(mask_logits)
    if mask_logits.ndim != 4:
        raise ValueError(f"mask_logits: expected (D, C, m, m), got shape {tuple(mask_logits.shape)}")
    if labels.shape != (mask_logits.shape[0],):
        raise ValueError(f"labels: expected shape ({mask_logits.shape[0]},), got {tuple(labels.shape)}")
    ch = labels.astype(xp.int64) - (0 if background_channel else 1)
    if ch.shape[0] and values_on_host(ch) and (int(ch.min()) < 0 or int(ch.max()) >= mask_logits.shape[1]):
        raise ValueError(f"labels: channel out of range for mask_logits with {mask_logits.shape[1]} "
                         f"channels (background_channel={background_channel})")
    x = mask_logits[xp.arange(ch.shape[0]), ch]                           # (D, m, m)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def paste_masks(masks, boxes, image_size, threshold: float = 0.5, mode: str = "centres"):
    """Paste box-relative mask probabilities into the image.

    masks ``(D, m, m)`` probabilities (or ``(D, m_h, m_w)``), boxes ``(D, 4)``, image_size ``(h, w)``
    -> ``(D, h, w)`` bool, in the arrays' module; see the module docstring for the sampling.
    ``mode="centres"``: ``M = bilinear >= threshold`` inside the box, ``False`` elsewhere (the
    dispatched op ``functional.paste_masks``, reference :func:`mrcnn_np.ops.paste.paste_masks`);
    ``mode="torchvision"``: :func:`paste_masks_torchvision` (``> threshold``, on the host).
    """
    if mode == "torchvision":
        return paste_masks_torchvision(masks, boxes, image_size, threshold)
    if mode != "centres":
        raise ValueError(f"mode: expected one of {PASTE_MODES}, got {mode!r}")
    if getattr(masks, "dtype", None) is not None and masks.dtype.kind in "biu":
        masks = masks.astype(np.float32)                      # 0/1 masks: pasted as probabilities
    if not isinstance(masks, get_backend().xp.ndarray):
        # NOTE: host arrays under a GPU backend (the evaluation pastes one detection at a time from
        # host probabilities) are pasted where they are, by the reference: a trip to the GPU and back
        # would cost more than the paste. This is about where the data lives, not a fallback.
        return F.paste_masks.reference(masks, boxes, image_size, threshold)
    return F.paste_masks(masks, boxes, image_size, threshold)


def paste_masks_torchvision(masks, boxes, image_size, threshold: float | None = 0.5, padding: int = 1):
    """torchvision's ``paste_masks_in_image`` (module docstring): masks ``(D, m, m)`` probabilities,
    boxes ``(D, 4)`` in the pixels of the ``image_size = (H, W)`` image -> ``(D, H, W)``: bool
    ``> threshold``, or the float probabilities themselves with ``threshold=None`` (what torchvision
    returns). Computed on the host, one box at a time."""
    check_boxes("boxes", boxes)
    if getattr(masks, "ndim", None) != 3 or masks.shape[0] != boxes.shape[0] or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks: expected shape ({boxes.shape[0]}, m, m) (one per box), got "
                         f"{getattr(masks, 'shape', type(masks).__name__)}")
    H, W = (int(v) for v in _image_size(image_size))
    masks = to_numpy(masks)
    dt = masks.dtype if masks.dtype.kind == "f" else np.dtype(np.float32)
    d, m, _ = masks.shape
    padded = np.zeros((d, m + 2 * padding, m + 2 * padding), dt)
    padded[:, padding : padding + m, padding : padding + m] = masks
    b = to_numpy(boxes).astype(np.float32)
    half, s = np.float32(0.5), np.float32((m + 2 * padding) / m)
    w_half, h_half = (b[:, 2] - b[:, 0]) * half * s, (b[:, 3] - b[:, 1]) * half * s
    x_c, y_c = (b[:, 2] + b[:, 0]) * half, (b[:, 3] + b[:, 1]) * half
    # NOTE: .astype(int64) truncates toward zero, as torch's .to(torch.int64): -0.7 -> 0, not -1
    expanded = np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], 1).astype(np.int64)
    out = np.zeros((d, H, W), dtype=dt if threshold is None else bool)
    for i, (x1, y1, x2, y2) in enumerate(expanded.tolist()):
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        x0, x1_ = max(x1, 0), min(x2 + 1, W)
        y0, y1_ = max(y1, 0), min(y2 + 1, H)
        if x1_ <= x0 or y1_ <= y0:
            continue
        resized = interpolate_bilinear(padded[i : i + 1], (h, w))[0]          # (h, w)
        part = resized[y0 - y1 : y1_ - y1, x0 - x1 : x1_ - x1]
        out[i, y0:y1_, x0:x1_] = part if threshold is None else part > threshold
    return get_array_module(boxes).asarray(out)


def postprocess_masks(detections, mask_logits, image_size, threshold: float = 0.5,
                      background_channel: bool = True):
    """Add ``"masks"`` ``(D, h, w)`` bool to ``detections`` (from :func:`postprocess_boxes`), given the
    mask head's logits ``(D, C, m, m)`` on ``detections["boxes"]``. Returns a new dict."""
    probs = select_class_masks(mask_logits, detections["labels"], background_channel)
    return {**detections, "masks": paste_masks(probs, detections["boxes"], image_size, threshold)}


def detections_to_original(det: dict, image_size, original_size=None, paste: bool = True,
                           threshold: float = 0.5, mode: str = "centres") -> dict:
    """One image's detections in input pixels -> the original image.

    ``det``: ``boxes (D, 4)`` inside the valid area ``image_size = (h, w)``, ``scores``, ``labels``,
    ``mask_probs (D, m, m)``. ``original_size = (H, W)`` (default ``(h, w)``: stay in input pixels).
    Boxes are scaled by ``(W / w, H / h)`` (the resize was a pure per-axis scale, top-left anchored);
    with ``paste``, ``masks (D, H, W)`` bool are pasted from ``mask_probs`` at the original size
    (module docstring), else ``mask_probs`` is passed on. ``mode``: how to paste (``paste_masks``);
    ``"torchvision"`` also scales the boxes as torchvision does (float32 ratios ``H / h``, no clamp).
    Returns a new dict, in the arrays' module: given device arrays, the boxes are scaled and (mode
    ``"centres"``) the masks pasted on the device, with no copy to the host; the caller copies the
    results (``MaskRCNN.predict`` does).
    """
    h, w = (int(v) for v in _image_size(tuple(image_size)))
    H, W = (h, w) if original_size is None else (int(v) for v in _image_size(tuple(original_size)))
    boxes = det["boxes"]
    xp = get_array_module(boxes)
    if (H, W) != (h, w) and mode == "torchvision":
        fx, fy = np.float32(W) / np.float32(w), np.float32(H) / np.float32(h)
        boxes = boxes * xp.asarray([fx, fy, fx, fy], dtype=boxes.dtype)
    elif (H, W) != (h, w):
        f = xp.asarray([W / w, H / h, W / w, H / h], dtype=boxes.dtype)
        # NOTE: the minimum guards against x2 = w * (W / w) rounding to just above W in float32.
        boxes = xp.minimum(boxes * f, xp.asarray([W, H, W, H], dtype=boxes.dtype))
    out = {k: v for k, v in det.items() if k != "mask_probs"}
    out["boxes"] = boxes
    if paste:
        out["masks"] = paste_masks(det["mask_probs"], boxes, (H, W), threshold, mode)
    else:
        out["mask_probs"] = det["mask_probs"]
    return out
