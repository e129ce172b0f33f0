"""What the ``train``, ``eval``, ``predict`` and ``demo`` commands do, as plain functions.

A dataset folder is either one split (``images/`` + ``annotations.json``) or a root holding
``train/`` and ``val/`` splits of that form (what ``mrcnn-np shapes`` writes). Checkpoints carry the
config and the dataset's class names and category ids, so ``eval`` and ``predict`` need nothing else.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write_json
from .backend import to_numpy
from .checkpoint import load_checkpoint, read_metadata
from .data import CocoDataset
from .data.coco import decode_rle
from .detection.postprocess import paste_masks
from .evaluate import evaluate_coco, masks_to_rles, predictions_to_coco_results
from .model import ModelConfig, build_model, get_config
from .train import CHECKPOINT_NAME, CLIP_NORM, WARMUP_STEPS, peak_rss_mib, train

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Overlays of larger images are drawn downscaled to this longer side (results.json stays at full
#: resolution): a 4000x3000 overlay through matplotlib alone took 1.5 GB and 45 s here.
OVERLAY_MAX_SIDE = 2048


def open_split(data_dir, split: str) -> CocoDataset:
    """``data_dir`` as one split, or its ``split`` sub-folder; the error says what is missing."""
    root = Path(data_dir)
    for folder in (root, root / split):
        if (folder / "annotations.json").is_file():
            return CocoDataset(folder / "images", folder / "annotations.json")
    raise FileNotFoundError(
        f"--data {root}: no annotations found; expected {root / 'annotations.json'} or "
        f"{root / split / 'annotations.json'} (a COCO instances JSON beside an images/ folder; "
        f"'mrcnn-np shapes --out {root}' writes one)")


def load_model(checkpoint):
    """Rebuild the model a checkpoint was trained as, load its weights; returns (model, metadata)."""
    meta = read_metadata(checkpoint)
    model = build_model(ModelConfig.from_dict(meta["config"]))
    load_checkpoint(checkpoint, model)
    return model, meta


def _labels_to_cat_ids(meta) -> dict:
    extra = meta.get("extra") or {}
    return {int(k): int(v) for k, v in extra.get("label_to_cat_id", {}).items()}


def _labels_are_category_ids(mapping: dict) -> bool:
    """An imported torchvision model: label k is COCO category k (its 90 labels, N/A ones included)."""
    return len(mapping) > 0 and all(k == v for k, v in mapping.items()) and len(mapping) == 90


def run_train(config: str, data, out, *, steps=None, max_minutes=None, batch_size=4, lr=None,
              warmup_steps=WARMUP_STEPS, clip_norm=CLIP_NORM, resume=False, seed=0, progress=True,
              overrides=None, init=None, trainable_backbone_layers=None) -> dict:
    """Train preset ``config`` on the train split of ``data`` into ``out`` with the default recipe
    (docs/training.md, "Training recipe"): ``lr`` defaults to ``scaled_lr`` of the images per step (the batch
    size, or fewer when the dataset is smaller), a warm-up of
    ``warmup_steps`` steps whatever the run's length, gradients clipped to ``clip_norm``.
    ``steps`` defaults to 10 epochs, or, for a resume, to what the run was started with.
    ``overrides``: config fields set on top of the preset, e.g. ``{"mask_loss": "softmax"}``.

    ``init``: a checkpoint to fine-tune from (:mod:`mrcnn_np.finetune`: everything kept but the
    class-dependent predictors, which are re-initialised unless the dataset's classes are the
    checkpoint's; one line on stderr says which). ``trainable_backbone_layers`` (0-5, torchvision's
    meaning) defaults to 3 with ``init`` and 5 (all) without, as torchvision's for a pre-trained
    backbone or not; a resume keeps the run's own."""
    from .finetune import coco_label_space, describe_init, init_from_checkpoint
    ds = open_split(data, "train")
    ckpt = Path(out) / CHECKPOINT_NAME
    resuming = resume and ckpt.exists()
    labels_from = ckpt if resuming else init        # a resumed run keeps the label space it began with
    if labels_from is not None:
        space = coco_label_space(labels_from, ds.categories)
        if space is not None:
            ds.use_label_space(*space)
    overrides = dict(overrides or {})
    if trainable_backbone_layers is not None:
        overrides["trainable_backbone_layers"] = trainable_backbone_layers
    elif "trainable_backbone_layers" not in overrides:
        overrides["trainable_backbone_layers"] = (
            read_metadata(ckpt)["config"].get("trainable_backbone_layers", 5) if resuming
            else 3 if init is not None else 5)
    cfg = get_config(config, **{**overrides, "num_classes": ds.num_classes})
    model = build_model(cfg, seed=seed)
    extra = {"class_names": list(ds.class_names),
             "label_to_cat_id": {str(k): int(v) for k, v in ds.label_to_cat_id.items()}}
    if init is not None and not resuming:
        report = init_from_checkpoint(model, init, ds.class_names)
        print(f"[mrcnn-np train] {describe_init(report, model)}", file=sys.stderr)
        extra["init"] = {k: report[k] for k in ("source", "reinitialised", "checkpoint_config")}
    if steps is None:
        steps = _planned_steps(ckpt) if resume else None
        steps = steps or 10 * max(1, len(ds) // batch_size)
    summary = train(model, ds, out, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                    clip_norm=clip_norm, checkpoint_every=250, log_every=10,
                    max_minutes=max_minutes, resume=resume, seed=seed, progress=progress,
                    extra=extra)
    return summary


def _planned_steps(checkpoint: Path):
    """The number of steps the run in a checkpoint was started with (None if there is no checkpoint)."""
    if not checkpoint.exists():
        return None
    extra = read_metadata(checkpoint).get("extra") or {}
    planned = extra.get("planned_steps", extra.get("total_steps"))
    return int(planned) if planned is not None else None


def predict_dataset(model, ds, batch_size=None) -> dict:
    """{image_id: prediction at the original image size} for every image of ``ds``.

    ``batch_size`` images are padded into one batch (default 8; 1 for ``resize="min_max"`` presets
    such as ``r50_fpn``, whose photos differ in size: as torchvision's reference evaluation does,
    each image is then predicted alone, since padding it to a larger neighbour changes its anchors'
    strides and the RPN's top-k, hence its detections).

    Each prediction has ``boxes``, ``scores``, ``labels`` (original pixels) and ``segmentation``, one
    COCO RLE per detection: the ``m x m`` mask pasted straight at the original size (the model's
    ``config.paste`` rule) and encoded one detection at a time, so memory does not grow with
    (detections x pixels) over the dataset. Images go through the model's own transform.
    """
    if batch_size is None:
        batch_size = 1 if model.config.resize == "min_max" else 8
    preds = {}
    for start in range(0, len(ds), batch_size):
        indices = range(start, min(start + batch_size, len(ds)))
        images = [ds[i][0] for i in indices]
        batch, sizes, originals = model.transform(images)
        for i, r, orig in zip(indices, model.predict(batch, sizes, originals, paste=False), originals):
            preds[ds.image_ids[i]] = _host_prediction(r, orig, model.config.paste)
        del images, batch
    return preds


def _host_prediction(r: dict, orig_size, paste="centres") -> dict:
    """One image's ``model.predict(..., paste=False)`` result -> NumPy boxes/scores/labels and RLEs."""
    boxes = to_numpy(r["boxes"])
    return {"boxes": boxes, "scores": to_numpy(r["scores"]), "labels": to_numpy(r["labels"]),
            "segmentation": masks_to_rles(to_numpy(r["mask_probs"]), boxes, tuple(orig_size), mode=paste)}


def decode_masks(pred: dict) -> np.ndarray:
    """The dense ``(D, H, W)`` bool masks of a :func:`predict_dataset` entry (for pictures)."""
    rles = pred["segmentation"]
    if not rles:
        return np.zeros((0, 0, 0), bool)
    return np.stack([decode_rle({"size": r["size"], "counts": r["counts"].encode("ascii")}) for r in rles]
                    ).astype(bool)


def run_eval(checkpoint, data, out) -> dict:
    out = Path(out)
    if out.is_dir():                         # checked first: evaluation takes minutes
        raise ValueError(f"--out {out} is a folder; expected the path of the metrics JSON to write "
                         f"(e.g. {out / 'metrics.json'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    model, meta = load_model(checkpoint)
    ds = open_split(data, "val")
    mapping = _labels_to_cat_ids(meta)
    if _labels_are_category_ids(mapping):
        # an imported COCO model: its labels are COCO category ids, whatever subset the data has
        unknown = sorted(set(ds.cat_id_to_label) - set(mapping.values()))
        if unknown:
            raise ValueError(f"--data {data}: category ids {unknown[:10]} are not among the "
                             f"{len(mapping)} categories {checkpoint} predicts")
        return evaluate_coco(predict_dataset(model, ds), ds, out, per_class=True, label_to_cat_id=mapping)
    if ds.num_classes != model.config.num_classes:
        raise ValueError(f"--data {data}: {ds.num_classes} classes, but {checkpoint} was trained "
                         f"for {model.config.num_classes}")
    return evaluate_coco(predict_dataset(model, ds), ds, out, per_class=True)


def _image_files(inputs) -> list[Path]:
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))} "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image_file(path) -> np.ndarray:
    """An image file as ``uint8 (H, W, 3)`` RGB, upright (its EXIF orientation applied, as phones'
    JPEGs need and as the COCO loader does); ``ValueError`` naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as pil:
            return np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def predict_image(model, image: np.ndarray) -> dict:
    """One ``uint8 (H, W, 3)`` image -> ``{boxes, scores, labels, mask_probs}``, boxes in its pixels.

    The model's transform resizes the image (its preset's rule: the longer side to
    ``config.image_size``, or torchvision's short side 800 for ``r50_fpn``), normalises and pads it;
    detections are clipped to the resized image (never in the padding) and mapped back to ``(H, W)``.
    Masks are left as the head's ``m x m`` probabilities: paste them with
    :func:`mrcnn_np.detection.postprocess.paste_masks` (``mode=model.config.paste``) at ``(H, W)``, a
    few at a time.
    """
    r = model.detect(image, paste=False)[0]
    return {k: to_numpy(v) for k, v in r.items()}


def _draw_overlay(image, pred: dict, score_thresh, class_names, title, save_path, paste="centres") -> None:
    """Draw the detections with ``score >= score_thresh``, at most :data:`OVERLAY_MAX_SIDE` pixels on
    the longer side: the masks are pasted from ``mask_probs`` straight at the overlay's size, only
    for the drawn detections."""
    from .visualize import draw_instances
    h, w = image.shape[:2]
    shown = np.flatnonzero(pred["scores"] >= score_thresh)
    boxes = pred["boxes"][shown]
    if max(h, w) > OVERLAY_MAX_SIDE:
        f = OVERLAY_MAX_SIDE / max(h, w)
        sh, sw = max(1, round(h * f)), max(1, round(w * f))
        image = np.asarray(Image.fromarray(image).resize((sw, sh), Image.BILINEAR))
        boxes = boxes * np.array([sw / w, sh / h, sw / w, sh / h], boxes.dtype)
        h, w = sh, sw
    masks = paste_masks(pred["mask_probs"][shown], boxes, (h, w), mode=paste)   # (shown, h, w) bool
    draw_instances(image, boxes, pred["labels"][shown], pred["scores"][shown], masks, class_names,
                   title=title, save_path=save_path)


def run_predict(inputs, checkpoint, out, score_thresh=0.5) -> dict:
    """Predict every readable image of ``inputs`` (files and folders); write overlays and COCO results.

    Writes into ``out``:

    * ``<stem>_pred.png`` per image: its detections with ``score >= score_thresh`` drawn (images
      larger than :data:`OVERLAY_MAX_SIDE` are drawn downscaled to it);
    * ``results.json``: every detection (score > the model's ``score_thresh``) in COCO's result format,
      a list of ``{"image_id", "category_id", "score", "bbox": [x, y, w, h], "segmentation": RLE}``,
      which ``COCO.loadRes`` reads as it is;
    * ``images.json``: ``{"images": [{"id", "file_name", "path", "width", "height"}], "skipped":
      [{"file_name", "path", "reason"}]}``: which image each ``image_id`` is (1, 2, ... in the order the
      images were read) and which files could not be read, and why.

    A file that cannot be decoded is skipped with a line on stderr, and the rest are predicted.
    Returns ``{"results": path, "images": path, "predicted": n, "skipped": [...]}``.
    """
    model, meta = load_model(checkpoint)
    class_names = (meta.get("extra") or {}).get("class_names")
    mapping = _labels_to_cat_ids(meta) or {k: k for k in range(1, model.config.num_classes + 1)}
    files = _image_files(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, images, skipped = [], [], []
    for path in files:
        try:
            image = read_image_file(path)
        except ValueError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            skipped.append({"file_name": path.name, "path": str(path), "reason": reason})
            print(f"mrcnn-np predict: skipped {path}: {reason}", file=sys.stderr)
            continue
        h, w = image.shape[:2]
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": path.name, "path": str(path), "width": w, "height": h})
        pred = predict_image(model, image)
        rles = masks_to_rles(pred["mask_probs"], pred["boxes"], (h, w), mode=model.config.paste)
        bbox, segm = predictions_to_coco_results({image_id: {**pred, "segmentation": rles}}, mapping)
        # One entry per detection with both keys (detectron2 writes the same): loadRes then takes
        # each entry's area from its box, for the small/medium/large split.
        results += [{**b, "segmentation": sg["segmentation"]} for b, sg in zip(bbox, segm)]
        _draw_overlay(image, pred, score_thresh, class_names, path.name, out / f"{path.stem}_pred.png",
                      paste=model.config.paste)
        del image
    atomic_write_json(out / "results.json", results)
    atomic_write_json(out / "images.json", {"images": images, "skipped": skipped}, indent=1)
    return {"results": out / "results.json", "images": out / "images.json", "predicted": len(images),
            "skipped": skipped}


def run_demo(data="data/shapes", out="runs/demo", *, n_train=1000, n_val=200, steps=2500,
             batch_size=4, max_minutes=11.0, seed=0, progress=True) -> dict:
    """Shapes (generated if missing) -> train the ``demo`` config -> evaluate -> pictures.

    Writes into ``out``: ``checkpoint.npz``, ``log.jsonl``, ``loss_curve.png``, ``metrics.json``,
    ``predictions.png`` (a grid of validation images with their predictions) and ``summary.json``.
    """
    from .data.shapes import generate_shapes
    from .visualize import draw_prediction_grid
    t_start = time.perf_counter()
    data, out = Path(data), Path(out)
    if not all((data / s / "annotations.json").is_file() for s in ("train", "val")):
        print(f"demo: writing the shapes dataset to {data} ({n_train} train, {n_val} val images)")
        generate_shapes(data, n_train, n_val, seed=seed)
    print(f"demo: training the 'demo' config for {steps} steps (at most {max_minutes} min) -> {out}")
    summary = run_train("demo", data, out, steps=steps, batch_size=batch_size, max_minutes=max_minutes,
                        seed=seed, progress=progress)
    model, meta = load_model(out / "checkpoint.npz")
    val = open_split(data, "val")
    t_eval = time.perf_counter()
    preds = predict_dataset(model, val)
    metrics = evaluate_coco(preds, val, out / "metrics.json")
    eval_seconds = time.perf_counter() - t_eval
    shown = [preds[val.image_ids[i]] for i in range(min(12, len(val)))]
    draw_prediction_grid([val[i][0] for i in range(len(shown))],
                         [{**p, "masks": decode_masks(p)} if len(p["boxes"]) else p for p in shown],
                         meta["extra"]["class_names"], save_path=out / "predictions.png")
    report = {"metrics": metrics, "train_steps": summary["step"], "stopped": summary["stopped"],
              "sec_per_step_median": summary["sec_per_step_median"], "eval_seconds": eval_seconds,
              "peak_rss_mib": peak_rss_mib(), "total_seconds": time.perf_counter() - t_start,
              "files": {name: str(out / name) for name in ("checkpoint.npz", "log.jsonl", "loss_curve.png",
                                                           "metrics.json", "predictions.png",
                                                           "summary.json")}}
    atomic_write_json(out / "summary.json", report, indent=1)
    return report
