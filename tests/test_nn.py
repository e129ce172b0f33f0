"""Modules are thin: their gradients equal the functional ones, accumulate, and a shared module's
cache stack pairs each backward with its own forward."""
import numpy as np
import pytest

from mrcnn_np import functional as F
from mrcnn_np import nn


def test_conv_module_matches_functional_and_accumulates():
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=rng, dtype="float64")
    x = rng.standard_normal((2, 3, 5, 5))
    out = conv(x)
    ref, cache = F.conv2d_forward(x, conv.weight.data, conv.bias.data, 1, 1)
    np.testing.assert_array_equal(out, ref)
    d = rng.standard_normal(out.shape)
    dx = conv.backward(d)
    rdx, rdw, rdb = F.conv2d_backward(d, cache)
    np.testing.assert_allclose(dx, rdx)
    np.testing.assert_allclose(conv.weight.grad, rdw)
    conv(x)
    conv.backward(d)
    np.testing.assert_allclose(conv.weight.grad, 2 * rdw)
    conv.zero_grad()
    assert not conv.weight.grad.any()


def test_shared_module_pops_caches_in_reverse_order():
    rng = np.random.default_rng(1)
    lin = nn.Linear(4, 2, rng=rng, dtype="float64")
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    lin(a)
    lin(b)
    da, db = rng.standard_normal((3, 2)), rng.standard_normal((5, 2))
    assert lin.backward(db).shape == b.shape
    assert lin.backward(da).shape == a.shape
    np.testing.assert_allclose(lin.weight.grad, db.T @ b + da.T @ a)
    with pytest.raises(RuntimeError, match="more times than forward"):
        lin.backward(da)


def test_named_parameters_walks_submodules_and_lists():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = [nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 1, bias=False)]
            self.norm = nn.GroupNorm(1, 2)

    names = set(Block().named_parameters())
    assert names == {"convs.0.weight", "convs.0.bias", "convs.1.weight", "norm.weight", "norm.bias"}
