"""mrcnn-np: Mask R-CNN from scratch in NumPy, every layer's forward and backward written out.

The backend (``numpy`` by default) is chosen with :func:`set_backend`, ``$MRCNN_BACKEND`` or
``--backend`` on the command line.
"""
from .backend import BackendError, get_backend, set_backend, xp

__version__ = "0.1.0"
__all__ = ["set_backend", "get_backend", "xp", "BackendError", "load_model", "__version__"]


def load_model(checkpoint):
    """The model a checkpoint holds, its weights loaded: ``(model, metadata)``.

    ``model.detect(image)`` then gives, for a ``uint8 (H, W, 3)`` RGB image (or a list of them), the
    detections at the image's own size: ``boxes (D, 4)``, ``labels (D,)``, ``scores (D,)``, ``masks
    (D, H, W)`` bool; ``metadata["extra"]["class_names"][label]`` names a label::

        model, meta = mrcnn_np.load_model("r50_coco.npz")      # from mrcnn-np import-weights
        det = model.detect(np.asarray(PIL.Image.open("photo.jpg").convert("RGB")))[0]
    """
    from .commands import load_model as _load
    return _load(checkpoint)
