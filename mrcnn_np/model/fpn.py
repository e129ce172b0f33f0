"""Feature Pyramid Network: C2..C5 -> P2..P5, every level with the same width F.

    inner_5 = lateral_5(C5)                                 lateral: 1x1 conv C_k -> F
    inner_k = lateral_k(C_k) + upsample_x2(inner_{k+1})     top-down, k = 4, 3, 2
    P_k     = output_k(inner_k)                             output: 3x3 conv F -> F

Coarse levels carry semantics down to the fine ones, so even P2 (stride 4) "knows" what it sees.
With ``extra="maxpool"`` (torchvision's ``LastLevelMaxPool``, the ``r50_fpn`` preset) a fifth level
``P6 = maxpool_{1x1, stride 2}(P5) = P5[:, :, ::2, ::2]`` (ceil(H5 / 2) rows) gives the RPN a coarser
grid for the largest anchors; the RoI heads never pool from it.

Backward: each ``dP_k`` enters through ``output_k``; walking from P2 upwards, ``d inner_k`` feeds
``lateral_k`` (-> ``dC_k``) and, through the upsampling's backward (a sum over 2x2 blocks), adds to
``d inner_{k+1}``. P6's gradient goes back into P5 through the pooling's backward (each P6 cell to
the P5 cell it copied).
"""
from __future__ import annotations

from .. import functional as F
from .. import nn


class FPN(nn.Module):
    def __init__(self, in_channels, out_channels, rng, dtype, extra="none"):
        super().__init__()
        # NOTE: N(0, 1/fan_in) (the scale of torchvision's FPN init, kaiming_uniform with a=1), half
        # He-normal's variance: these convs have no normalisation after them, so their scale is the
        # features' scale that the RPN and RoI heads start from (docs/training.md, "Box accuracy").
        self.lateral = [nn.Conv2d(c, out_channels, 1, rng=rng, dtype=dtype, std=c ** -0.5)
                        for c in in_channels]
        self.output = [nn.Conv2d(out_channels, out_channels, 3, padding=1, rng=rng, dtype=dtype,
                                 std=(9 * out_channels) ** -0.5) for _ in in_channels]
        self.p6 = nn.MaxPool2d(1, 2, 0) if extra == "maxpool" else None
        self.num_levels = len(in_channels) + (self.p6 is not None)

    def forward(self, feats):
        """feats: [C2, C3, C4, C5] -> [P2, P3, P4, P5] (and P6 with ``extra="maxpool"``)."""
        inner = [None] * len(feats)
        inner[-1] = self.lateral[-1](feats[-1])
        for k in range(len(feats) - 2, -1, -1):
            lat = self.lateral[k](feats[k])
            # inner_k = lat + upsample_x2(inner_{k+1}), upsampling and sum in one pass: each of the four
            # 2x2 sub-grids of lat gets inner_{k+1} added, in place in the 1x1 conv's own output (no
            # upsampled copy, and both operands keep the conv's memory layout)
            for u in (0, 1):
                for v in (0, 1):
                    lat[:, :, u::2, v::2] += inner[k + 1]
            inner[k] = lat
        out = [self.output[k](inner[k]) for k in range(len(feats))]
        return out + [self.p6(out[-1])] if self.p6 else out

    def backward(self, dP):
        """dP: gradients of [P2..P5] (and P6). Returns [dC2..dC5]."""
        dP = list(dP)
        if self.p6:
            dP6 = dP.pop()
            dP[-1] = dP[-1] + self.p6.backward(dP6)
        n = len(dP)
        d_inner = [self.output[k].backward(dP[k]) for k in range(n)]
        dC = [None] * n
        for k in range(n):                                      # fine to coarse: top-down reversed
            if k < n - 1:
                d_inner[k + 1] = d_inner[k + 1] + F.upsample_nearest2d_backward(d_inner[k], 2)
            dC[k] = self.lateral[k].backward(d_inner[k])
        return dC
