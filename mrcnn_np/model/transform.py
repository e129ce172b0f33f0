"""The model's input transform: images of any size -> one padded, normalised batch, and back.

This is the job of torchvision's ``GeneralizedRCNNTransform``, configured by the preset::

    x      = pixels / 255                                   uint8 (H, W, 3) -> float32 (3, H, W)
    x      = (x - mean_c) / std_c                           if the config has pixel_mean / pixel_std
    x      = resize(x) to (h, w)                            the rule below
    batch  = x padded with 0 at the bottom/right to (Hb, Wb), multiples of SIZE_DIVISIBILITY

Two resize rules (``config.resize``):

* ``"longest"`` (the toy presets): ``max(h, w) = image_size``, ``h = round(H * image_size / max(H, W))``,
  bilinear by PIL on the uint8 image, before the [0, 1] scaling (as the data loader does for
  training, :func:`mrcnn_np.data.transforms.resize_longest`).
* ``"min_max"`` (``r50_fpn``): torchvision's rule. ``scale = min(min_size / min(H, W), max_size /
  max(H, W))`` in double precision, and ``h = floor(H * scale)``, ``w = floor(W * scale)``, which is
  what ``interpolate(scale_factor=scale, recompute_scale_factor=True)`` computes.

  # NOTE: floor, not round. A 390-row photo has scale 800/390 and 390 * (800/390) = 799.99999...,
  # so it becomes 799 rows, not 800 (154 short sides in 1..2999 do this).

  The interpolation is ``F.interpolate(mode="bilinear", align_corners=False)`` without antialiasing,
  done on the normalised float image, separably (rows, then columns), in float32 as torch's CPU
  kernel computes its coordinates: for output index ``i`` and ``r = in / out`` (the *integer* sizes,
  not ``1 / scale``)::

      src = max(r (i + 0.5) - 0.5, 0),  i0 = floor(src),  i1 = min(i0 + 1, in - 1),  l = src - i0
      out[i] = (1 - l) x[i0] + l x[i1]

Padding with 0 after normalising means the padding has the dataset's mean colour. Each image's
``(h, w)`` is its *valid area*: proposals and detections are clipped to it. Mapping results back to
the original ``(H, W)`` is a per-axis scale (:func:`mrcnn_np.detection.postprocess.detections_to_original`).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..functional import interpolate_bilinear

__all__ = ["SIZE_DIVISIBILITY", "ImageTransform", "resized_size_min_max", "resized_size_longest",
           "interpolate_bilinear", "pad_images"]

#: Padded inputs are multiples of this: the coarsest feature map (C5) has stride 32, so every level's
#: map then covers the input exactly and the FPN's 2x upsampling lines up.
SIZE_DIVISIBILITY = 32


def resized_size_longest(H: int, W: int, max_size: int) -> tuple[int, int]:
    """``(h, w)`` with ``max(h, w) = max_size``: ``h = round(H * max_size / max(H, W))``, at least 1."""
    scale = max_size / max(H, W)
    return max(1, min(max_size, round(H * scale))), max(1, min(max_size, round(W * scale)))


def resized_size_min_max(H: int, W: int, min_size: int, max_size: int) -> tuple[int, int]:
    """torchvision's output size: ``floor(side * min(min_size / min(H, W), max_size / max(H, W)))``
    in Python floats (doubles), as ``interpolate(scale_factor=..., recompute_scale_factor=True)``."""
    scale = min(min_size / min(H, W), max_size / max(H, W))
    return int(math.floor(H * scale)), int(math.floor(W * scale))


def pad_images(images, size_divisibility: int = SIZE_DIVISIBILITY):
    """Stack ``[(3, h_i, w_i)]`` into ``(N, 3, Hb, Wb)`` zero-padded at the bottom/right, with
    ``Hb = ceil(max h_i / d) d`` and ``Wb`` likewise."""
    if not images:
        raise ValueError("images: expected at least one image")
    d = int(size_divisibility)
    hb = -(-max(im.shape[1] for im in images) // d) * d
    wb = -(-max(im.shape[2] for im in images) // d) * d
    out = np.zeros((len(images), images[0].shape[0], hb, wb), images[0].dtype)
    for k, im in enumerate(images):
        out[k, :, : im.shape[1], : im.shape[2]] = im                     # (3, h, w) -> top-left
    return out


class ImageTransform:
    """``transform(images)`` -> ``(batch (N, 3, Hb, Wb) float32, image_sizes [(h, w)], original_sizes
    [(H, W)])``, per the config's ``resize``, ``pixel_mean``/``pixel_std`` (module docstring).

    ``images``: ``uint8 (H, W, 3)`` arrays (RGB), or float ``(3, H, W)`` arrays in ``[0, 1]``.
    """

    def __init__(self, config, size_divisibility: int = SIZE_DIVISIBILITY):
        self.resize = config.resize
        self.image_size = config.image_size
        self.min_size, self.max_size = config.min_size, config.max_size
        self.mean = np.asarray(config.pixel_mean, np.float32) if config.pixel_mean else None
        self.std = np.asarray(config.pixel_std, np.float32) if config.pixel_std else None
        self.size_divisibility = size_divisibility

    def __repr__(self):
        rule = (f"longest side {self.image_size}" if self.resize == "longest" else
                f"short side {self.min_size}, long side <= {self.max_size}")
        norm = "" if self.mean is None else f", normalise mean {tuple(self.mean)} std {tuple(self.std)}"
        return f"ImageTransform({rule}{norm}, pad to a multiple of {self.size_divisibility})"

    def resized_size(self, H: int, W: int) -> tuple[int, int]:
        """The valid area ``(h, w)`` an ``H x W`` image gets."""
        if self.resize == "longest":
            return resized_size_longest(H, W, self.image_size)
        return resized_size_min_max(H, W, self.min_size, self.max_size)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean_c) / std_c`` on ``(3, H, W)`` (identity without pixel_mean)."""
        if self.mean is None:
            return x
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def one(self, image) -> np.ndarray:
        """One image -> its normalised, resized float32 ``(3, h, w)``."""
        if image.ndim != 3 or (image.shape[2] != 3 and image.shape[0] != 3):
            raise ValueError(f"images: expected uint8 (H, W, 3) or float (3, H, W), got shape {image.shape}")
        is_uint8 = image.dtype == np.uint8
        H, W = image.shape[:2] if is_uint8 else image.shape[1:]
        h, w = self.resized_size(H, W)
        if self.resize == "longest":
            if not is_uint8:                     # PIL's resize needs the uint8 picture
                image = np.clip(np.rint(np.asarray(image).transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
            if (h, w) != (H, W):
                image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
            x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
            return self.normalize(x)
        if is_uint8:
            x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        else:
            x = np.asarray(image, dtype=np.float32)
        return interpolate_bilinear(self.normalize(x), (h, w))

    def __call__(self, images):
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        originals, xs = [], []
        for im in images:
            im = np.asarray(im)
            originals.append(tuple(im.shape[:2]) if im.dtype == np.uint8 else tuple(im.shape[1:]))
            xs.append(self.one(im))
        return pad_images(xs, self.size_divisibility), [x.shape[1:] for x in xs], originals
