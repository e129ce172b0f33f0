"""A toy instance-segmentation dataset that needs no download: squares, circles and triangles.

Each image is ``image_size x image_size`` (128 by default; or ``width x height`` for non-square
images) on a random background colour, with 1 to 4 shapes, each of a random class, colour, size and position. Shapes may overlap: they are drawn one after
another, a later shape hides the earlier ones where they overlap, and an instance's mask is what stays
*visible*. The dataset is written in COCO's instances format, the same format a labelling tool exports,
so the learner's first dataset and their own go through the same loader (:mod:`mrcnn_np.data.coco`).

Geometry, exact by construction. Pixel ``(px, py)`` is the unit square whose centre is
``(px + 0.5, py + 0.5)``; a shape owns a pixel when that centre is inside the shape (no anti-aliasing).
With shape centre ``(cx, cy)`` and size ``s``::

    square    |x - cx| and |y - cy| in [-s, s)                       (side 2s, axis-aligned)
    circle    (x - cx)^2 + (y - cy)^2 < s^2                          (radius s)
    triangle  equilateral, pointing up, circumradius s: vertices (cx, cy - s), (cx -+ s*sqrt(3)/2, cy + s/2)

An *owner map* ``(H, W)`` holds, per pixel, the index of the instance drawn last there (-1 for the
background); instance ``k``'s mask is ``owner == k``, and the image is painted from the owner map, so
every pixel has exactly one owner and the masks match the PNG exactly. A new shape is drawn only if it
and every instance already in the image keep at least ``min_visible_area`` visible pixels and
``min_visible_fraction`` of their own area; otherwise it is skipped and the image has fewer instances
(never fewer than one).

Layout on disk (``generate_shapes(out_dir, ...)``)::

    out_dir/train/images/000001.png ...   RGB PNGs, image ids 1..n_train (file name = id, 6 digits)
    out_dir/train/annotations.json        COCO instances; masks as compressed RLE
    out_dir/val/images/000001.png ...     the same for the validation split
    out_dir/val/annotations.json

Writing into an existing folder replaces the splits it writes: a split's old ``annotations.json`` is
removed first (so a run cut short never leaves a JSON that lists images of another run), and after the
new images are written, the old PNGs the new JSON does not list (``000041.png`` ... when fewer images are
asked for) are deleted. Only files the generator itself names (``<digits>.png`` and the temporary files
of its atomic writes) are ever deleted; an ``images/`` folder that holds anything else is refused before
a file is written, since it is not a shapes split.

Categories: ``1 square``, ``2 circle``, ``3 triangle``. Every random draw of image ``i`` of a split
comes from its own generator seeded with ``(seed, split, i)``, so the output is a function of the seed
alone (the same seed gives byte-identical JSON and PNGs), and image 5 of ``train`` does not change when
more images are asked for.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_png
from .coco import mask_to_rle

__all__ = ["CATEGORIES", "shape_mask", "random_shapes_image", "generate_shapes"]

CATEGORIES = [
    {"id": 1, "name": "square", "supercategory": "shape"},
    {"id": 2, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
_KINDS = {c["id"]: c["name"] for c in CATEGORIES}
_SPLIT_CODE = {"train": 0, "val": 1}
_SQRT3_2 = np.sqrt(3.0) / 2.0


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (tuple, list)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


def shape_mask(kind: str, cx: float, cy: float, s: float, image_size) -> np.ndarray:
    """Boolean mask ``(H, W)`` of the pixels whose centres lie inside the shape; ``image_size`` is
    ``S`` (square, ``H = W = S``) or ``(H, W)``.

    ``kind`` is ``"square"``, ``"circle"`` or ``"triangle"``; ``(cx, cy)`` the centre and ``s`` the size
    (half-side, radius, circumradius) in pixels. See the module docstring for the exact rules.
    """
    H, W = _hw(image_size)
    x = np.arange(W)[None, :] + 0.5                     # pixel-centre coordinates, (1, W)
    y = np.arange(H)[:, None] + 0.5                     # (H, 1); broadcast to (H, W)
    if kind == "square":
        return ((x >= cx - s) & (x < cx + s)) & ((y >= cy - s) & (y < cy + s))
    if kind == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 < s * s
    if kind == "triangle":
        # Inside = on the inner side of all three edges (vertices listed counter-clockwise on screen).
        v = [(cx, cy - s), (cx - s * _SQRT3_2, cy + s / 2), (cx + s * _SQRT3_2, cy + s / 2)]
        inside = np.ones((H, W), bool)
        for (ax, ay), (bx, by) in zip(v, v[1:] + v[:1]):
            # cross((b - a), (p - a)) <= 0 keeps points on the triangle's side of edge a -> b
            inside &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) <= 0
        return inside
    raise ValueError(f"kind: expected 'square', 'circle' or 'triangle', got {kind!r}")


def _pick_colour(rng, avoid, min_distance: float, tries: int = 64) -> np.ndarray:
    """A random RGB colour at least ``min_distance`` (Euclidean, 0..255 units) from each colour in
    ``avoid``; after ``tries`` draws, the draw farthest from its nearest neighbour is used."""
    best, best_d = None, -1.0
    for _ in range(tries):
        c = rng.integers(0, 256, size=3)
        d = min(float(np.linalg.norm(c - a)) for a in avoid) if avoid else np.inf
        if d >= min_distance:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def random_shapes_image(rng: np.random.Generator, image_size: int = 128, min_instances: int = 1,
                        max_instances: int = 4, min_size: float | None = None,
                        max_size: float | None = None, min_visible_area: int = 48,
                        min_visible_fraction: float = 0.3, min_colour_distance: float = 100.0,
                        tries_per_instance: int = 20, *, height: int | None = None,
                        width: int | None = None):
    """Draw one image in memory.

    Returns ``image`` uint8 ``(H, W, 3)``, ``masks`` uint8 ``(M, H, W)`` (visible pixels, disjoint) and
    ``category_ids`` int64 ``(M,)`` (1 square, 2 circle, 3 triangle), ``1 <= M <= max_instances``, with
    ``H = height`` and ``W = width`` (each ``image_size`` when not given). Sizes ``s`` are uniform in
    ``[min_size, max_size]`` (default ``min(H, W)/16`` to ``min(H, W)/5``); shapes lie fully inside the
    image. Colours are at least ``min_colour_distance`` from the background and from each other
    instance's colour. A square image draws exactly what it drew before ``height``/``width`` existed.
    """
    H = int(image_size if height is None else height)
    W = int(image_size if width is None else width)
    side = min(H, W)
    min_size = side / 16 if min_size is None else float(min_size)
    max_size = side / 5 if max_size is None else float(max_size)
    if not 0 < min_size <= max_size <= side / 2:
        raise ValueError(f"min_size/max_size: expected 0 < min_size <= max_size <= min(height, width)/2"
                         f" = {side / 2}, got {min_size}, {max_size}")
    if not 1 <= min_instances <= max_instances:
        raise ValueError(f"min_instances/max_instances: expected 1 <= min <= max, got "
                         f"{min_instances}, {max_instances}")
    background = rng.integers(0, 256, size=3)
    wanted = int(rng.integers(min_instances, max_instances + 1))
    owner = np.full((H, W), -1, np.int16)
    full_area, kinds, colours = [], [], []

    def acceptable(new_owner, areas_full):
        visible = np.bincount(new_owner.ravel() + 1, minlength=len(areas_full) + 1)[1:]
        return all(v >= min_visible_area and v >= min_visible_fraction * a
                   for v, a in zip(visible, areas_full))

    attempts = 0
    while len(kinds) < wanted:
        k = len(kinds)
        placed = False
        for _ in range(tries_per_instance):
            cat = int(rng.integers(1, 4))
            s = rng.uniform(min_size, max_size)
            # NOTE: one call for both draws, as before non-square images existed (same random stream)
            cx, cy = rng.uniform(s, np.array([W - s, H - s]))
            m = shape_mask(_KINDS[cat], cx, cy, s, (H, W))
            new_owner = owner.copy()
            new_owner[m] = k                         # later shapes hide earlier ones
            if acceptable(new_owner, full_area + [int(m.sum())]):
                owner = new_owner
                full_area.append(int(m.sum()))
                kinds.append(cat)
                colours.append(_pick_colour(rng, [background] + colours, min_colour_distance))
                placed = True
                break
        attempts += 1
        if not placed:
            if kinds:                                # fewer instances than wanted: fine
                break
            if attempts >= 50:
                raise ValueError(f"could not place a single shape with min_visible_area="
                                 f"{min_visible_area} and sizes in [{min_size}, {max_size}] on a "
                                 f"{W}x{H} image; lower min_visible_area")
    # Paint from the owner map: palette row 0 is the background, row k+1 instance k.
    palette = np.stack([background] + colours).astype(np.uint8)      # (M+1, 3)
    image = palette[owner + 1]                                         # (H, W) -> (H, W, 3)
    masks = (owner[None] == np.arange(len(kinds))[:, None, None]).astype(np.uint8)  # (M, H, W)
    return image, masks, np.asarray(kinds, np.int64)


def _split_json(split: str, seed: int, hw, images, annotations) -> dict:
    info = {"description": "mrcnn-np shapes: squares, circles and triangles",
            "version": "1.0", "split": split, "seed": seed}
    if hw[0] == hw[1]:
        info["image_size"] = hw[0]
    else:
        info["height"], info["width"] = hw
    return {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


# The files the generator writes into images/: 000001.png ... and, while a write is in flight, the
# temporary file of atomic_write_png (.000001.png.<random>.tmp).
_OWN_FILE = re.compile(r"(\d+\.png|\.\d+\.png\..+\.tmp)")


def _check_not_foreign(split_dir: Path) -> None:
    """Refuse (before anything is written) to write a split into an images/ folder holding files the
    generator did not write: clearing stale images must never delete someone's own files."""
    images_dir = split_dir / "images"
    if not images_dir.is_dir():
        return
    for f in sorted(images_dir.iterdir()):
        if not (f.is_file() and _OWN_FILE.fullmatch(f.name)):
            raise ValueError(f"out_dir: {f} was not written by the shapes generator; refusing to "
                             f"regenerate {split_dir.name}/ over it (choose another folder, or remove it)")


