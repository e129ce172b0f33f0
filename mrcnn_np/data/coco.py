"""Reading COCO instance-segmentation datasets (and writing files safely).

COCO's *instances* format is what CVAT, Label Studio, Roboflow and the labelme converters export, so
one reader serves both the toy shapes dataset (:mod:`mrcnn_np.data.shapes`) and a user's own data::

    {"images":      [{"id": 7, "file_name": "a.png", "width": W, "height": H}, ...],
     "categories":  [{"id": 3, "name": "cat"}, ...],
     "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [x, y, w, h],
                      "segmentation": ..., "iscrowd": 0, "area": ...}, ...]}

A ``segmentation`` is one of three encodings, all handled here with ``pycocotools.mask`` (the same code
COCO's evaluation uses to build its ground truth, so training targets and evaluation agree pixel for
pixel):

* polygons, ``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates (pixel ``(px, py)`` covers
  ``[px, px+1) x [py, py+1)``; a pixel belongs to the mask when its centre is inside, so the polygon
  of the rectangle ``[2, 8) x [3, 7)`` covers columns 2..7 and rows 3..6);
* run-length encoding (RLE) with *uncompressed* counts, ``{"size": [H, W], "counts": [5, 3, ...]}``,
  runs of 0s and 1s alternating, starting with 0s, over the image read **column by column**;
* RLE with *compressed* counts, the same runs packed into an ASCII string.

Conventions of :class:`CocoDataset`:

* Category ids (any integers, with gaps) are mapped to contiguous labels ``1..K`` in increasing id order;
  label ``0`` is the background. ``cat_id_to_label`` / ``label_to_cat_id`` convert both ways and
  ``class_names[label]`` names a label (``class_names[0] == "background"``).
* ``iscrowd=1`` annotations (a region of many objects, one mask for all) are left out of the training
  targets, as in COCO's own training recipes; :meth:`CocoDataset.crowd_target` still returns them.
* Boxes are COCO's ``[x, y, w, h]`` turned into ``[x1, y1, x2, y2] = [x, y, x + w, y + h]``, clipped to
  the image; an annotation whose clipped box has no width or no height is dropped (it cannot be
  learned from, and torchvision's reference recipe drops it too).
* Images are returned upright, converted to RGB: ``uint8 (H, W, 3)``. A JPEG's EXIF ``Orientation`` tag
  (a phone stores the sensor's pixels and a tag saying how to turn them) is applied, as every image
  viewer and labelling tool does before anyone draws a polygon, so masks and pixels agree; the JSON's
  ``width``/``height`` are those of the upright image. Grayscale is replicated to three
  channels; RGBA loses its alpha channel. :func:`image_to_float_chw` gives the model's ``float32
  (3, H, W)`` in ``[0, 1]``.
* An image with no annotations is a valid *negative* image: empty boxes ``(0, 4)``, labels ``(0,)``,
  masks ``(0, H, W)``.

Bad input raises :class:`CocoFormatError` (a ``ValueError``) or :class:`ImageNotFoundError` (a
``FileNotFoundError``) naming the file and the offending id, when the dataset is opened (everything
that can be checked without decoding pixels is checked then, so a training run does not fail an hour
in) or, for the pixel-level checks (an unreadable image, a size that disagrees with the JSON), when the
image is loaded.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

__all__ = [
    "CocoFormatError", "ImageNotFoundError", "CocoDataset", "category_mapping", "read_coco_json",
    "segmentation_to_mask", "mask_to_rle", "decode_rle", "image_to_float_chw",
]


class CocoFormatError(ValueError):
    """A COCO file that cannot be used: malformed JSON, a dangling reference, no images, a bad mask."""


class ImageNotFoundError(FileNotFoundError):
    """An image listed in the COCO JSON is not on disk."""


# ----------------------------------------------------------------------------------------------------
# Writing files so that a reader never sees half of one.
# ----------------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------------
# Masks: COCO segmentation <-> binary (H, W) arrays.
# ----------------------------------------------------------------------------------------------------

def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (``counts`` bytes or str) -> binary mask ``uint8 (H, W)``."""
    with warnings.catch_warnings():
        # pycocotools' Cython code trips NumPy 2's ``__array__(copy=...)`` deprecation; harmless.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary mask ``(H, W)`` -> COCO compressed RLE ``{"size": [H, W], "counts": str}``, ready for JSON
    (``pycocotools`` returns ``counts`` as bytes; JSON needs a string)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _where(source, ann_id) -> str:
    return f"{source}: annotation id {ann_id}"


