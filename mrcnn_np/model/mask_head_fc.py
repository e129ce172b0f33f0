"""The MLP mask head the paper compares against (Table 2e): fully connected, so no spatial layout.

    RoIAlign (R, C, s, s) -> flatten (R, C s^2) -> FC -> ReLU -> FC -> ReLU -> FC -> (R, K, m, m)

The last layer has ``K m^2`` outputs that are only *reshaped* into K masks of m x m: no output pixel
knows where it is, every one depends on every input cell. The fully convolutional head
(``MaskHead`` in ``roi_heads.py``) keeps the layout instead; notebook 07 trains both.

Backward, each layer in reverse (``nn.Linear`` and ``nn.ReLU`` hold their own caches)::

    dh2 = dout.reshape(R, K m^2) @ W3          dW3 = dout^T h2, db3 = sum_r dout
    dh1 = relu'(a2) * dh2 @ W2 ...             dx = relu'(a1) * dh1 @ W1, reshaped to (R, C, s, s)
"""
from __future__ import annotations

from .. import nn


class MaskHeadFC(nn.Module):
    def __init__(self, in_channels, pool, fc, num_classes, mask_size, rng, dtype):
        super().__init__()
        self.out_shape = (num_classes, mask_size, mask_size)
        self.fc1 = nn.Linear(in_channels * pool * pool, fc, rng=rng, dtype=dtype)
        self.fc2 = nn.Linear(fc, fc, rng=rng, dtype=dtype)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.logits = nn.Linear(fc, num_classes * mask_size * mask_size, rng=rng, dtype=dtype, std=0.001)

    def forward(self, x):
        """x (R, C, s, s) -> mask logits (R, K, m, m)."""
        r, c, s, _ = x.shape
        self._push(x.shape)
        h = self.relu1(self.fc1(x.reshape(r, c * s * s)))            # (R, C, s, s) -> (R, C s^2) -> (R, fc)
        h = self.relu2(self.fc2(h))
        return self.logits(h).reshape((r,) + self.out_shape)         # (R, K m^2) -> (R, K, m, m)

    def backward(self, dout):
        """dout (R, K, m, m) -> dx (R, C, s, s)."""
        in_shape = self._pop()
        d = self.logits.backward(dout.reshape(dout.shape[0], -1))
        d = self.fc1.backward(self.relu1.backward(self.fc2.backward(self.relu2.backward(d))))
        return d.reshape(in_shape)
