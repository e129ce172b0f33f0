"""COCO evaluation: predictions -> COCO result entries -> pycocotools' AP and AR.

COCO's metric is *average precision* (AP): for each class, detections are sorted by score and matched
greedily to ground truth at an IoU threshold; precision is averaged over 101 recall levels, then over
classes, then over IoU thresholds 0.50:0.05:0.95. For boxes the IoU is between boxes; for ``segm``
between masks. We do not reimplement it: ``pycocotools.cocoeval.COCOeval`` is the reference everyone
reports, and using it means our numbers compare with published ones.

Input, one dict per image (at the *original* image size; see
:func:`mrcnn_np.data.transforms.predictions_to_original`)::

    boxes   (D, 4)  x1, y1, x2, y2 in pixels
    scores  (D,)
    labels  (D,)    contiguous labels 1..K (the dataset's ``cat_id_to_label``)
    masks   (D, H, W) bool/uint8 (floats are thresholded at 0.5); needed for "segm" only
    segmentation    instead of masks: a list of D COCO RLEs {"size": [H, W], "counts": str}
                    (what :func:`masks_to_rles` makes, one detection at a time)

given either as ``{image_id: prediction}`` or as a list of predictions each carrying ``"image_id"``.

Output of :func:`evaluate_coco` (values as pycocotools gives them, in ``[0, 1]``)::

    {"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}, "segm": {...same keys}}

taken from ``COCOeval.stats[0..5]`` and ``stats[8]`` (AR with at most 100 detections per image).

Which images count: those present in the predictions (an image with zero detections still counts, as a
miss for all its objects), or ``image_ids`` if given; with no predictions at all, every image of the
ground truth.

No detections at all: ``COCO.loadRes`` cannot take an empty list, so an empty result set is built
directly and run through the same ``COCOeval``. The rule is then pycocotools' own: every metric is
``0.0`` where the evaluated images have ground truth (in that area range), and ``-1.0`` where they have
none (pycocotools' "undefined", e.g. APs on a dataset without small objects).
"""
from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .atomic import atomic_write_json
from .detection.postprocess import paste_masks
from .data.coco import (CocoDataset, category_mapping, mask_to_rle, read_coco_json,
                        segmentation_to_mask)

__all__ = ["METRIC_KEYS", "load_coco_gt", "masks_to_rles", "predictions_to_coco_results",
           "evaluate_coco", "write_coco_results", "per_class_ap"]

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
_STATS_INDEX = (0, 1, 2, 3, 4, 5, 8)        # positions of METRIC_KEYS in COCOeval.stats


@contextlib.contextmanager
def _quiet(verbose: bool):
    """pycocotools prints progress and the summary table; keep it unless ``verbose``."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _fill_defaults(ann: dict, height: int, width: int, source: str) -> None:
    """Complete one ground-truth annotation in place with COCO's defaults (see :func:`load_coco_gt`)."""
    ann.setdefault("iscrowd", 0)
    mask = None
    if ann.get("bbox") is None:          # read_coco_json guarantees a segmentation in this case
        mask = segmentation_to_mask(ann["segmentation"], height, width, source=source, ann_id=ann["id"])
        ann["bbox"] = [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask)))]
    if not ann.get("segmentation"):
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    if "area" not in ann:
        if mask is None:
            mask = segmentation_to_mask(ann["segmentation"], height, width, source=source,
                                        ann_id=ann["id"])
        ann["area"] = float(mask.sum())


def load_coco_gt(ground_truth, verbose: bool = False) -> COCO:
    """A ``pycocotools.coco.COCO`` for ``ground_truth`` (a :class:`CocoDataset` or a JSON path).

    The JSON is checked by :func:`mrcnn_np.data.coco.read_coco_json` first (errors name the file and
    id). Fields some exporters omit are filled in as COCO defines them, so ``COCOeval`` does not fail
    on them: ``iscrowd`` 0; ``area`` from the mask (or the box); ``segmentation`` the box's polygon.
    A file that has them all is used unchanged.
    """
    path = ground_truth.annotation_json if isinstance(ground_truth, CocoDataset) else Path(ground_truth)
    data = read_coco_json(path)
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        _fill_defaults(ann, *sizes[ann["image_id"]], source=str(path))
    gt = COCO()
    gt.dataset = data
    with _quiet(verbose):
        gt.createIndex()
    return gt


def _as_mapping(predictions) -> dict:
    if isinstance(predictions, dict):
        return dict(predictions)
    out = {}
    for k, p in enumerate(predictions):
        if "image_id" not in p:
            raise ValueError(f"predictions[{k}]: missing 'image_id'")
        if p["image_id"] in out:
            raise ValueError(f"predictions: image id {p['image_id']} appears twice")
        out[p["image_id"]] = p
    return out


