"""Data: the shapes toy dataset, a COCO reader, transforms and batching (host-side, plain NumPy).

* :mod:`.shapes`      ``generate_shapes(out_dir, n_train, n_val, seed)`` writes a COCO dataset of squares,
                      circles and triangles with exact masks (no download needed).
* :mod:`.coco`        ``CocoDataset(images_dir, annotation_json)`` reads any COCO instances dataset
                      (polygons, RLE, crowds); errors name the file and the id.
* :mod:`.transforms`  resize-and-pad, horizontal flip, and the inverse mapping of predictions.
* :mod:`.loader`      seeded, shuffled batches ``(N, 3, H, W)`` + per-image targets.
"""
from .coco import (CocoDataset, CocoFormatError, ImageNotFoundError, category_mapping,
                   image_to_float_chw, mask_to_rle, segmentation_to_mask)
from .loader import BatchLoader, iterate_batches, load_sample, pad_batch
from .shapes import CATEGORIES as SHAPES_CATEGORIES
from .shapes import generate_shapes, random_shapes_image, shape_mask
from .transforms import (boxes_to_original, hflip, masks_to_original, predictions_to_original,
                         resize_and_pad, resize_longest)

__all__ = [
    "CocoDataset", "CocoFormatError", "ImageNotFoundError", "category_mapping", "image_to_float_chw",
    "mask_to_rle", "segmentation_to_mask", "BatchLoader", "iterate_batches", "load_sample",
    "SHAPES_CATEGORIES", "generate_shapes", "random_shapes_image", "shape_mask",
    "boxes_to_original", "hflip", "masks_to_original", "predictions_to_original", "resize_and_pad",
    "resize_longest", "pad_batch",
]