def segmentation_to_mask(segmentation, height: int, width: int, *, source: str = "<segmentation>",
                         ann_id=None, bbox=None) -> np.ndarray:
    """One annotation's ``segmentation`` -> binary mask ``uint8 (H, W)``.

    Accepts polygons (list of flat ``[x, y, ...]`` lists), uncompressed RLE (``counts`` a list of ints)
    and compressed RLE (``counts`` a str or bytes). Polygons with fewer than three points enclose no
    pixel and are skipped. ``segmentation`` ``None`` or ``[]`` (a detection-only annotation) gives the
    box ``bbox = [x, y, w, h]`` as mask when one is given (what COCO does for box-only results), else an
    empty mask. Raises :class:`CocoFormatError` naming ``source`` and ``ann_id`` on a malformed value or
    an RLE whose size is not ``[H, W]``.
    """
    where = _where(source, ann_id)
    if segmentation is None or (isinstance(segmentation, list) and len(segmentation) == 0):
        mask = np.zeros((height, width), np.uint8)
        if bbox is not None:
            x, y, w, h = (float(v) for v in bbox)
            # NOTE: pixel centres inside [x, x+w) x [y, y+h), the same rule as the polygons.
            cols = (np.arange(width) + 0.5 >= x) & (np.arange(width) + 0.5 < x + w)
            rows = (np.arange(height) + 0.5 >= y) & (np.arange(height) + 0.5 < y + h)
            mask[np.ix_(rows, cols)] = 1
        return mask

    if isinstance(segmentation, list):                                    # polygons
        polys = []
        for k, poly in enumerate(segmentation):
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                raise CocoFormatError(f"{where}: polygon {k} is not a flat list of numbers "
                                      f"[x1, y1, x2, y2, ...]")
            if len(poly) % 2:
                raise CocoFormatError(f"{where}: polygon {k} has an odd number of coordinates "
                                      f"({len(poly)}); expected x, y pairs")
            # NOTE: pycocotools reads a list whose first polygon has exactly 4 numbers as a *box*; a
            # polygon needs 3 points anyway, so shorter ones (no area) are skipped before it sees them.
            if len(poly) >= 6:
                polys.append([float(v) for v in poly])
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        return decode_rle(rle)

    if isinstance(segmentation, dict):                                    # RLE
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or [int(size[0]), int(size[1])] != [height, width]):
            raise CocoFormatError(f"{where}: RLE size {size!r} does not match the image's "
                                  f"[height, width] = [{height}, {width}]")
        if isinstance(counts, list):                                      # uncompressed
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise CocoFormatError(f"{where}: RLE counts must be non-negative integers")
            if sum(counts) != height * width:
                raise CocoFormatError(f"{where}: RLE counts sum to {sum(counts)}, expected "
                                      f"height * width = {height * width}")
            rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        elif isinstance(counts, (str, bytes)):                            # compressed
            rle = {"size": [height, width],
                   "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise CocoFormatError(f"{where}: RLE counts must be a list of ints or a string, got "
                                  f"{type(counts).__name__}")
        try:
            mask = decode_rle(rle)
        except Exception as exc:                     # pycocotools raises bare errors on garbage
            raise CocoFormatError(f"{where}: cannot decode RLE counts ({exc})") from exc
        return mask

    raise CocoFormatError(f"{where}: segmentation must be a list of polygons or an RLE dict, got "
                          f"{type(segmentation).__name__}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ----------------------------------------------------------------------------------------------------
# The JSON: read, check every reference, map categories.
# ----------------------------------------------------------------------------------------------------

def read_coco_json(annotation_json) -> dict:
    """Read and check a COCO instances JSON; returns the parsed dict.

    Checks (each failure a :class:`CocoFormatError` naming the file and the id): the file parses; it has
    ``images`` and ``categories`` lists (``annotations`` may be absent: no objects); at least one image;
    every image has an int ``id``, a ``file_name`` and positive ``width``/``height``; ids are unique
    within images, categories and annotations; every annotation names a known ``image_id`` and
    ``category_id`` and has a 4-number ``bbox`` when it has no segmentation. A missing file raises
    ``FileNotFoundError``.
    """
    path = Path(annotation_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8-sig"))     # -sig: tolerate a BOM
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CocoFormatError(f"{path}: malformed JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: expected a JSON object with 'images', 'annotations' and "
                              f"'categories', got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{path}: missing or non-list '{key}'")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise CocoFormatError(f"{path}: 'annotations' must be a list")
    if not data["images"]:
        raise CocoFormatError(f"{path}: the dataset has no images")

    image_ids = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_id(img.get("id")):
            raise CocoFormatError(f"{path}: images[{k}] has no integer 'id'")
        iid = img["id"]
        if iid in image_ids:
            raise CocoFormatError(f"{path}: image id {iid} appears twice")
        image_ids.add(iid)
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise CocoFormatError(f"{path}: image id {iid} has no 'file_name'")
        for key in ("width", "height"):
            if not _is_id(img.get(key)) or img[key] <= 0:
                raise CocoFormatError(f"{path}: image id {iid} ({img['file_name']}) has no positive "
                                      f"integer '{key}'")

    cat_ids = set()
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")):
            raise CocoFormatError(f"{path}: categories[{k}] has no integer 'id'")
        if cat["id"] in cat_ids:
            raise CocoFormatError(f"{path}: category id {cat['id']} appears twice")
        cat_ids.add(cat["id"])

    ann_ids = set()
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict) or not _is_id(ann.get("id")):
            raise CocoFormatError(f"{path}: annotations[{k}] has no integer 'id'")
        aid = ann["id"]
        if aid in ann_ids:
            raise CocoFormatError(f"{path}: annotation id {aid} appears twice")
        ann_ids.add(aid)
        if ann.get("image_id") not in image_ids:
            raise CocoFormatError(f"{path}: annotation id {aid} references unknown image id "
                                  f"{ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise CocoFormatError(f"{path}: annotation id {aid} references unknown category id "
                                  f"{ann.get('category_id')!r}")
        bbox = ann.get("bbox")
        if bbox is not None and (not isinstance(bbox, list) or len(bbox) != 4
                                 or not all(_is_number(v) for v in bbox)):
            raise CocoFormatError(f"{path}: annotation id {aid} has a malformed bbox {bbox!r}; "
                                  f"expected [x, y, width, height]")
        if bbox is None and not ann.get("segmentation"):
            raise CocoFormatError(f"{path}: annotation id {aid} has neither a bbox nor a segmentation")
    data["annotations"] = anns
    return data


def category_mapping(categories) -> tuple[dict, dict, list]:
    """COCO ``categories`` -> ``(cat_id_to_label, label_to_cat_id, class_names)``.

    Labels are ``1..K`` in increasing category-id order (so the mapping does not depend on the order of
    the JSON list); ``class_names`` has length ``K + 1`` with ``class_names[0] == "background"``.
    Evaluation uses the same function to map predicted labels back to the dataset's ids.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    cat_id_to_label = {c["id"]: k + 1 for k, c in enumerate(cats)}
    label_to_cat_id = {k + 1: c["id"] for k, c in enumerate(cats)}
    class_names = ["background"] + [str(c.get("name", c["id"])) for c in cats]
    return cat_id_to_label, label_to_cat_id, class_names


def image_to_float_chw(image: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)`` -> ``float32 (3, H, W)`` in ``[0, 1]`` (the layout the model takes)."""
    # (H, W, 3) -> (3, H, W)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


# ----------------------------------------------------------------------------------------------------
# The dataset.
# ----------------------------------------------------------------------------------------------------

class CocoDataset:
    """A COCO instances dataset on disk: ``len(ds)`` images, ``ds[i] -> (image, target)``.

    ``image`` is ``uint8 (H, W, 3)`` RGB, as stored. ``target`` is a dict::

        boxes     float32 (M, 4)     x1, y1, x2, y2 in pixels of this image
        labels    int64   (M,)       contiguous labels 1..K
        masks     uint8   (M, H, W)  binary instance masks
        image_id  int                the COCO image id
        orig_size (H, W)             the image's size (kept through resizing; see transforms)

    with ``M`` the number of non-crowd annotations (0 for a negative image). Images are in increasing
    image-id order. Image files are looked up at ``images_dir / file_name`` and, failing that (tools
    differ on whether ``file_name`` includes a folder), at ``images_dir / basename(file_name)``.

    ``label_space``: ``(label_to_cat_id, class_names)`` of a model to train in another label space
    than the dataset's own, e.g. an imported COCO model whose label is the category id (fine-tuning
    COCO -> COCO keeps its heads); every category of the dataset must be in it.
    """

    def __init__(self, images_dir, annotation_json, label_space=None):
        self.images_dir = Path(images_dir)
        self.annotation_json = Path(annotation_json)
        data = read_coco_json(self.annotation_json)
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_id_to_label, self.label_to_cat_id, self.class_names = category_mapping(self.categories)
        if label_space is not None:
            self.use_label_space(*label_space)
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.image_ids = [im["id"] for im in self.images]
        self._index = {iid: k for k, iid in enumerate(self.image_ids)}
        self._anns = {iid: [] for iid in self.image_ids}
        for ann in data["annotations"]:
            self._anns[ann["image_id"]].append(ann)
        self._paths = [self._find_image(im) for im in self.images]

    def use_label_space(self, label_to_cat_id: dict, class_names) -> None:
        """Label the annotations as a model with ``label_to_cat_id`` (``{label: category id}``) and
        ``class_names`` does (see ``label_space`` in the class docstring)."""
        cat_id_to_label = {int(c): int(k) for k, c in label_to_cat_id.items()}
        missing = [c["id"] for c in self.categories if c["id"] not in cat_id_to_label]
        if missing:
            raise CocoFormatError(f"{self.annotation_json}: category ids {missing[:10]} are not in "
                                  f"the label space given ({len(cat_id_to_label)} categories)")
        self.cat_id_to_label = cat_id_to_label
        self.label_to_cat_id = {int(k): int(c) for k, c in label_to_cat_id.items()}
        self.class_names = list(class_names)

    @property
    def num_classes(self) -> int:
        """``K``, the number of object classes (labels run 1..K; 0 is the background)."""
        return len(self.class_names) - 1

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"CocoDataset({str(self.annotation_json)!r}: {len(self)} images, "
                f"{sum(map(len, self._anns.values()))} annotations, {self.num_classes} classes)")

    def _find_image(self, im) -> Path:
        name = im["file_name"].replace("\\", "/")
        for cand in (self.images_dir / name, self.images_dir / os.path.basename(name)):
            if cand.is_file():
                return cand
        raise ImageNotFoundError(f"{self.annotation_json}: image id {im['id']}: file "
                                 f"{self.images_dir / name} not found")

    def index_of(self, image_id: int) -> int:
        """Position in the dataset of the image with COCO id ``image_id``."""
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(f"{self.annotation_json}: no image with id {image_id!r}") from None

    def image_path(self, i: int) -> Path:
        return self._paths[i]

    def annotations(self, i: int, include_crowd: bool = True) -> list[dict]:
        """The raw COCO annotation dicts of image ``i`` (crowd ones too unless ``include_crowd=False``)."""
        anns = self._anns[self.image_ids[i]]
        return list(anns) if include_crowd else [a for a in anns if not a.get("iscrowd", 0)]

    def load_image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``uint8 (H, W, 3)`` RGB. Raises :class:`CocoFormatError` if the file cannot be
        decoded or its size differs from the JSON's ``width``/``height``."""
        im, path = self.images[i], self._paths[i]
        try:
            with Image.open(path) as pil:
                # NOTE: the EXIF orientation first (the annotations were drawn on the upright image);
                # then "L", "P", "RGBA", "I;16" ... all become 3-channel RGB; alpha is dropped.
                rgb = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
        except FileNotFoundError:
            raise ImageNotFoundError(f"{self.annotation_json}: image id {im['id']}: file {path} "
                                     f"not found") from None
        except OSError as exc:
            raise CocoFormatError(f"{self.annotation_json}: image id {im['id']}: cannot read "
                                  f"{path} ({exc})") from exc
        if rgb.shape[:2] != (im["height"], im["width"]):
            raise CocoFormatError(f"{self.annotation_json}: image id {im['id']}: {path} is "
                                  f"{rgb.shape[1]}x{rgb.shape[0]} (width x height, upright after its "
                                  f"EXIF orientation) but the JSON says {im['width']}x{im['height']}")
        return rgb

    def _build(self, anns, height, width) -> dict:
        boxes, labels, masks = [], [], []
        for ann in anns:
            mask = segmentation_to_mask(ann.get("segmentation"), height, width,
                                        source=str(self.annotation_json), ann_id=ann["id"],
                                        bbox=ann.get("bbox"))
            if ann.get("bbox") is not None:
                x, y, w, h = (float(v) for v in ann["bbox"])
                box = [x, y, x + w, y + h]
            else:                                    # no bbox: tight bounds of the mask
                ys, xs = np.nonzero(mask)
                box = ([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
            x1, x2 = np.clip([box[0], box[2]], 0, width)
            y1, y2 = np.clip([box[1], box[3]], 0, height)
            if x2 <= x1 or y2 <= y1:                 # nothing left to learn from
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(self.cat_id_to_label[ann["category_id"]])
            masks.append(mask)
        return {
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64),
            "masks": (np.stack(masks).astype(np.uint8) if masks
                      else np.zeros((0, height, width), np.uint8)),
        }

    def get_target(self, i: int) -> dict:
        """The training target of image ``i`` (non-crowd annotations only), without loading pixels."""
        im = self.images[i]
        t = self._build(self.annotations(i, include_crowd=False), im["height"], im["width"])
        t["image_id"] = im["id"]
        t["orig_size"] = (im["height"], im["width"])
        return t

    def crowd_target(self, i: int) -> dict:
        """The ``iscrowd=1`` annotations of image ``i`` in the same form as :meth:`get_target`."""
        im = self.images[i]
        crowd = [a for a in self.annotations(i) if a.get("iscrowd", 0)]
        t = self._build(crowd, im["height"], im["width"])
        t["image_id"] = im["id"]
        t["orig_size"] = (im["height"], im["width"])
        return t

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i = i % len(self)
        return self.load_image(i), self.get_target(i)