def masks_to_rles(mask_probs, boxes, image_size, threshold: float = 0.5, mode: str = "centres") -> list:
    """Paste each ``m x m`` mask into its box at ``image_size = (H, W)`` and encode it as COCO RLE.

    mask_probs ``(D, m, m)`` probabilities, boxes ``(D, 4)`` in the pixels of the ``(H, W)`` image
    (NumPy). One detection at a time: the peak is one ``(H, W)`` bool mask (12 MB at 4000x3000),
    not ``D`` of them. ``mode``: how to paste (:func:`~mrcnn_np.detection.postprocess.paste_masks`;
    the model's ``config.paste``). Returns ``D`` dicts ``{"size": [H, W], "counts": str}``.
    """
    mask_probs, boxes = np.asarray(mask_probs), np.asarray(boxes)
    if len(mask_probs) != len(boxes):
        raise ValueError(f"mask_probs: expected {len(boxes)} masks (one per box), got {len(mask_probs)}")
    return [mask_to_rle(paste_masks(mask_probs[d : d + 1], boxes[d : d + 1], image_size, threshold, mode)[0])
            for d in range(len(boxes))]


def predictions_to_coco_results(predictions, label_to_cat_id: dict, image_sizes: dict | None = None,
                                with_masks: bool = True) -> tuple[list, list]:
    """Predictions (see the module docstring) -> ``(bbox_results, segm_results)``, COCO result lists.

    bbox entry: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``; segm entry: the same with
    ``"segmentation"`` (compressed RLE, ``counts`` a str) instead of ``"bbox"`` (kept apart because
    ``loadRes`` would otherwise take a mask's area from its box). ``label_to_cat_id`` maps contiguous
    labels back to the dataset's category ids. ``image_sizes`` ``{image_id: (H, W)}``, when given, is
    checked against the masks. ``with_masks=False`` skips the masks (``segm_results`` is then empty).
    Raises ``ValueError`` naming the image id on an unknown label, mismatched lengths or mask size.
    """
    bbox_res, segm_res = [], []
    for image_id, p in sorted(_as_mapping(predictions).items(), key=lambda kv: kv[0]):
        boxes = np.asarray(p["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(p["scores"], np.float64).reshape(-1)
        labels = np.asarray(p["labels"]).reshape(-1)
        D = len(boxes)
        if len(scores) != D or len(labels) != D:
            raise ValueError(f"predictions for image id {image_id}: {D} boxes, {len(scores)} scores, "
                             f"{len(labels)} labels; expected equal counts")
        if D == 0:                       # a negative (or missed) image: nothing to report
            continue
        masks = None
        rles = p.get("segmentation") if with_masks else None
        if rles is not None:
            if len(rles) != D:
                raise ValueError(f"predictions for image id {image_id}: {len(rles)} segmentations for "
                                 f"{D} boxes; expected one RLE per box")
            for r in rles:
                if image_sizes is not None and tuple(r["size"]) != tuple(image_sizes[image_id]):
                    raise ValueError(f"predictions for image id {image_id}: an RLE of size {r['size']} "
                                     f"but the image is {image_sizes[image_id][0]}x"
                                     f"{image_sizes[image_id][1]} (H x W)")
        elif with_masks:
            if p.get("masks") is None:
                raise ValueError(f"predictions for image id {image_id}: no 'masks' (needed for segm; "
                                 f"evaluate with iou_types=('bbox',) for boxes only)")
            masks = np.asarray(p["masks"])
            if masks.dtype.kind == "f":
                masks = masks >= 0.5
            if masks.ndim != 3 or len(masks) != D:
                raise ValueError(f"predictions for image id {image_id}: masks of shape {masks.shape}, "
                                 f"expected ({D}, H, W)")
            if image_sizes is not None and masks.shape[1:] != tuple(image_sizes[image_id]):
                raise ValueError(f"predictions for image id {image_id}: masks are "
                                 f"{masks.shape[1]}x{masks.shape[2]} but the image is "
                                 f"{image_sizes[image_id][0]}x{image_sizes[image_id][1]} (H x W); "
                                 f"map them back to the original size first")
        for d in range(D):
            label = int(labels[d])
            if label not in label_to_cat_id:
                raise ValueError(f"predictions for image id {image_id}: label {label} is not one of "
                                 f"the dataset's labels 1..{len(label_to_cat_id)}")
            x1, y1, x2, y2 = boxes[d]
            base = {"image_id": int(image_id), "category_id": label_to_cat_id[label],
                    "score": float(scores[d])}
            bbox_res.append({**base, "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
            if rles is not None:
                segm_res.append({**base, "segmentation": dict(rles[d])})
            elif masks is not None:
                segm_res.append({**base, "segmentation": mask_to_rle(masks[d])})
    return bbox_res, segm_res


def write_coco_results(path, results: list) -> None:
    """Write a COCO result list as JSON, atomically (readable by ``COCO.loadRes``)."""
    atomic_write_json(path, results)


def _empty_results(gt: COCO) -> COCO:
    """A result set with no detections (``loadRes([])`` raises on the empty list)."""
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]),
                  "categories": copy.deepcopy(gt.dataset["categories"]), "annotations": []}
    dt.createIndex()
    return dt


def per_class_ap(precision: np.ndarray, cat_ids, names) -> dict:
    """Per-class AP from pycocotools' accumulated ``COCOeval.eval["precision"]``.

    ``precision`` has shape (T, R, K, A, M): IoU thresholds 0.50:0.05:0.95, 101 recall levels,
    categories (in ``params.catIds`` order), area ranges (0 = all), max detections (-1 = 100); -1
    marks "no ground truth". As in ``COCOeval.summarize``: AP of class k = the mean of
    ``precision[:, :, k, 0, -1]`` over its entries > -1; AP50 / AP75 the same at thresholds 0 / 5.
    Returns ``{name: {"AP", "AP50", "AP75"}}`` (-1 where the class has no ground truth).
    """
    def mean_valid(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    out = {}
    for k, (cat, name) in enumerate(zip(cat_ids, names)):
        p = precision[:, :, k, 0, -1]                                          # (T, R)
        out[name] = {"AP": mean_valid(p), "AP50": mean_valid(p[0]), "AP75": mean_valid(p[5])}
    return out


def _cocoeval(gt: COCO, results: list, iou_type: str, image_ids, verbose: bool,
              per_class: bool = False) -> dict:
    with _quiet(verbose):
        # loadRes adds fields to the dicts it is given; hand it copies.
        dt = gt.loadRes(copy.deepcopy(results)) if results else _empty_results(gt)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {k: float(ev.stats[i]) for k, i in zip(METRIC_KEYS, _STATS_INDEX)}
    if per_class:
        cats = ev.params.catIds
        names = [gt.cats[c]["name"] for c in cats]
        metrics["per_class"] = per_class_ap(ev.eval["precision"], cats, names)
    return metrics


def evaluate_coco(predictions, ground_truth, out_path=None, *, iou_types=("bbox", "segm"),
                  image_ids=None, results_dir=None, verbose: bool = False,
                  per_class: bool = False, label_to_cat_id: dict | None = None) -> dict:
    """COCO AP/AR of ``predictions`` against ``ground_truth`` (a :class:`CocoDataset` or JSON path).

    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}}`` for each of
    ``iou_types`` (``"bbox"``, ``"segm"``) and, when ``out_path`` is given, writes it there as JSON
    (atomically). ``results_dir``, when given, receives the COCO result files ``bbox_results.json`` and
    ``segm_results.json`` (inputs to ``COCO.loadRes``). ``verbose`` lets pycocotools print its table.
    ``per_class=True`` adds ``"per_class": {class name: {"AP", "AP50", "AP75"}}`` under each IoU type,
    read from pycocotools' precision array (:func:`per_class_ap`); ``mrcnn-np eval`` writes it.
    ``label_to_cat_id``: how the predictions' labels map to category ids (default: the ground truth's
    own contiguous labels; an imported COCO model's labels *are* category ids, ``{k: k}``).
    See the module docstring for which images count and the zero-detection rule.
    """
    for t in iou_types:
        if t not in ("bbox", "segm"):
            raise ValueError(f"iou_types: expected 'bbox' and/or 'segm', got {t!r}")
    gt = load_coco_gt(ground_truth, verbose=verbose)
    gt_path = getattr(ground_truth, "annotation_json", ground_truth)
    preds = _as_mapping(predictions)
    known = set(gt.getImgIds())
    for iid in preds:
        if iid not in known:
            raise ValueError(f"predictions: image id {iid!r} is not in {gt_path}")
    if image_ids is None:
        image_ids = list(preds) if preds else sorted(known)
    else:
        image_ids = list(image_ids)
        unknown = [i for i in image_ids if i not in known]
        if unknown:
            raise ValueError(f"image_ids: {unknown[:5]} not in {gt_path}")
    if label_to_cat_id is None:
        _, label_to_cat_id, _ = category_mapping(gt.dataset["categories"])
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt.dataset["images"]}
    bbox_res, segm_res = predictions_to_coco_results(preds, label_to_cat_id, sizes,
                                                     with_masks="segm" in iou_types)
    if results_dir is not None:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        write_coco_results(Path(results_dir) / "bbox_results.json", bbox_res)
        if "segm" in iou_types:
            write_coco_results(Path(results_dir) / "segm_results.json", segm_res)
    metrics = {}
    for t in iou_types:
        metrics[t] = _cocoeval(gt, bbox_res if t == "bbox" else segm_res, t, image_ids, verbose,
                               per_class)
    if out_path is not None:
        atomic_write_json(out_path, metrics, indent=2)
    return metrics
