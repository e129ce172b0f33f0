"""The numba backend's Winograd F(2x2, 3x3) convolution against the NumPy reference conv."""
import numpy as np
import pytest

from mrcnn_np.ops.conv import conv2d_forward

winograd = pytest.importorskip("mrcnn_np.backends.numba.winograd")


@pytest.mark.parametrize("shape", [(1, 8, 12, 16, 8), (2, 7, 9, 5, 6), (3, 1, 1, 4, 4), (1, 2, 3, 3, 70),
                                   (2, 15, 4, 9, 3)])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_winograd_equals_the_direct_conv(shape, dtype, tol):
    """Even and odd sizes (a spare tile row / column), one-pixel maps, one or several images."""
    n, h, w, c, k = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    ref, _ = conv2d_forward(x, wt, b, 1, 1)
    out = winograd.conv3x3(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), wt, b)
    assert out.dtype == dtype
    scale = np.abs(ref).max()
    assert np.abs(out.transpose(0, 3, 1, 2) - ref).max() <= tol * scale


def test_winograd_without_bias_and_the_selection_rule():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 6, 6))
    wt = rng.standard_normal((5, 4, 3, 3))
    ref, _ = conv2d_forward(x, wt, None, 1, 1)
    out = winograd.conv3x3(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), wt, None)
    assert np.allclose(out.transpose(0, 3, 1, 2), ref, rtol=0, atol=1e-12)
    assert winograd.applies(1, 256, 256, 200, 304, 3, 3, 1, 1)           # ResNet-50's P2
    assert winograd.applies(100, 256, 256, 14, 14, 3, 3, 1, 1)           # the mask head
    assert winograd.applies(4, 64, 64, 32, 32, 3, 3, 1, 1)               # the demo's P2 (batch of 4)
    assert not winograd.applies(1, 512, 512, 25, 38, 3, 3, 1, 1)         # a small map
    assert not winograd.applies(4, 32, 32, 64, 64, 3, 3, 1, 1)           # too narrow
    assert not winograd.applies(1, 256, 256, 200, 304, 3, 3, 2, 1)       # stride 2
    assert not winograd.applies(1, 3, 64, 400, 400, 3, 3, 1, 1)          # too narrow
