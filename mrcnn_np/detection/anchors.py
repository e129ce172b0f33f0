"""Anchors: the fixed reference boxes the RPN scores and regresses, A of them at every feature cell.

Cell anchors (one set per FPN level). For each aspect ratio ``r = h / w`` and size ``s`` (the square
root of the anchor's area) the anchor centred at the origin is::

    w = s / sqrt(r),   h = s * sqrt(r)          (so w * h = s^2 and h / w = r)
    cell anchor = (-w/2, -h/2, w/2, h/2)

ordered ratio-major: ``[(r0, s0), (r0, s1), ..., (r1, s0), ...]``; with FPN each level has one size,
so ``A = len(aspect_ratios)`` (3 by default).

Grid. Level ``l`` has stride ``S`` (image pixels per feature cell) and a ``H x W`` map. The anchors of
cell ``(y, x)`` are the cell anchors shifted to its centre::

    c_x = (x + offset) * S,     c_y = (y + offset) * S
    anchor[(y, x, a)] = cell_anchor[a] + (c_x, c_y, c_x, c_y)

# NOTE: the centre offset. Feature cell ``(y, x)`` of a stride-S map summarises image pixels
# ``[x S, (x + 1) S)``, whose centre in continuous coordinates (pixel edges on integers) is
# ``(x + 0.5) S``. We default to ``offset = 0.5`` so anchors sit at those centres, the same half-pixel
# model RoIAlign uses with ``aligned=True`` and the mask paster uses for pixel centres; the anchors then
# cover the image symmetrically. torchvision uses ``offset = 0`` (anchors centred on the cell's top-left
# corner, ``x * S``) and rounds the cell anchors to integers; detectron2 exposes the choice as
# ``ANCHOR_GENERATOR.OFFSET`` (default 0.0). The regression targets absorb either convention; what
# matters is using one consistently. ``offset=0.0, round_base=True`` reproduces torchvision exactly.

Ordering. Each level's anchors are laid out ``(H, W, A)``, flattened row-major::

    index(y, x, a) = (y * W + x) * A + a

which is the order of an RPN head's outputs after the usual reshape::

    deltas:     (N, A*4, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, H*W*A, 4)
    objectness: (N, A,   H, W) -> (N, H, W, A)    -> (N, H*W*A)

Levels are concatenated in order (P2 first) when one array per image is needed.

Grids depend only on (cell anchors, stride, map size, offset, dtype), so they are computed once and
cached; the cached NumPy arrays are read-only (copy before writing into them).
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["AnchorGenerator", "cell_anchors", "grid_anchors"]


def cell_anchors(sizes, aspect_ratios, round_base: bool = False):
    """Zero-centred anchors ``(A, 4)`` float64 for ``sizes`` (sqrt of area) and ``aspect_ratios``
    (``h / w``), ratio-major; ``A = len(aspect_ratios) * len(sizes)``. ``round_base`` rounds the
    coordinates to integers (torchvision's convention)."""
    sizes, ratios = _positive_tuple("sizes", sizes), _positive_tuple("aspect_ratios", aspect_ratios)
    s = np.asarray(sizes, dtype=np.float64)
    r = np.sqrt(np.asarray(ratios, dtype=np.float64))
    w = (s[None, :] / r[:, None]).ravel()           # (R, S) -> (A,), ratio-major
    h = (s[None, :] * r[:, None]).ravel()
    base = np.stack([-w, -h, w, h], axis=1) / 2      # (A, 4)
    return np.round(base) if round_base else base


def _positive_tuple(name, v):
    if isinstance(v, (int, float)):
        v = (v,)
    try:
        t = tuple(float(x) for x in v)
    except TypeError:
        raise ValueError(f"{name}: expected a sequence of positive numbers, got {v!r}") from None
    if not t or not all(x > 0 and math.isfinite(x) for x in t):
        raise ValueError(f"{name}: expected a non-empty sequence of positive numbers, got {v!r}")
    return t


@functools.lru_cache(maxsize=128)
def _cached_grid(base_key, stride, height, width, offset, dtype_name):
    base = np.asarray(base_key, dtype=np.float64).reshape(-1, 4)
    sy, sx = stride
    cx = (np.arange(width, dtype=np.float64) + offset) * sx      # (W,)
    cy = (np.arange(height, dtype=np.float64) + offset) * sy     # (H,)
    shifts = np.zeros((height, width, 1, 4))
    shifts[..., 0::2] = cx[None, :, None, None]
    shifts[..., 1::2] = cy[:, None, None, None]
    out = (shifts + base[None, None]).reshape(-1, 4).astype(dtype_name)  # (H, W, A, 4) -> (H*W*A, 4)
    out.flags.writeable = False
    return out


def grid_anchors(cell, stride, feature_size, offset: float = 0.5, dtype=np.float32):
    """All anchors of one level: ``cell`` ``(A, 4)`` zero-centred anchors, ``stride`` int or
    ``(s_y, s_x)``, ``feature_size = (H, W)``. Returns ``(H*W*A, 4)`` in ``(H, W, A)`` order,
    ``anchor = cell[a] + ((x + offset) s_x, (y + offset) s_y) * 2``. Cached; read-only."""
    cell = np.asarray(cell, dtype=np.float64)
    if cell.ndim != 2 or cell.shape[1] != 4:
        raise ValueError(f"cell: expected an (A, 4) array, got shape {cell.shape}")
    sy, sx = (stride, stride) if np.isscalar(stride) else tuple(stride)
    if not (sy > 0 and sx > 0):
        raise ValueError(f"stride: expected a positive number or (s_y, s_x), got {stride!r}")
    if len(feature_size) != 2 or any(int(v) != v or v < 0 for v in feature_size):
        raise ValueError(f"feature_size: expected (H, W) non-negative integers, got {feature_size!r}")
    h, w = (int(v) for v in feature_size)
    key = tuple(cell.ravel().tolist())
    return _cached_grid(key, (float(sy), float(sx)), h, w, float(offset), np.dtype(dtype).name)


class AnchorGenerator:
    """Multi-level FPN anchors.

    sizes: per level, a tuple of sizes (sqrt of area), e.g. ``((32,), (64,), (128,), (256,), (512,))``;
    a flat tuple of numbers means one size per level. aspect_ratios: ``h / w`` values, one tuple for
    every level or a tuple of tuples, one per level. strides: image pixels per cell of each level.
    offset: anchor centre within its cell (see the module docstring; default 0.5). round_base: round
    the cell anchors to integers (torchvision).

    ``gen(feature_sizes)`` with ``feature_sizes = [(H_2, W_2), (H_3, W_3), ...]`` returns a list with
    one ``(H_l * W_l * A_l, 4)`` array per level, ordered ``(H, W, A)``.
    """

    def __init__(self, sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=(0.5, 1.0, 2.0),
                 strides=(4, 8, 16, 32, 64), offset: float = 0.5, round_base: bool = False):
        sizes = tuple(s if isinstance(s, (tuple, list)) else (s,) for s in sizes)
        if aspect_ratios and not isinstance(aspect_ratios[0], (tuple, list)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if not (len(sizes) == len(aspect_ratios) == len(strides)):
            raise ValueError(f"sizes, aspect_ratios, strides: expected one entry per level each, got "
                             f"{len(sizes)}, {len(aspect_ratios)} and {len(strides)}")
        if not 0.0 <= float(offset) < 1.0:
            raise ValueError(f"offset: expected a number in [0, 1), got {offset!r}")
        self.sizes = tuple(_positive_tuple("sizes", s) for s in sizes)
        self.aspect_ratios = tuple(_positive_tuple("aspect_ratios", r) for r in aspect_ratios)
        self.strides = tuple(_positive_tuple("strides", s)[0] for s in strides)
        self.offset = float(offset)
        self.round_base = bool(round_base)
        self.cell = [cell_anchors(s, r, self.round_base) for s, r in zip(self.sizes, self.aspect_ratios)]

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def num_anchors_per_location(self) -> list[int]:
        """``A_l`` for each level: the RPN head's conv must output ``A_l`` objectness channels."""
        return [c.shape[0] for c in self.cell]

    def strides_for(self, feature_sizes, input_size):
        """Per level ``(input_h // H_l, input_w // W_l)``: torchvision's strides, measured on the padded
        input. They are the nominal ones (4, 8, 16, 32) whenever the input is a multiple of 32; the
        P6 grid (``ceil(H_5 / 2)`` rows) gives others: an 800-row input has a 13-row P6, stride 61."""
        ih, iw = (int(v) for v in input_size)
        return [(ih // h, iw // w) for h, w in feature_sizes]

    def __call__(self, feature_sizes, dtype=np.float32, xp=None, input_size=None):
        """feature_sizes: ``[(H_l, W_l)]`` one per level; ``input_size`` ``(H, W)`` of the padded input
        (strides from :meth:`strides_for`; default: the constructor's ``strides``). Returns a list of
        ``(H_l W_l A_l, 4)`` arrays (read-only NumPy arrays, or ``xp`` arrays if an array module is
        given)."""
        feature_sizes = [tuple(int(v) for v in f) for f in feature_sizes]
        if len(feature_sizes) != self.num_levels:
            raise ValueError(f"feature_sizes: expected {self.num_levels} (H, W) pairs (one per "
                             f"level), got {len(feature_sizes)}")
        strides = (self.strides if input_size is None else self.strides_for(feature_sizes, input_size))
        if xp is not None and xp is not np:
            # uploaded once per (sizes, strides, dtype), not every step: a batch of one shape after
            # another asks for the same anchors
            key = (xp, tuple(feature_sizes), tuple(strides), np.dtype(dtype).str)
            cache = self.__dict__.setdefault("_device_anchors", {})
            if key not in cache:
                if len(cache) >= 16:                      # many input shapes: keep the memory bounded
                    cache.pop(next(iter(cache)))
                cache[key] = [xp.asarray(grid_anchors(c, s, f, self.offset, dtype))
                              for c, s, f in zip(self.cell, strides, feature_sizes)]
            return list(cache[key])
        return [grid_anchors(c, s, f, self.offset, dtype)
                for c, s, f in zip(self.cell, strides, feature_sizes)]

    def __repr__(self):
        return (f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
                f"strides={self.strides}, offset={self.offset}, round_base={self.round_base})")