def _write_split(split_dir: Path, split: str, n: int, seed: int, hw, options) -> dict:
    images_dir = split_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    ann_path = split_dir / "annotations.json"
    # NOTE: the old JSON goes first: if this run stops half-way, the split has no annotations.json
    # (incomplete, and loaders say so) instead of an old JSON over a mix of old and new images.
    ann_path.unlink(missing_ok=True)
    images, annotations = [], []
    digits = max(6, len(str(n)))
    for i in range(1, n + 1):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
        image, masks, cats = random_shapes_image(rng, height=hw[0], width=hw[1], **options)
        file_name = f"{i:0{digits}d}.png"
        atomic_write_png(images_dir / file_name, image)
        images.append({"id": i, "file_name": file_name, "width": hw[1], "height": hw[0]})
        for mask, cat in zip(masks, cats):
            ys, xs = np.nonzero(mask)
            x1, y1 = int(xs.min()), int(ys.min())
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(cat),
                "bbox": [x1, y1, int(xs.max()) + 1 - x1, int(ys.max()) + 1 - y1],  # tight, xywh
                "area": int(mask.sum()), "iscrowd": 0, "segmentation": mask_to_rle(mask),
            })
    written = {im["file_name"] for im in images}
    for f in images_dir.iterdir():                 # stale images of an earlier, larger run
        if f.name not in written and _OWN_FILE.fullmatch(f.name):
            f.unlink()
    # Written last: a complete annotations.json means every image it lists is on disk.
    atomic_write_json(ann_path, _split_json(split, seed, hw, images, annotations))
    return {"images": images_dir, "annotations": ann_path, "num_images": n,
            "num_instances": len(annotations)}


