"""Anchors: hand-computed grids, the (H, W, A) layout, caching, torchvision's convention."""
import numpy as np
import pytest

from mrcnn_np.detection.anchors import AnchorGenerator, cell_anchors, grid_anchors


def test_two_by_two_map_by_hand():
    gen = AnchorGenerator(sizes=((32,),), aspect_ratios=(1.0,), strides=(16,))
    (a,) = gen([(2, 2)])
    # centres at ((x + 0.5) 16, (y + 0.5) 16) = 8 or 24; a 32 x 32 square around each, row-major
    np.testing.assert_array_equal(a, [[-8, -8, 24, 24], [8, -8, 40, 24],
                                      [-8, 8, 24, 40], [8, 8, 40, 40]])
    assert a.dtype == np.float32


def test_offset_zero_centres_on_cell_corners():
    gen = AnchorGenerator(sizes=((32,),), aspect_ratios=(1.0,), strides=(16,), offset=0.0)
    (a,) = gen([(1, 2)])
    np.testing.assert_array_equal(a, [[-16, -16, 16, 16], [0, -16, 32, 16]])


def test_cell_anchors_sizes_and_ratios():
    cell = cell_anchors((32, 64), (0.5, 1.0, 2.0))
    assert cell.shape == (6, 4)
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    np.testing.assert_allclose(w * h, [32**2, 64**2] * 3)              # area = size^2
    np.testing.assert_allclose(h / w, [0.5, 0.5, 1, 1, 2, 2])           # ratio-major, ratio = h / w
    np.testing.assert_allclose(cell[:, :2], -cell[:, 2:])               # zero-centred


def test_layout_is_h_w_a_like_the_rpn_head_reshape():
    gen = AnchorGenerator(sizes=((16,),), aspect_ratios=(0.5, 1.0, 2.0), strides=(8,))
    h, w = 3, 5
    (anchors,) = gen([(h, w)])
    num_a = gen.num_anchors_per_location()[0]
    assert anchors.shape == (h * w * num_a, 4)
    # a fake RPN head output whose deltas are exactly the anchor itself: channel a*4 + c at (y, x)
    head = np.zeros((1, num_a * 4, h, w))
    cell = gen.cell[0]
    for y in range(h):
        for x in range(w):
            for a in range(num_a):
                head[0, a * 4:(a + 1) * 4, y, x] = cell[a] + [(x + .5) * 8, (y + .5) * 8] * 2
    flat = head.reshape(1, num_a, 4, h, w).transpose(0, 3, 4, 1, 2).reshape(1, h * w * num_a, 4)
    np.testing.assert_allclose(flat[0], anchors, atol=1e-4)
    # and the documented index formula
    y, x, a = 2, 3, 1
    np.testing.assert_allclose(anchors[(y * w + x) * num_a + a], head[0, a * 4:a * 4 + 4, y, x], atol=1e-4)


def test_multi_level():
    gen = AnchorGenerator()                                             # P2..P6, 3 ratios each
    sizes = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    levels = gen(sizes)
    assert [lv.shape[0] for lv in levels] == [h * w * 3 for h, w in sizes]
    for lv, size, stride in zip(levels, (32, 64, 128, 256, 512), (4, 8, 16, 32, 64)):
        area = (lv[:, 2] - lv[:, 0]) * (lv[:, 3] - lv[:, 1])
        np.testing.assert_allclose(area, size**2, rtol=1e-5)
        np.testing.assert_allclose((lv[0, :2] + lv[0, 2:]) / 2, [stride / 2] * 2)   # first centre


def test_cached_and_read_only():
    gen = AnchorGenerator()
    first = gen([(8, 8)] * 5)
    second = gen([(8, 8)] * 5)
    assert all(a is b for a, b in zip(first, second))
    with pytest.raises(ValueError):
        first[0][0, 0] = 1.0
    other = AnchorGenerator()([(8, 8)] * 5)                             # same settings, same cache
    assert other[0] is first[0]
    assert gen([(8, 8)] * 5, dtype=np.float64)[0].dtype == np.float64


def test_empty_map():
    (a,) = AnchorGenerator(sizes=((32,),), strides=(16,))([(0, 4)])
    assert a.shape == (0, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="one entry per level"):
        AnchorGenerator(sizes=((32,), (64,)), strides=(4,))
    with pytest.raises(ValueError, match="feature_sizes: expected 5"):
        AnchorGenerator()([(8, 8)])
    with pytest.raises(ValueError, match="aspect_ratios"):
        cell_anchors((32,), (0.0,))
    with pytest.raises(ValueError, match="offset"):
        AnchorGenerator(offset=1.5)
    with pytest.raises(ValueError, match="feature_size"):
        grid_anchors(cell_anchors((32,), (1.0,)), 4, (2.5, 3))


def test_matches_torchvision_with_its_convention():
    torch = pytest.importorskip("torch")
    anchor_utils = pytest.importorskip("torchvision.models.detection.anchor_utils")
    image_list = pytest.importorskip("torchvision.models.detection.image_list")
    sizes, ratios = ((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3
    theirs = anchor_utils.AnchorGenerator(sizes, ratios)
    images = image_list.ImageList(torch.zeros(1, 3, 64, 96), [(64, 96)])
    feats = [torch.zeros(1, 1, 64 // s, 96 // s) for s in (4, 8, 16)]
    expected = theirs(images, feats)[0].numpy()
    ours = AnchorGenerator(sizes, ratios, strides=(4, 8, 16), offset=0.0, round_base=True)
    got = np.concatenate(ours([(64 // s, 96 // s) for s in (4, 8, 16)]))
    np.testing.assert_array_equal(got, expected)
