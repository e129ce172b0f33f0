"""The ``numba`` backend's kernels; ``load()`` registers them (see :mod:`mrcnn_np.dispatch`).

One file per op family, as in :mod:`mrcnn_np.ops`; each kernel's docstring says what it computes
(pointing at the reference's equations) and how it is parallelised.
"""
import importlib

#: the op-family files of this backend, each registering its kernels when imported
MODULES: tuple = ("conv", "pool", "norm", "roi_align", "roi_pool", "losses", "nms", "boxes",
                  "interpolate", "paste")


def load():
    """Register every kernel of this backend, then check that no forward/backward pair is half
    registered (a forward kernel's cache means nothing to the reference backward)."""
    from mrcnn_np.dispatch import check_pairs_complete
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    check_pairs_complete("numba")