def generate_shapes(out_dir, n_train: int, n_val: int, seed: int = 0, image_size: int = 128, *,
                    width: int | None = None, height: int | None = None, min_instances: int = 1, max_instances: int = 4, min_size: float | None = None,
                    max_size: float | None = None, min_visible_area: int = 48,
                    min_visible_fraction: float = 0.3, min_colour_distance: float = 100.0) -> dict:
    """Write the shapes dataset to ``out_dir`` (layout in the module docstring).

    ``n_train``/``n_val`` images per split (a split with 0 images is not written); images are
    ``image_size`` square, or ``width x height`` where given (either defaults to ``image_size``). The
    other keyword options are those of :func:`random_shapes_image`. Every file is written atomically;
    a split written into an existing folder replaces the old one, stale images included (module
    docstring). Returns
    ``{split: {"images": Path, "annotations": Path, "num_images": int, "num_instances": int}}``.
    """
    for name, v in (("n_train", n_train), ("n_val", n_val), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}: expected a non-negative integer, got {v!r}")
    for name, v in (("image_size", image_size), ("width", width), ("height", height)):
        if v is None and name != "image_size":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 16:
            raise ValueError(f"{name}: expected an integer >= 16, got {v!r}")
    hw = (int(image_size if height is None else height), int(image_size if width is None else width))
    options = dict(min_instances=min_instances, max_instances=max_instances, min_size=min_size,
                   max_size=max_size, min_visible_area=min_visible_area,
                   min_visible_fraction=min_visible_fraction, min_colour_distance=min_colour_distance)
    # Check the options once, up front, so a bad value fails before any file is written.
    random_shapes_image(np.random.default_rng(0), height=hw[0], width=hw[1], **options)
    out = Path(out_dir)
    for split, n in (("train", n_train), ("val", n_val)):
        if n > 0:
            _check_not_foreign(out / split)
    result = {}
    for split, n in (("train", int(n_train)), ("val", int(n_val))):
        if n > 0:
            result[split] = _write_split(out / split, split, n, int(seed), hw, options)
    return result
