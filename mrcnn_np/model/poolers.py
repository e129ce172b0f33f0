"""Multi-scale RoIAlign: each RoI is pooled from the one FPN level that suits its size.

Level of a RoI of width w and height h (FPN paper, eq. 1, with s0/k0 from the config so that small
images work):  k = clamp(floor(k0 + log2(sqrt(w h) / s0)), 2, 5).  Then
``out[r] = RoIAlign(P_k, roi_r, output_size, 1 / stride_k, sampling_ratio, aligned)``, with
``aligned=True`` (the half-pixel offset, the toy presets) or ``False`` (torchvision's v1 model, which
``r50_fpn`` reproduces). Only the first ``len(strides)`` levels are pooled (never FPN's P6).
Backward sends each RoI's gradient to its own level only.

Two options exist for the paper's ablations (notebook 08): ``op="roi_pool"`` pools with the quantised
RoIPool instead (Table 2c), and ``level=k`` (2..5) pools every RoI from ``P_k`` alone (``level=5``:
one map of stride 32, as in Table 2d) instead of the level assignment above.
"""
from __future__ import annotations

from .. import functional as F
from .. import nn
from ..backend import get_array_module, to_numpy
from ..detection.level_mapper import LevelMapper


class MultiScaleRoIAlign(nn.Module):
    def __init__(self, output_size, sampling_ratio, canonical_scale, canonical_level,
                 strides=(4, 8, 16, 32), op="roi_align", level=0, aligned=True):
        super().__init__()
        if op not in ("roi_align", "roi_pool"):
            raise ValueError(f"op: expected 'roi_align' or 'roi_pool', got {op!r}")
        if level and not 2 <= level < 2 + len(strides):
            raise ValueError(f"level: expected 0 (FPN assignment) or 2..{1 + len(strides)}, got {level!r}")
        self.output_size, self.sampling_ratio = output_size, sampling_ratio
        self.op, self.level, self.aligned = op, level, bool(aligned)
        self.scales = [1.0 / s for s in strides]
        self.mapper = LevelMapper(2, 1 + len(strides), canonical_scale, canonical_level)

    def forward(self, feats, rois):
        """feats: [P2..P5] (N, C, H_k, W_k); rois: (R, 5) [batch_index, x1, y1, x2, y2].
        Returns (R, C, s, s)."""
        feats = feats[: len(self.scales)]
        xp = get_array_module(feats[0])
        if self.level:                                          # every RoI from one level
            levels = xp.full((rois.shape[0],), self.level - 2, dtype=xp.int64)
        else:
            levels = self.mapper(rois[:, 1:])
        c = feats[0].shape[1]
        s = self.output_size
        out = xp.zeros((rois.shape[0], c, s, s), dtype=feats[0].dtype)
        per_level = []
        # group the RoIs by level: a stable sort keeps each level's RoIs in ascending order (what
        # nonzero(levels == k) would give), and the level sizes are the one value read back
        order = xp.argsort(levels, kind="stable")
        counts = to_numpy(xp.bincount(levels, minlength=len(self.scales))).tolist()
        start = 0
        for k, (p, scale) in enumerate(zip(feats, self.scales)):
            idx = order[start:start + counts[k]]
            start += counts[k]
            if counts[k]:
                if self.op == "roi_pool":
                    out[idx], cache = F.roi_pool_forward(p, rois[idx], s, scale)
                else:
                    out[idx], cache = F.roi_align_forward(p, rois[idx], s, scale, self.sampling_ratio,
                                                              self.aligned)
                per_level.append((k, idx, cache))
        self._push(([p.shape for p in feats], per_level))
        return out

    def backward(self, dout):
        """dout: (R, C, s, s). Returns d[P2..P5] (zeros where a level pooled nothing)."""
        shapes, per_level = self._pop()
        xp = get_array_module(dout)
        d_feats = [xp.zeros(shape, dtype=dout.dtype) for shape in shapes]
        for k, idx, cache in per_level:
            backward = F.roi_pool_backward if self.op == "roi_pool" else F.roi_align_backward
            d_feats[k] += backward(dout[idx], cache)
        return d_feats
