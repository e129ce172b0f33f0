"""What the ``train``, ``eval``, ``predict`` and ``demo`` commands do, as plain functions.

A dataset folder is either one split (``images/`` + ``annotations.json``) or a root holding
``train/`` and ``val/`` splits of that form (what ``mrcnn-np shapes`` writes). Checkpoints carry the
config and the dataset's class names and category ids, so ``eval`` and ``predict`` need nothing else.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write_json
from .checkpoint import load_checkpoint, read_metadata
from .data import CocoDataset, iterate_batches, predictions_to_original, resize_and_pad
from .data.coco import image_to_float_chw
from .evaluate import evaluate_coco, predictions_to_coco_results
from .model import ModelConfig, build_model, get_config
from .train import peak_rss_mib, train

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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


def run_train(config: str, data, out, *, steps=None, max_minutes=None, batch_size=4, lr=0.02,
              warmup_steps=200, resume=False, seed=0, progress=True, num_images=None,
              overrides=None) -> dict:
    """``overrides``: config fields set on top of the preset, e.g. ``{"mask_loss": "softmax"}``."""
    ds = open_split(data, "train")
    cfg = get_config(config, **{**(overrides or {}), "num_classes": ds.num_classes})
    model = build_model(cfg, seed=seed)
    steps = steps if steps is not None else 10 * max(1, len(ds) // batch_size)
    extra = {"class_names": list(ds.class_names),
             "label_to_cat_id": {str(k): int(v) for k, v in ds.label_to_cat_id.items()}}
    summary = train(model, ds, out, steps=steps, batch_size=batch_size, lr=lr,
                    warmup_steps=min(warmup_steps, steps // 4), checkpoint_every=250, log_every=10,
                    max_minutes=max_minutes, resume=resume, seed=seed, progress=progress,
                    extra=extra)
    return summary


def predict_dataset(model, ds, batch_size=8) -> dict:
    """{image_id: prediction at the original image size} for every image of ``ds``."""
    preds = {}
    for images, targets in iterate_batches(ds, batch_size, model.config.image_size, shuffle=False):
        for result, target in zip(model.predict(images), targets):
            preds[target["image_id"]] = predictions_to_original(result, target)
    return preds


def run_eval(checkpoint, data, out) -> dict:
    model, meta = load_model(checkpoint)
    ds = open_split(data, "val")
    if ds.num_classes != model.config.num_classes:
        raise ValueError(f"--data {data}: {ds.num_classes} classes, but {checkpoint} was trained "
                         f"for {model.config.num_classes}")
    return evaluate_coco(predict_dataset(model, ds), ds, out, per_class=True)


def _image_files(inputs) -> list[Path]:
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))} "
                         f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def run_predict(inputs, checkpoint, out, score_thresh=0.5) -> Path:
    """Overlay PNGs and a COCO results JSON (``results.json``, image ids 1..n in file order)."""
    from .visualize import draw_instances
    model, meta = load_model(checkpoint)
    class_names = (meta.get("extra") or {}).get("class_names")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preds, names = {}, {}
    for image_id, path in enumerate(_image_files(inputs), start=1):
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        h, w = image.shape[:2]
        empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                 "masks": np.zeros((0, h, w), np.uint8)}
        resized, meta_i = resize_and_pad(image, empty, model.config.image_size)  # other sizes resized
        pred = predictions_to_original(model.predict(image_to_float_chw(resized)[None])[0], meta_i)
        preds[image_id], names[image_id] = pred, path.name
        draw_instances(image, pred["boxes"], pred["labels"], pred["scores"], pred["masks"], class_names,
                       score_thresh=score_thresh, title=path.name,
                       save_path=out / f"{path.stem}_pred.png")
    mapping = _labels_to_cat_ids(meta) or {k: k for k in range(1, model.config.num_classes + 1)}
    bbox, segm = predictions_to_coco_results(preds, mapping)
    atomic_write_json(out / "results.json",
                      {"images": [{"id": i, "file_name": n} for i, n in names.items()],
                       "bbox": bbox, "segm": segm})
    return out / "results.json"


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
    shown = list(range(min(12, len(val))))
    draw_prediction_grid([val[i][0] for i in shown], [preds[val.get_target(i)["image_id"]] for i in shown],
                         meta["extra"]["class_names"], save_path=out / "predictions.png")
    report = {"metrics": metrics, "train_steps": summary["step"], "stopped": summary["stopped"],
              "sec_per_step_median": summary["sec_per_step_median"], "eval_seconds": eval_seconds,
              "peak_rss_mib": peak_rss_mib(), "total_seconds": time.perf_counter() - t_start}
    atomic_write_json(out / "summary.json", report, indent=1)
    return report
