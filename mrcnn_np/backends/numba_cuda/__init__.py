"""The ``numba-cuda`` backend's kernels; ``load()`` registers them (see :mod:`mrcnn_np.dispatch`)."""
import importlib

#: the op-family files of this backend, each registering its kernels when imported
MODULES: tuple = ("roi_align", "roi_pool", "nms", "boxes", "conv", "norm", "pool", "losses")


def load():
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
