"""Geometric transforms of an ``(image, target)`` pair, and their inverses for predictions.

The model takes a batch of equally sized images, but datasets mix sizes and aspect ratios. Two ways
to get there, both keeping the aspect ratio and padding only at the bottom and right:

* :func:`resize_longest` (what the model's configs use): scale so that the *longer* side becomes
  ``max_size`` (torchvision's ``max_size``; we have no separate ``min_size``), no padding yet. The
  batch is padded afterwards to its largest image, rounded up to a multiple of 32
  (:func:`mrcnn_np.data.loader.pad_batch`), so a 640x480 photo becomes a 128x96 input, not a
  128x128 canvas with 32 rows of zeros.
* :func:`resize_and_pad`: fit into a fixed ``(Sh, Sw)`` canvas (the longer side relative to the
  canvas touches the edge) and pad to it.

Either way the unpadded, resized size ``(h, w)`` is kept as ``resized_size``: it is the image's
*valid area*, to which the model clips proposals and detections. Because the padding is at the
bottom/right, the top-left corner stays at ``(0, 0)`` and mapping back is a pure scale::

    fx = w / W,   fy = h / H                   (W x H original, w x h resized, w = round(W * scale))
    x_input = x_orig * fx,  y_input = y_orig * fy          boxes -> input pixels
    x_orig  = x_input / fx, y_orig  = y_input / fy         predictions -> original pixels

Two per-axis factors rather than one ``scale`` make the mapping exact despite the rounding of ``w``
and ``h``. The bookkeeping is stored in the target (``orig_size``, ``resized_size``, ``input_size``,
``scale``, ``flipped``) and is all :func:`boxes_to_original` and :func:`masks_to_original` need.

Masks are resized nearest-neighbour so they stay binary: output pixel ``r`` takes source pixel
``floor((r + 0.5) * H / h)``, the source pixel under its centre. Images are resized bilinearly (PIL).

:func:`hflip` mirrors image, boxes and masks together: ``x1' = W - x2``, ``x2' = W - x1``, mask columns
reversed. It must come *before* :func:`resize_and_pad` (flipping a padded canvas would move the
padding to the left and break the pure-scale inverse), and raises ``ValueError`` otherwise.

Images here are ``uint8 (H, W, 3)``; targets are the dicts of :class:`mrcnn_np.data.coco.CocoDataset`
(``boxes (M, 4)`` x1y1x2y2, ``labels (M,)``, ``masks (M, H, W)``). Plain NumPy: this is host-side data
preparation, not model code.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["input_hw", "resize_longest", "resize_target", "resized_hw_longest", "resize_and_pad", "hflip", "resize_masks_nearest", "boxes_to_original",
           "masks_to_original", "predictions_to_original"]


def input_hw(size) -> tuple[int, int]:
    """``size`` as ``(height, width)``: an int ``S`` means a square ``S x S`` canvas."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"input size: expected positive sizes, got {size!r}")
    return h, w


