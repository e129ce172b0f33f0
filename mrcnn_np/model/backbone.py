"""A ResNet backbone: image -> C2, C3, C4, C5 (strides 4, 8, 16, 32).

Two variants from the same pieces, chosen by the config:

**The toy presets** (``block="basic"``, ``norm="group"``, ``stem="conv3x3"``). GroupNorm instead of
BatchNorm is what lets Mask R-CNN train from scratch with a batch of a few images (He, Girshick,
Dollar, "Rethinking ImageNet Pre-training"): its statistics are per image, so they do not depend on
the batch::

    stem:    conv 3x3 stride 2 -> GN -> ReLU                                 (N, C_stem, H/2, W/2)
    stage i: basic blocks; the first has stride 2                            (N, C_i, H/2^(i+1), ...)
    block:   y = ReLU( GN(conv3x3(ReLU(GN(conv3x3(x))))) + shortcut(x) )
             shortcut = x, or GN(conv1x1 stride s (x)) when the shape changes

**ResNet-50** (``r50_fpn``: ``block="bottleneck"``, ``norm="frozen_bn"``, ``stem="conv7x7_pool"``),
torchvision's ``resnet50`` v1.5 with FrozenBatchNorm::

    stem:    conv 7x7 stride 2 -> BN -> ReLU -> max-pool 3x3 stride 2        (N, 64, H/4, W/4)
    stage i: 3, 4, 6, 3 bottlenecks; the first of stages 2..4 has stride 2   (N, 256 * 2^(i-1), ...)
    block:   y = ReLU( BN(conv1x1(ReLU(BN(conv3x3_s(ReLU(BN(conv1x1(x)))))))) + shortcut(x) )
             width C_i / 4 inside; shortcut = x, or BN(conv1x1 stride s (x)) in the first block
             # NOTE: v1.5: the stride sits on the 3x3 conv, not on the first 1x1 (v1).

A conv followed by a frozen BatchNorm runs as one conv with the BN folded into its weights and bias
(:func:`mrcnn_np.ops.norm.fold_frozen_batch_norm`), in training as in inference: the BN is affine,
so ``d loss / dW = (d loss / dW') * s`` and the input gradient is the folded conv's. The checkpoint
keeps the conv and the BN apart, with torchvision's names.

Backward runs the same pieces in reverse; a residual sum sends its gradient to both branches and the
gradients meet again at the block's input.

Initialisation. Every conv here feeds a GroupNorm, so the block's output does not depend on the scale
of the conv's weights: ``GN(conv(x, a w)) = GN(conv(x, w))``. The scale is not free, though: the
gradient scales as ``1 / a``, so an SGD step turns ``w`` by an angle of about ``lr |g| / |w|``, which
goes as ``lr / a^2``. The init's scale is the backbone's learning rate. We draw ``N(0, 1 / (3 fan_in))``,
the standard deviation of PyTorch's default conv init ``U(+-1/sqrt(fan_in))``; He-normal
(``2 / fan_in``, 6x the variance) made the backbone turn 6x slower at the same ``lr``, part of the
box-AP gap to torchvision (docs/training.md, "Box accuracy").
"""
from __future__ import annotations

import math

from .. import functional as F
from .. import nn
from ..ops.norm import fold_frozen_batch_norm

#: Fold each frozen BatchNorm into the conv before it (the default; see the module docstring).
#: False runs conv and BN as two ops, the form a reader can check the fold against.
FOLD_FROZEN_BN = True


class Norm:
    """What normalises the backbone: ``Norm("group", groups=8)`` or ``Norm("frozen_bn", eps=0.0)``."""

    def __init__(self, kind, groups=8, eps=0.0):
        self.kind, self.groups, self.eps = kind, groups, eps

    @classmethod
    def of(cls, cfg):
        return cls(cfg.norm, cfg.gn_groups, cfg.frozen_bn_eps)

    def make(self, channels, dtype):
        if self.kind == "group":
            return nn.GroupNorm(self.groups, channels, dtype=dtype)
        return nn.FrozenBatchNorm2d(channels, eps=self.eps, dtype=dtype)


