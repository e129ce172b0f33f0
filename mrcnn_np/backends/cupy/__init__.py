"""The ``cupy`` backend's kernels; ``load()`` registers them (see :mod:`mrcnn_np.dispatch`)."""
import importlib

#: the op-family files of this backend, each registering its kernels when imported
MODULES: tuple = ("roi_align", "roi_pool", "nms", "conv", "norm", "pool", "losses", "paste")


def load():
    """Register every kernel of this backend, then check that no forward/backward pair is half
    registered (a forward kernel's cache means nothing to the reference backward)."""
    from mrcnn_np.dispatch import check_pairs_complete
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    check_pairs_complete("cupy")
