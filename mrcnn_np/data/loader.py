"""Batches for training and evaluation: load, augment, resize/pad, stack.

One sample goes through::

    CocoDataset[i] -> (uint8 (H, W, 3), target)  -> hflip (with probability hflip_prob)
                   -> resize to input_size -> float32 (3, h, w) in [0, 1]

``input_size`` an int ``S`` (what the model configs use): the longer side becomes ``S``
(:func:`~mrcnn_np.data.transforms.resize_longest`) and the batch is padded at the bottom/right to
its largest image, rounded up to a multiple of ``size_divisibility`` (32, the C5 stride), by
:func:`pad_batch`. ``input_size`` a pair ``(Sh, Sw)``: every image is fitted into that fixed canvas
(:func:`~mrcnn_np.data.transforms.resize_and_pad`), then padded to a multiple of 32 if it is not one.
A batch of square images with ``S`` a multiple of 32 is ``(N, 3, S, S)`` either way.

A batch is ``images (N, 3, Hb, Wb)`` with a list of ``N`` target dicts (``boxes (M_i, 4)`` in input
pixels, ``labels (M_i,)``, ``masks (M_i, Hb, Wb)``, ``image_id``, ``index`` (the position in the
dataset) and the size bookkeeping: ``resized_size (h_i, w_i)``, the image's valid (unpadded) area,
which the model clips proposals and detections to, and ``orig_size (H_i, W_i)``, to which
predictions are mapped back). Targets cannot be stacked: each image has its own number of objects.
Pixel values are only scaled to ``[0, 1]``; any mean/std normalisation belongs to the model.

Order is reproducible: epoch ``e`` of a loader with seed ``s`` shuffles with a generator seeded by
``(s, e)``, and the flip coin of every sample comes from the same generator, so the same ``(seed,
epoch)`` always yields the same batches and every epoch has a different order. Batch ``b`` of an epoch
is a pure function of ``(seed, epoch, b)``, so ``start_batch=b`` begins an epoch there without loading
the batches before it (a resumed run skips what it has done by index, not by reading it).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..model.transform import SIZE_DIVISIBILITY, ImageTransform, pad_images
from .coco import image_to_float_chw
from .transforms import hflip, input_hw, resize_and_pad, resize_longest, resize_target

__all__ = ["SIZE_DIVISIBILITY", "load_sample", "resize_for_model", "pad_batch", "iterate_batches",
           "BatchLoader"]


def resize_for_model(image: np.ndarray, target: dict, input_size) -> tuple[np.ndarray, dict]:
    """``input_size`` an int: :func:`resize_longest`; a pair ``(Sh, Sw)``: :func:`resize_and_pad`."""
    if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
        return resize_longest(image, target, int(input_size))
    return resize_and_pad(image, target, input_size)


def load_sample(dataset, i: int, input_size, flip: bool = False) -> tuple[np.ndarray, dict]:
    """Sample ``i`` of ``dataset`` ready for the model: ``float32 (3, h, w)`` and its target (not yet
    padded to the batch; see :func:`pad_batch`). ``input_size`` may also be the model's own
    :class:`~mrcnn_np.model.transform.ImageTransform` (what ``train`` passes for ``r50_fpn``): the
    image is then resized and normalised exactly as at inference, and the target follows it."""
    image, target = dataset[i]
    if flip:
        image, target = hflip(image, target)
    if isinstance(input_size, ImageTransform):
        H, W = image.shape[:2]
        hw = input_size.resized_size(H, W)
        target = resize_target(target, (H, W), hw, hw[0] / H)
        target["index"] = int(i)
        return input_size.one(image), target
    image, target = resize_for_model(image, target, input_size)
    target["index"] = int(i)
    return image_to_float_chw(image), target


def pad_batch(images, targets=None, size_divisibility: int = SIZE_DIVISIBILITY):
    """Stack images ``[(3, h_i, w_i)]`` into ``(N, 3, Hb, Wb)``, zero-padded at the bottom/right.

    ``Hb = ceil(max_i h_i / d) d`` and ``Wb = ceil(max_i w_i / d) d`` with ``d = size_divisibility``.
    ``targets`` (optional, one dict per image) get their ``masks`` padded to ``(M_i, Hb, Wb)`` and
    ``input_size = (Hb, Wb)``; their ``resized_size`` (the valid area) is left as it is. Returns
    ``(images, targets)`` (new dicts).
    """
    out = pad_images(images, size_divisibility)                         # (N, 3, Hb, Wb)
    hb, wb = out.shape[2:]
    if targets is None:
        return out, None
    padded = []
    for t in targets:
        t = dict(t)
        m = np.asarray(t["masks"])
        if m.shape[1:] != (hb, wb):
            pm = np.zeros((m.shape[0], hb, wb), m.dtype)
            pm[:, : m.shape[1], : m.shape[2]] = m
            t["masks"] = pm
        t["input_size"] = (hb, wb)
        padded.append(t)
    return out, padded


def _epoch_plan(n: int, shuffle: bool, seed: int, epoch: int, hflip_prob: float):
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(n) if shuffle else np.arange(n)
    flips = rng.random(n) < hflip_prob            # one coin per position, drawn even when p = 0
    return order, flips


def iterate_batches(dataset, batch_size: int, input_size, *, shuffle: bool = True, seed: int = 0,
                    epoch: int = 0, hflip_prob: float = 0.0, drop_last: bool = False,
                    start_batch: int = 0) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """One epoch of batches: yields ``(images float32 (N, 3, Hb, Wb), targets list of N dicts)``.

    ``input_size`` is an int (the longer side; the batch is padded to a multiple of 32) or a fixed
    canvas ``(Sh, Sw)`` (see the module docstring); ``N = batch_size`` except possibly for the last
    batch (dropped when ``drop_last``). ``shuffle=False`` keeps dataset order (use it for evaluation).
    ``start_batch = b`` yields the epoch's batches ``b, b+1, ...`` only; nothing before them is loaded.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not 0.0 <= hflip_prob <= 1.0:
        raise ValueError(f"hflip_prob: expected a probability in [0, 1], got {hflip_prob!r}")
    if isinstance(start_batch, bool) or not isinstance(start_batch, (int, np.integer)) or start_batch < 0:
        raise ValueError(f"start_batch: expected a non-negative integer, got {start_batch!r}")
    if not isinstance(input_size, ImageTransform):
        input_hw(input_size)                               # validate early
    # NOTE: the whole epoch's plan is drawn even when starting late, so batch b gets the same images
    # and the same flips as in an uninterrupted epoch.
    order, flips = _epoch_plan(len(dataset), shuffle, seed, epoch, hflip_prob)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(start_batch * batch_size, stop, batch_size):
        samples = [load_sample(dataset, int(order[k]), input_size, bool(flips[k]))
                   for k in range(start, min(start + batch_size, stop))]
        yield pad_batch([s[0] for s in samples], [s[1] for s in samples])   # (N, 3, Hb, Wb)


class BatchLoader:
    """Reusable :func:`iterate_batches`: each ``iter(loader)`` is the next epoch (0, 1, 2, ...).

    ``loader.epoch(e)`` gives epoch ``e`` directly and ``loader.epoch(e, start_batch=b)`` its batches from
    ``b`` on (resuming from a checkpoint), and sets the counter so that the following ``iter``
    continues with ``e + 1``.
    """

    def __init__(self, dataset, batch_size: int, input_size, *, shuffle: bool = True, seed: int = 0,
                 hflip_prob: float = 0.0, drop_last: bool = False):
        self.dataset, self.batch_size, self.input_size = dataset, batch_size, input_size
        self.shuffle, self.seed, self.hflip_prob, self.drop_last = shuffle, seed, hflip_prob, drop_last
        self.next_epoch = 0

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def epoch(self, e: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, list[dict]]]:
        self.next_epoch = e + 1
        return iterate_batches(self.dataset, self.batch_size, self.input_size, shuffle=self.shuffle,
                               seed=self.seed, epoch=e, hflip_prob=self.hflip_prob,
                               drop_last=self.drop_last, start_batch=start_batch)

    def __iter__(self):
        return self.epoch(self.next_epoch)
