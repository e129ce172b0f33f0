"""Write files atomically: into a temporary file in the same folder, then ``os.replace``.

A crash or an exception leaves either the old file or the new one at ``path``, never a truncated one,
and no temporary file behind. The new file gets the usual permissions (``0o666`` less the umask),
not the owner-only ``0o600`` that ``tempfile.mkstemp`` gives.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_png"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: into a temporary file in the same directory, then
    ``os.replace`` (an atomic rename on POSIX and Windows). A crash leaves either the old file or the new
    one, never a truncated one. The directory must exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        # NOTE: the temporary file must not outlive a failed write (it would be a half-written file).
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path, obj, indent: int | None = None) -> None:
    """``json.dumps(obj)`` written atomically (see :func:`atomic_write_bytes`). Keys keep insertion
    order, so the same object always gives the same bytes."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))


def atomic_write_png(path, image: np.ndarray) -> None:
    """Save a ``uint8`` image ``(H, W, 3)`` or ``(H, W)`` as PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
