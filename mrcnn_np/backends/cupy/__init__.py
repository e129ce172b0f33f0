"""The ``cupy`` backend's kernels; ``load()`` registers them (see :mod:`mrcnn_np.dispatch`)."""
import importlib

#: the op-family files of this backend, each registering its kernels when imported
MODULES: tuple = ("roi_align", "roi_pool", "nms", "conv", "norm", "pool", "losses")
#: not in MODULES: ``paste`` (a standalone ``paste_masks``, wired in by hand; see its docstring)


def load():
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
