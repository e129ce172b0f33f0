"""Batches for training and evaluation: load, augment, resize/pad, stack.

One sample goes through::

    CocoDataset[i] -> (uint8 (H, W, 3), target)  -> hflip (with probability hflip_prob)
                   -> resize_and_pad to input_size -> float32 (3, Sh, Sw) in [0, 1]

and a batch stacks ``N`` of them into ``images (N, 3, Sh, Sw)`` with a list of ``N`` target dicts
(``boxes (M_i, 4)`` in input pixels, ``labels (M_i,)``, ``masks (M_i, Sh, Sw)``, ``image_id``, ``index``
(the position in the dataset) and the size bookkeeping that :func:`mrcnn_np.data.transforms.predictions_to_original` uses to map predictions
back to the original image). Targets cannot be stacked: each image has its own number of objects.
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

from .coco import image_to_float_chw
from .transforms import hflip, input_hw, resize_and_pad

__all__ = ["load_sample", "iterate_batches", "BatchLoader"]


def load_sample(dataset, i: int, input_size, flip: bool = False) -> tuple[np.ndarray, dict]:
    """Sample ``i`` of ``dataset`` ready for the model: ``float32 (3, Sh, Sw)`` and its target."""
    image, target = dataset[i]
    if flip:
        image, target = hflip(image, target)
    image, target = resize_and_pad(image, target, input_size)
    target["index"] = int(i)
    return image_to_float_chw(image), target


def _epoch_plan(n: int, shuffle: bool, seed: int, epoch: int, hflip_prob: float):
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(n) if shuffle else np.arange(n)
    flips = rng.random(n) < hflip_prob            # one coin per position, drawn even when p = 0
    return order, flips


def iterate_batches(dataset, batch_size: int, input_size, *, shuffle: bool = True, seed: int = 0,
                    epoch: int = 0, hflip_prob: float = 0.0, drop_last: bool = False,
                    start_batch: int = 0) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """One epoch of batches: yields ``(images float32 (N, 3, Sh, Sw), targets list of N dicts)``.

    ``input_size`` is an int (square) or ``(Sh, Sw)``; ``N = batch_size`` except possibly for the last
    batch (dropped when ``drop_last``). ``shuffle=False`` keeps dataset order (use it for evaluation).
    ``start_batch = b`` yields the epoch's batches ``b, b+1, ...`` only; nothing before them is loaded.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not 0.0 <= hflip_prob <= 1.0:
        raise ValueError(f"hflip_prob: expected a probability in [0, 1], got {hflip_prob!r}")
    if isinstance(start_batch, bool) or not isinstance(start_batch, (int, np.integer)) or start_batch < 0:
        raise ValueError(f"start_batch: expected a non-negative integer, got {start_batch!r}")
    input_hw(input_size)                                   # validate early
    # NOTE: the whole epoch's plan is drawn even when starting late, so batch b gets the same images
    # and the same flips as in an uninterrupted epoch.
    order, flips = _epoch_plan(len(dataset), shuffle, seed, epoch, hflip_prob)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(start_batch * batch_size, stop, batch_size):
        samples = [load_sample(dataset, int(order[k]), input_size, bool(flips[k]))
                   for k in range(start, min(start + batch_size, stop))]
        yield np.stack([s[0] for s in samples]), [s[1] for s in samples]   # (N, 3, Sh, Sw)


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