def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index under each destination pixel's centre: ``floor((r + 0.5) * src / dst)``, ``(dst,)``."""
    return np.minimum(((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64), src - 1)


def resize_masks_nearest(masks: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of ``(M, H, W)`` masks to ``(M, h, w)`` (``size = (h, w)``), same dtype."""
    h, w = size
    rows = _nearest_index(masks.shape[1], h)
    cols = _nearest_index(masks.shape[2], w)
    return masks[:, rows[:, None], cols[None, :]]          # (M, H, W) -> (M, h, w)


def _resized_hw(H: int, W: int, size) -> tuple[tuple[int, int], float]:
    Sh, Sw = input_hw(size)
    scale = min(Sh / H, Sw / W)
    # NOTE: min() keeps the rounded size inside the canvas; max(1, .) keeps a very thin image visible.
    return (max(1, min(Sh, round(H * scale))), max(1, min(Sw, round(W * scale)))), scale


def resized_hw_longest(H: int, W: int, max_size: int) -> tuple[tuple[int, int], float]:
    """``((h, w), scale)`` with ``scale = max_size / max(H, W)``, ``h = round(H scale)`` (at least 1)."""
    scale = max_size / max(H, W)
    return (max(1, min(max_size, round(H * scale))), max(1, min(max_size, round(W * scale)))), scale


def _resize(image: np.ndarray, target: dict, hw, scale: float, canvas) -> tuple[np.ndarray, dict]:
    """Resize ``image`` to ``hw = (h, w)``, place it top-left on a zero ``canvas = (Sh, Sw)``; the
    target's boxes are scaled by ``(fx, fy) = (w / W, h / H)``, its masks resized nearest-neighbour."""
    H, W = image.shape[:2]
    h, w = hw
    Sh, Sw = canvas
    if (h, w) == (H, W):
        resized = image
    else:
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if (Sh, Sw) == (h, w):
        out = np.ascontiguousarray(resized)
    else:
        out = np.zeros((Sh, Sw) + image.shape[2:], image.dtype)
        out[:h, :w] = resized                                    # pad bottom/right with zeros
    return out, resize_target(target, (H, W), hw, scale, canvas)


def resize_target(target: dict, original_hw, hw, scale: float, canvas=None) -> dict:
    """The target of an ``original_hw = (H, W)`` image resized to ``hw = (h, w)`` and placed top-left
    on a ``canvas`` (default ``hw``): boxes scaled by ``(w / W, h / H)``, masks ``(M, Sh, Sw)``
    resized nearest-neighbour and zero-padded, and the mapping bookkeeping (module docstring)."""
    H, W = original_hw
    h, w = hw
    Sh, Sw = canvas if canvas is not None else hw
    t = dict(target)
    fx, fy = w / W, h / H
    boxes = np.asarray(target["boxes"], np.float32).reshape(-1, 4)
    t["boxes"] = (boxes * np.array([fx, fy, fx, fy], np.float32)).astype(np.float32)
    masks = np.asarray(target["masks"])
    padded = np.zeros((masks.shape[0], Sh, Sw), masks.dtype)
    padded[:, :h, :w] = resize_masks_nearest(masks, (h, w))
    t["masks"] = padded
    t["orig_size"] = tuple(target.get("orig_size", (H, W)))
    t["resized_size"] = (h, w)
    t["input_size"] = (Sh, Sw)
    t["scale"] = float(scale)
    t["flipped"] = bool(target.get("flipped", False))
    return t


def resize_longest(image: np.ndarray, target: dict, max_size: int) -> tuple[np.ndarray, dict]:
    """Scale ``image`` ``uint8 (H, W, 3)`` so that its longer side is ``max_size``, aspect kept, no
    padding: returns ``(image (h, w, 3), target)`` with boxes and masks ``(M, h, w)`` mapped as in
    :func:`resize_and_pad` and the same bookkeeping (``input_size == resized_size == (h, w)`` until
    the batch pads it)."""
    if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 1:
        raise ValueError(f"max_size: expected a positive integer, got {max_size!r}")
    H, W = image.shape[:2]
    (h, w), scale = resized_hw_longest(H, W, int(max_size))
    return _resize(image, target, (h, w), scale, (h, w))


def resize_and_pad(image: np.ndarray, target: dict, size) -> tuple[np.ndarray, dict]:
    """Fit ``image`` ``uint8 (H, W, 3)`` into a ``size`` canvas (int or ``(Sh, Sw)``), keeping aspect.

    Returns ``(image (Sh, Sw, 3) uint8, target)`` where the new target has boxes scaled by
    ``(fx, fy)``, masks ``(M, Sh, Sw)`` resized nearest-neighbour and zero-padded, and the mapping
    bookkeeping: ``orig_size (H, W)``, ``resized_size (h, w)``, ``input_size (Sh, Sw)``, ``scale``
    (the factor chosen, ``min(Sh/H, Sw/W)``) and ``flipped``. Other keys are copied.
    """
    H, W = image.shape[:2]
    (h, w), scale = _resized_hw(H, W, size)
    return _resize(image, target, (h, w), scale, input_hw(size))


def hflip(image: np.ndarray, target: dict) -> tuple[np.ndarray, dict]:
    """Mirror ``image`` ``(H, W, 3)`` left-right with its target: boxes ``(M, 4)``
    ``x1' = W - x2, x2' = W - x1``; masks ``(M, H, W)`` columns reversed; ``flipped`` toggled.
    Apply before :func:`resize_and_pad`."""
    if "resized_size" in target:
        raise ValueError("hflip: the target was already resized and padded; flip before resize_and_pad "
                         "so that the padding stays at the right")
    W = image.shape[1]
    t = dict(target)
    b = np.asarray(target["boxes"], np.float32).reshape(-1, 4)
    t["boxes"] = np.stack([W - b[:, 2], b[:, 1], W - b[:, 0], b[:, 3]], axis=1).astype(np.float32)
    t["masks"] = np.ascontiguousarray(np.asarray(target["masks"])[:, :, ::-1])
    t["flipped"] = not bool(target.get("flipped", False))
    return np.ascontiguousarray(image[:, ::-1]), t


def _mapping(meta: dict):
    H, W = meta["orig_size"]
    h, w = meta.get("resized_size", (H, W))
    return H, W, h, w, bool(meta.get("flipped", False))


def boxes_to_original(boxes: np.ndarray, meta: dict) -> np.ndarray:
    """Boxes ``(D, 4)`` x1y1x2y2 in model-input pixels -> original-image pixels ``(D, 4)`` float32,
    clipped to the image (and un-flipped when ``meta["flipped"]``). ``meta`` is a target produced by
    :func:`resize_and_pad` (only its size keys are read)."""
    H, W, h, w, flipped = _mapping(meta)
    b = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([W / w, H / h, W / w, H / h])
    b = np.clip(b, 0, [W, H, W, H])
    if flipped:
        b = np.stack([W - b[:, 2], b[:, 1], W - b[:, 0], b[:, 3]], axis=1)
    return b.astype(np.float32)


def masks_to_original(masks: np.ndarray, meta: dict) -> np.ndarray:
    """Masks ``(D, Sh, Sw)`` at model-input size -> ``(D, H, W)`` at original size (same dtype):
    the padding is cut off, the rest resized nearest-neighbour, and un-flipped if needed.

    For the sharpest result, paste the mask head's ``m x m`` outputs directly at the original size
    with the boxes from :func:`boxes_to_original` instead; this function is for masks that were
    already pasted at input size.
    """
    H, W, h, w, flipped = _mapping(meta)
    m = resize_masks_nearest(np.asarray(masks)[:, :h, :w], (H, W))
    return np.ascontiguousarray(m[:, :, ::-1]) if flipped else m


def predictions_to_original(pred: dict, meta: dict) -> dict:
    """One image's predictions at input size -> original size. ``pred`` holds ``boxes (D, 4)``,
    ``scores (D,)``, ``labels (D,)`` and optionally ``masks (D, Sh, Sw)``; the result has the same keys
    (other keys copied) with boxes and masks mapped by :func:`boxes_to_original` and
    :func:`masks_to_original`."""
    out = dict(pred)
    out["boxes"] = boxes_to_original(pred["boxes"], meta)
    if pred.get("masks") is not None:
        out["masks"] = masks_to_original(pred["masks"], meta)
    return out