class ConvNormReLU(nn.Module):
    """conv (no bias: the norm's shift is the bias) -> GroupNorm or FrozenBatchNorm -> optional ReLU.

    ``norm`` is a :class:`Norm`, or an int (GroupNorm groups, the toy presets' form)."""

    def __init__(self, c_in, c_out, k, stride, norm, rng, dtype, relu=True):
        super().__init__()
        norm = norm if isinstance(norm, Norm) else Norm("group", groups=norm)
        # see "Initialisation"; under a frozen BN (pre-trained weights are loaded over it) torchvision's
        # ResNet init, He-normal over the fan-out
        std = (1.0 / math.sqrt(3 * c_in * k * k) if norm.kind == "group"
               else math.sqrt(2.0 / (c_out * k * k)))
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False, rng=rng,
                              dtype=dtype, std=std)
        self.norm = norm.make(c_out, dtype)
        self.relu = nn.ReLU(inplace=True) if relu else None
        self._fold = isinstance(self.norm, nn.FrozenBatchNorm2d)

    def forward(self, x):
        if self._fold and FOLD_FROZEN_BN:
            x = self._folded_forward(x)
        else:
            x = self.norm(self.conv(x))
        return self.relu(x) if self.relu else x

    def _folded_forward(self, x):
        conv = self.conv
        w, b = fold_frozen_batch_norm(conv.weight.data, None, *self.norm.arrays(), self.norm.eps)
        out, cache = F.conv2d_forward(x, w, b, conv.stride, conv.padding)
        self._push(cache)
        return out

    def backward(self, dout):
        if self.relu:
            dout = self.relu.backward(dout)
        if self._fold and FOLD_FROZEN_BN:
            dx, dw, _ = F.conv2d_backward(dout, self._pop())
            scale = self.norm.arrays()[0] * (1 / (self.norm.running_var.data + self.norm.eps) ** 0.5)
            self.conv.weight.grad += dw * scale.reshape(-1, 1, 1, 1)      # W' = W s  =>  dW = dW' s
            return dx
        return self.conv.backward(self.norm.backward(dout))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, norm, rng, dtype):
        super().__init__()
        self.conv1 = ConvNormReLU(c_in, c_out, 3, stride, norm, rng, dtype)
        self.conv2 = ConvNormReLU(c_out, c_out, 3, 1, norm, rng, dtype, relu=False)
        self.shortcut = (ConvNormReLU(c_in, c_out, 1, stride, norm, rng, dtype, relu=False)
                         if stride != 1 or c_in != c_out else None)
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = self.shortcut(x) if self.shortcut else x
        return self.relu(self.conv2(self.conv1(x)) + identity)

    def backward(self, dout):
        d_sum = self.relu.backward(dout)                       # the sum's gradient goes to both
        dx = self.conv1.backward(self.conv2.backward(d_sum))
        return dx + (self.shortcut.backward(d_sum) if self.shortcut else d_sum)


