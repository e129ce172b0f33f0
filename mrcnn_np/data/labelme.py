"""A folder of images annotated with polygons (LabelMe's JSON, one file beside each image) -> the COCO
folder ``mrcnn-np train --data`` reads: ``out/train`` and ``out/val``, each ``images/`` +
``annotations.json``.

LabelMe (and tools that export its format) writes, beside ``photo.jpg``, a ``photo.json``::

    {"imagePath": "photo.jpg", "imageHeight": 480, "imageWidth": 640,
     "shapes": [{"label": "balloon", "points": [[x, y], ...], "shape_type": "polygon",
                 "group_id": null}, ...]}

What the conversion does, field by field (docs/data.md explains why each matters):

* a ``polygon`` shape (at least 3 points) becomes one COCO polygon ``[x1, y1, x2, y2, ...]``; a
  ``rectangle`` (2 corners) becomes the polygon of its 4 corners; other shape types (``circle``,
  ``line``, ``point``) carry no area and are an error naming the file and the shape;
* shapes with the same ``label`` and the same non-null ``group_id`` are **one instance** (an object
  cut in two by an occluder): one annotation with several polygons;
* ``label`` names the category; categories get ids ``1..K`` in sorted name order (or in the order
  ``categories=`` gives), written to ``categories`` in both splits;
* ``bbox`` is the polygons' extent ``[x, y, w, h]``, ``area`` their shoelace area, ``iscrowd`` 0;
* images are split into train and val by a seeded shuffle (``val_fraction``; at least one image in
  each split when there are two or more) and copied into each split's ``images/``.

Nothing is written unless every file converts: the splits are built in a temporary folder beside
``out`` and renamed into place.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .coco import CocoFormatError

__all__ = ["labelme_to_coco"]


def _fail(path, message) -> CocoFormatError:
    return CocoFormatError(f"{path}: {message}")


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise _fail(path, "expected a LabelMe annotation: an object with a 'shapes' list")
    return doc


def _image_of(path: Path, doc: dict) -> Path:
    """The image a LabelMe JSON annotates: its ``imagePath`` (relative to the JSON), else the file
    with the JSON's stem and an image suffix."""
    if doc.get("imagePath"):
        candidate = path.parent / Path(str(doc["imagePath"]).replace("\\", "/"))
        if candidate.is_file():
            return candidate
    for suffix in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"):
        for name in (path.stem + suffix, path.stem + suffix.upper()):
            if (path.parent / name).is_file():
                return path.parent / name
    raise _fail(path, f"its image {doc.get('imagePath') or path.stem + '.*'} was not found beside it")


def _polygon(path, k, shape) -> list[float]:
    kind = shape.get("shape_type") or "polygon"
    try:
        points = np.asarray(shape.get("points"), dtype=np.float64)
    except (TypeError, ValueError):
        points = np.zeros((0,))
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise _fail(path, f"shape {k} ({shape.get('label')!r}): expected 'points' as [[x, y], ...]")
    if kind == "rectangle" and len(points) == 2:
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    elif kind != "polygon":
        raise _fail(path, f"shape {k} ({shape.get('label')!r}) is a {kind!r}; only polygons and "
                          f"rectangles outline an instance's mask")
    if len(points) < 3:
        raise _fail(path, f"shape {k} ({shape.get('label')!r}): a polygon needs at least 3 points, "
                          f"got {len(points)}")
    return [round(float(v), 2) for v in points.ravel()]


def _area(polygon) -> float:
    """The shoelace area of ``[x1, y1, x2, y2, ...]``."""
    x, y = np.asarray(polygon[0::2]), np.asarray(polygon[1::2])
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _instances(path, doc) -> list[tuple[str, list]]:
    """``[(label, [polygon, ...]), ...]``: shapes grouped by ``(label, group_id)``."""
    grouped, order = {}, []
    for k, shape in enumerate(doc["shapes"]):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str) or not shape["label"]:
            raise _fail(path, f"shape {k}: expected a non-empty 'label'")
        key = (shape["label"], shape.get("group_id")) if shape.get("group_id") is not None else k
        if key not in grouped:
            grouped[key] = (shape["label"], [])
            order.append(key)
        grouped[key][1].append(_polygon(path, k, shape))
    return [grouped[key] for key in order]


def labelme_to_coco(src, out, val_fraction: float = 0.2, seed: int = 0, categories=None) -> dict:
    """Convert every ``*.json`` LabelMe file in folder ``src`` (with its image) into COCO splits in
    ``out`` (module docstring). Returns ``{"train": n_images, "val": n_images, "categories": names,
    "instances": n}``. Raises :class:`~mrcnn_np.data.coco.CocoFormatError` naming the file on bad
    input, ``FileExistsError`` if ``out`` exists and is not empty; nothing is written then."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder (expected images with LabelMe .json files)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; expected a new folder")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction!r}")
    files = sorted(src.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{src}: no LabelMe .json files found")
    records = []
    for path in files:
        doc = _read(path)
        image = _image_of(path, doc)
        try:
            with Image.open(image) as pil:
                w, h = pil.size
        except (UnidentifiedImageError, OSError) as exc:
            raise _fail(image, f"not a readable image ({exc})") from None
        if (doc.get("imageWidth"), doc.get("imageHeight")) not in ((None, None), (w, h)):
            raise _fail(path, f"imageWidth x imageHeight {doc.get('imageWidth')} x {doc.get('imageHeight')} "
                              f"disagree with {image.name}, {w} x {h}")
        records.append((image, w, h, _instances(path, doc)))

    names = sorted({label for *_, inst in records for label, _ in inst})
    if categories is not None:
        unknown = sorted(set(names) - set(categories))
        if unknown:
            raise ValueError(f"categories: labels {unknown} occur in {src} but are not in {list(categories)}")
        names = list(categories)
    cat_id = {name: k for k, name in enumerate(names, 1)}

    order = np.random.default_rng(seed).permutation(len(records))
    n_val = int(round(val_fraction * len(records)))
    if val_fraction > 0 and len(records) >= 2:
        n_val = min(max(n_val, 1), len(records) - 1)
    splits = {"val": sorted(order[:n_val]), "train": sorted(order[n_val:])}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report = {"categories": names, "instances": 0}
        for split, indices in splits.items():
            if not indices and split == "val":
                continue                                    # val_fraction 0: a train split only
            (staging / split / "images").mkdir(parents=True)
            images, anns = [], []
            for image_id, i in enumerate(indices, 1):
                image, w, h, inst = records[i]
                name = f"{image_id:06d}_{image.name}"       # unique even if two folders shared a name
                shutil.copy2(image, staging / split / "images" / name)
                images.append({"id": image_id, "file_name": name, "width": w, "height": h})
                for label, polygons in inst:
                    xy = np.concatenate([np.reshape(p, (-1, 2)) for p in polygons])
                    (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
                    anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id[label],
                                 "segmentation": polygons, "iscrowd": 0,
                                 "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                 "area": sum(_area(p) for p in polygons)})
            coco = {"images": images, "annotations": anns,
                    "categories": [{"id": cat_id[n], "name": n} for n in names]}
            (staging / split / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
            report[split] = len(images)
            report["instances"] += len(anns)
        report.setdefault("val", 0)
        if out.exists():
            out.rmdir()                                     # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report
