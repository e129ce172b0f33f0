"""Helpers and fixtures shared by the data, evaluation and picture tests (imported explicitly)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrcnn_np.data.shapes import generate_shapes


def write_png(path, array, mode=None) -> Path:
    """Save ``array`` as a PNG (``mode`` e.g. "L", "RGBA"); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode=mode).save(path)
    return path


def write_json(path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def coco_dict(images, annotations, categories=None) -> dict:
    """A COCO instances dict; ``images`` as ``(id, file_name, width, height)`` tuples."""
    if categories is None:
        categories = [{"id": 1, "name": "thing"}]
    return {"images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
            "annotations": annotations, "categories": categories}


def rect_polygon(x1, y1, x2, y2) -> list:
    """The polygon of the rectangle ``[x1, x2) x [y1, y2)``, COCO's flat list of coordinates."""
    return [x1, y1, x2, y1, x2, y2, x1, y2]


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A small shapes dataset: 24 training and 10 validation images, seed 0."""
    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(out, 24, 10, seed=0)
    return out