class Bottleneck(nn.Module):
    """ResNet-50's block (v1.5): 1x1 down to ``width``, 3x3 with the stride, 1x1 up to ``c_out``."""

    def __init__(self, c_in, c_out, width, stride, norm, rng, dtype):
        super().__init__()
        self.conv1 = ConvNormReLU(c_in, width, 1, 1, norm, rng, dtype)
        self.conv2 = ConvNormReLU(width, width, 3, stride, norm, rng, dtype)
        self.conv3 = ConvNormReLU(width, c_out, 1, 1, norm, rng, dtype, relu=False)
        self.shortcut = (ConvNormReLU(c_in, c_out, 1, stride, norm, rng, dtype, relu=False)
                         if stride != 1 or c_in != c_out else None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = self.shortcut(x) if self.shortcut else x
        y = self.conv3(self.conv2(self.conv1(x)))
        y += identity                                           # the conv's own output buffer
        return self.relu(y)

    def backward(self, dout):
        d_sum = self.relu.backward(dout)                       # the sum's gradient goes to both
        dx = self.conv1.backward(self.conv2.backward(self.conv3.backward(d_sum)))
        return dx + (self.shortcut.backward(d_sum) if self.shortcut else d_sum)


class Stem(ConvNormReLU):
    """``conv3x3``: conv 3x3/2 -> norm -> ReLU (stride 2). ``conv7x7_pool``: conv 7x7/2 pad 3 -> norm
    -> ReLU -> max-pool 3x3/2 pad 1 (stride 4, torchvision's ResNet)."""

    def __init__(self, kind, c_out, norm, rng, dtype):
        super().__init__(3, c_out, 3 if kind == "conv3x3" else 7, 2, norm, rng, dtype)
        self.pool = nn.MaxPool2d(3, 2, 1) if kind == "conv7x7_pool" else None
        self.stride = 2 if self.pool is None else 4

    def forward(self, x):
        x = super().forward(x)
        return self.pool(x) if self.pool else x

    def backward(self, dout):
        return super().backward(self.pool.backward(dout) if self.pool else dout)


class Backbone(nn.Module):
    """images (N, 3, H, W) -> [C2, C3, C4, C5]; ``out_channels`` and ``strides`` describe them."""

    def __init__(self, cfg, rng):
        super().__init__()
        dt, norm = cfg.dtype, Norm.of(cfg)
        self.stem = Stem(cfg.stem, cfg.stem_channels, norm, rng, dt)
        self.stages = []
        c_in = cfg.stem_channels
        for s, (c_out, n_blocks) in enumerate(zip(cfg.stage_channels, cfg.blocks_per_stage)):
            # the stem brings the conv3x3 variant to stride 2, the 7x7 + pool to stride 4 (C2 is
            # already there: torchvision's layer1 has stride 1)
            first_stride = 2 if (s > 0 or self.stem.stride == 2) else 1
            blocks = []
            for i in range(n_blocks):
                cin_i, stride = (c_in, first_stride) if i == 0 else (c_out, 1)
                if cfg.block == "bottleneck":
                    blocks.append(Bottleneck(cin_i, c_out, c_out // cfg.bottleneck_expansion, stride,
                                             norm, rng, dt))
                else:
                    blocks.append(BasicBlock(cin_i, c_out, stride, norm, rng, dt))
            self.stages.append(Sequential(blocks))
            c_in = c_out
        self.out_channels = tuple(cfg.stage_channels)
        self.strides = (4, 8, 16, 32)
        # torchvision's trainable_backbone_layers: of the pieces (conv1, layer1, ..., layer4), the top
        # N train and the bottom 5 - N are frozen
        self.frozen = 5 - cfg.trainable_backbone_layers

    def pieces(self):
        """``[stem, stage 1, ..., stage 4]``: torchvision's ``conv1, layer1, ..., layer4``, bottom up."""
        return [self.stem, *self.stages]

    def frozen_prefixes(self):
        """Parameter-name prefixes of the frozen pieces (``"stem."``, ``"stages.0."``, ...)."""
        return ["stem.", *(f"stages.{i}." for i in range(4))][:self.frozen]

    def forward(self, images):
        x, feats = images, []
        for k, piece in enumerate(self.pieces()):
            if k < self.frozen:
                # NOTE: a frozen piece's backward never runs, so it keeps no cache (its activations
                # are freed as soon as the next piece has read them) and its ReLUs work in place.
                with nn.no_cache():
                    x = piece(x)
            else:
                x = piece(x)
            if k > 0:
                feats.append(x)                                 # C2..C5
        return feats

    def backward(self, dfeats):
        """dfeats: gradients of [C2..C5]. Returns d(images), or None when a piece is frozen: the
        backward stops at the first frozen piece (nothing below it trains, so nothing is computed).
        C_k feeds both the output and stage k+1, so its gradient is the sum of the two."""
        dx = 0
        for k in range(4, 0, -1):                               # stage k = piece k, with C_(k+1)
            if k < self.frozen:
                return None
            dx = self.stages[k - 1].backward(dx + dfeats[k - 1])
        return None if self.frozen else self.stem.backward(dx)


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
