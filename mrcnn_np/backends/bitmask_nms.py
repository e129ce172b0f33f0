"""The sequential half of bitmask NMS, on the host: shared by the ``cupy`` and ``numba-cuda`` backends.

The GPU computes the suppression mask (``mask[i, w]``: bit ``k`` says sorted box ``i`` has IoU above
the threshold with sorted box ``64 w + k``); the greedy pass over it is inherently sequential::

    removed = 0 (a bit per box)
    for i in score order:   if bit i of removed is clear: keep i; removed |= mask[i]

which is the reference's ``_greedy_rows`` (:mod:`mrcnn_np.ops.nms`) on 64-bit words. It runs here on
the host, as torchvision's CUDA NMS does, because one GPU thread walking the boxes is slow: measured
on an H100 for 4,000 boxes, the whole NMS took 6.2 ms with the pass on one device thread
(``nms_greedy`` in ``kernels/nms.cu``) against 1.7 ms with the 2 MB mask copied to the host.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["greedy_keep", "BLOCK"]

BLOCK = 64                                       # boxes per mask word


@njit(cache=True)
def greedy_keep(mask, n):
    """mask: (n, ceil(n / 64)) uint64 on the host.  Returns the kept sorted positions, int64 (K,)."""
    removed = np.zeros(mask.shape[1], dtype=np.uint64)
    keep = np.empty(n, dtype=np.int64)
    n_keep = 0
    for i in range(n):
        word, bit = i // BLOCK, np.uint64(i % BLOCK)
        if (removed[word] >> bit) & np.uint64(1):
            continue                             # a kept, higher-ranked box suppressed box i
        keep[n_keep] = i
        n_keep += 1
        for w in range(word, mask.shape[1]):     # words before `word` only hold decided boxes
            removed[w] |= mask[i, w]
    return keep[:n_keep]
