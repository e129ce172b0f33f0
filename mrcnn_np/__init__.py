"""mrcnn-np: Mask R-CNN from scratch in NumPy, every layer's forward and backward written out.

The backend (``numpy`` by default) is chosen with :func:`set_backend`, ``$MRCNN_BACKEND`` or
``--backend`` on the command line.
"""
from .backend import BackendError, get_backend, set_backend, xp

__version__ = "0.1.0"
__all__ = ["set_backend", "get_backend", "xp", "BackendError", "__version__"]
