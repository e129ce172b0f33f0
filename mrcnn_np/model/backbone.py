"""A ResNet-style backbone with GroupNorm: image -> C2, C3, C4, C5 (strides 4, 8, 16, 32).

GroupNorm instead of BatchNorm is what lets Mask R-CNN train from scratch with a batch of a few
images (He, Girshick, Dollar, "Rethinking ImageNet Pre-training"): its statistics are per image, so
they do not depend on the batch.

    stem:    conv 3x3 stride 2 -> GN -> ReLU                                 (N, C_stem, H/2, W/2)
    stage i: basic blocks; the first has stride 2                            (N, C_i, H/2^(i+1), ...)
    block:   y = ReLU( GN(conv3x3(ReLU(GN(conv3x3(x))))) + shortcut(x) )
             shortcut = x, or GN(conv1x1 stride s (x)) when the shape changes

Backward runs the same pieces in reverse; a residual sum sends its gradient to both branches and the
gradients meet again at the block's input.

Initialisation. Every conv here feeds a GroupNorm, so the block's output does not depend on the scale
of the conv's weights: ``GN(conv(x, a w)) = GN(conv(x, w))``. The scale is not free, though: the
gradient scales as ``1 / a``, so an SGD step turns ``w`` by an angle of about ``lr |g| / |w|``, which
goes as ``lr / a^2``. The init's scale is the backbone's learning rate. We draw ``N(0, 1 / (3 fan_in))``,
the standard deviation of PyTorch's default conv init ``U(+-1/sqrt(fan_in))``; He-normal
(``2 / fan_in``, 6x the variance) made the backbone turn 6x slower at the same ``lr``, part of the
box-AP gap to torchvision (README, "Box accuracy").
"""
from __future__ import annotations

import math

from .. import nn


class ConvNormReLU(nn.Module):
    """conv (no bias: GN's beta is the bias) -> GroupNorm -> optional ReLU."""

    def __init__(self, c_in, c_out, k, stride, groups, rng, dtype, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False, rng=rng,
                              dtype=dtype, std=1.0 / math.sqrt(3 * c_in * k * k))  # see "Initialisation"
        self.norm = nn.GroupNorm(groups, c_out, dtype=dtype)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.norm(self.conv(x))
        return self.relu(x) if self.relu else x

    def backward(self, dout):
        if self.relu:
            dout = self.relu.backward(dout)
        return self.conv.backward(self.norm.backward(dout))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, groups, rng, dtype):
        super().__init__()
        self.conv1 = ConvNormReLU(c_in, c_out, 3, stride, groups, rng, dtype)
        self.conv2 = ConvNormReLU(c_out, c_out, 3, 1, groups, rng, dtype, relu=False)
        self.shortcut = (ConvNormReLU(c_in, c_out, 1, stride, groups, rng, dtype, relu=False)
                         if stride != 1 or c_in != c_out else None)
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = self.shortcut(x) if self.shortcut else x
        return self.relu(self.conv2(self.conv1(x)) + identity)

    def backward(self, dout):
        d_sum = self.relu.backward(dout)                       # the sum's gradient goes to both
        dx = self.conv1.backward(self.conv2.backward(d_sum))
        return dx + (self.shortcut.backward(d_sum) if self.shortcut else d_sum)


class Backbone(nn.Module):
    """images (N, 3, H, W) -> [C2, C3, C4, C5]; ``out_channels`` and ``strides`` describe them."""

    def __init__(self, cfg, rng):
        super().__init__()
        dt, g = cfg.dtype, cfg.gn_groups
        self.stem = ConvNormReLU(3, cfg.stem_channels, 3, 2, g, rng, dt)
        self.stages = []
        c_in = cfg.stem_channels
        for c_out, n_blocks in zip(cfg.stage_channels, cfg.blocks_per_stage):
            blocks = [BasicBlock(c_in if i == 0 else c_out, c_out, 2 if i == 0 else 1, g, rng, dt)
                      for i in range(n_blocks)]
            self.stages.append(Sequential(blocks))
            c_in = c_out
        self.out_channels = tuple(cfg.stage_channels)
        self.strides = (4, 8, 16, 32)

    def forward(self, images):
        x = self.stem(images)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def backward(self, dfeats):
        """dfeats: gradients of [C2..C5]. Returns d(images).
        C_k feeds both the output and stage k+1, so its gradient is the sum of the two."""
        dx = 0
        for stage, df in zip(reversed(self.stages), reversed(dfeats)):
            dx = stage.backward(dx + df)
        return self.stem.backward(dx)


class Sequential(nn.Module):
    """Modules applied in order; backward in reverse order."""

    def __init__(self, modules):
        super().__init__()
        self.layers = list(modules)

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x

    def backward(self, dout):
        for m in reversed(self.layers):
            dout = m.backward(dout)
        return dout
