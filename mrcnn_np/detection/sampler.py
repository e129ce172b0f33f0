"""Balanced sampling of positives and negatives for a loss (RPN: 256 anchors, 50 % positive;
RoI heads: 512 proposals, 25 % positive).

Given per-element labels (``>= 1`` positive, ``0`` negative, ``-1`` ignored) and a budget ``B`` with
positive fraction ``f``::

    n_pos = min(#positives, floor(B f))
    n_neg = min(#negatives, B - n_pos)          (negatives fill what positives leave)

and ``n_pos`` positives and ``n_neg`` negatives are drawn uniformly without replacement. An image
with few objects is therefore trained mostly on background, never on more than ``B`` elements.

Randomness: every call takes the generator to draw from, a ``numpy.random.Generator`` (or an int
seed, or ``None`` for fresh OS entropy). The same labels and the same generator state give the same
sample. The draw runs on the host (it is bookkeeping over index lists); indices are returned in
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
        if getattr(labels, "ndim", None) != 1:
            raise ValueError(f"labels: expected a 1-D array (A,), got shape "
                             f"{getattr(labels, 'shape', type(labels).__name__)}")
        xp = get_array_module(labels)
        gen = as_generator(rng)
        lab = to_numpy(labels)
        positive = np.flatnonzero(lab >= 1)
        negative = np.flatnonzero(lab == 0)
        n_pos = min(positive.size, int(self.batch_size_per_image * self.positive_fraction))
        n_neg = min(negative.size, self.batch_size_per_image - n_pos)
        pos = np.sort(gen.permutation(positive)[:n_pos])
        neg = np.sort(gen.permutation(negative)[:n_neg])
        return xp.asarray(pos, dtype=xp.int64), xp.asarray(neg, dtype=xp.int64)
