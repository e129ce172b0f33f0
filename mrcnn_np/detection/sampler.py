"""Balanced sampling of positives and negatives for a loss (RPN: 256 anchors, 50 % positive;
RoI heads: 512 proposals, 25 % positive).

Given per-element labels (``>= 1`` positive, ``0`` negative, ``-1`` ignored) and a budget ``B`` with
positive fraction ``f``::

    n_pos = min(#positives, floor(B f))
    n_neg = min(#negatives, B - n_pos)          (negatives fill what positives leave)

and ``n_pos`` positives and ``n_neg`` negatives are drawn uniformly without replacement. An image
with few objects is therefore trained mostly on background, never on more than ``B`` elements.

How the draw is made: each element gets a random key ``u ~ U[0, 1)``; the ``n_pos`` positives with
the smallest keys are taken, and likewise the negatives. Sorting by an i.i.d. key is a uniformly
random permutation, so this is the same distribution as shuffling, and it needs no index lists:
on a GPU the keys, the comparisons and the partial sort all stay on the device, and only the counts
``n_pos, n_neg`` of every image of the batch are read back, once (:meth:`sample_batch`).

Randomness: every call takes the generator to draw from, a ``numpy.random.Generator`` (or an int
seed, or ``None`` for fresh OS entropy). The keys are drawn on the host and uploaded, so the same
labels and the same generator state give the same sample on every backend. Indices are returned in
the array module of ``labels``.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_numpy

__all__ = ["BalancedPositiveNegativeSampler", "as_generator"]


def as_generator(rng) -> np.random.Generator:
    """``rng`` as a ``numpy.random.Generator``: a Generator is used as is, an int seeds a new one,
    ``None`` gives a fresh unseeded one."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng: expected a numpy.random.Generator, an int seed or None, got {rng!r}")


class BalancedPositiveNegativeSampler:
    """BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction).

    ``sampler(labels, rng)`` with labels ``(A,)`` returns ``(pos_idx, neg_idx)``: int64 indices of the
    sampled positives and negatives, each sorted ascending.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if isinstance(batch_size_per_image, bool) or not hasattr(batch_size_per_image, "__index__") \
                or batch_size_per_image < 1:
            raise ValueError(f"batch_size_per_image: expected a positive integer, got "
                             f"{batch_size_per_image!r}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction: expected a number in [0, 1], got {positive_fraction!r}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __repr__(self):
        return (f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")

    def __call__(self, labels, rng=None):
        """labels: ``(A,)`` ints, ``>= 1`` positive, ``0`` negative, ``-1`` ignored.
        Returns ``(pos_idx (P,), neg_idx (Q,))`` int64, ascending, ``P + Q <= batch_size_per_image``."""
        return self.sample_batch([labels], rng)[0]

    def sample_batch(self, labels_list, rng=None):
        """:meth:`__call__` for each image's labels, drawing from ``rng`` in turn, with a single read
        of the counts for all of them: ``[(pos_idx, neg_idx), ...]``."""
        for labels in labels_list:
            if getattr(labels, "ndim", None) != 1:
                raise ValueError(f"labels: expected a 1-D array (A,), got shape "
                                 f"{getattr(labels, 'shape', type(labels).__name__)}")
        gen = as_generator(rng)
        budget = self.batch_size_per_image
        max_pos = int(budget * self.positive_fraction)
        picks, counts = [], []
        for labels in labels_list:
            xp = get_array_module(labels)
            a = labels.shape[0]
            keys = xp.asarray(gen.random(a))                # U[0, 1): 2.0 marks "not a candidate"
            is_pos, is_neg = labels >= 1, labels == 0
            pos = _smallest(xp.where(is_pos, keys, 2.0), min(max_pos, a))
            neg = _smallest(xp.where(is_neg, keys, 2.0), min(budget, a))
            n_pos = xp.minimum(is_pos.sum(), max_pos)               # n_pos = min(#pos, floor(B f))
            n_neg = xp.minimum(is_neg.sum(), budget - n_pos)        # n_neg = min(#neg, B - n_pos)
            picks.append((xp, pos, neg))
            counts += [n_pos, n_neg]
        if not picks:
            return []
        xp = picks[0][0]
        counts = to_numpy(xp.stack(counts)).tolist()                # the one read, for all images
        out = []
        for i, (xp, pos, neg) in enumerate(picks):
            n_pos, n_neg = counts[2 * i], counts[2 * i + 1]
            out.append((xp.sort(pos[:n_pos]).astype(xp.int64), xp.sort(neg[:n_neg]).astype(xp.int64)))
        return out


def _smallest(keys, k: int):
    """Indices of the ``k`` smallest ``keys`` ``(A,)``, in increasing key order. The candidates' keys
    are distinct (i.i.d. draws), so the result does not depend on how ties among the non-candidates
    (all 2.0) fall: those are cut off by the count."""
    xp = get_array_module(keys)
    if k <= 0:
        return xp.zeros(0, dtype=xp.int64)
    if isinstance(keys, np.ndarray) and k < keys.shape[0]:
        part = np.argpartition(keys, k - 1)[:k]                 # O(A) on the CPU
        return part[np.argsort(keys[part], kind="stable")]
    return xp.argsort(keys, kind="stable")[:k]
