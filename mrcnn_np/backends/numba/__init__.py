"""The ``numba`` backend's kernels; ``load()`` registers them (see :mod:`mrcnn_np.dispatch`).

One file per op family, as in :mod:`mrcnn_np.ops`; each kernel's docstring says what it computes
(pointing at the reference's equations) and how it is parallelised. ``paste.py`` (mask pasting) is a
standalone kernel, not registered (``paste_masks`` is not a dispatched op).
"""
import importlib

#: the op-family files of this backend, each registering its kernels when imported
MODULES: tuple = ("conv", "pool", "norm", "roi_align", "roi_pool", "losses", "nms", "boxes",
                  "interpolate")


def load():
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
