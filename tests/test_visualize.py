"""Pictures: every function writes a PNG of the documented size; the overlay colours the masked pixels."""
import json
import os

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from mrcnn_np import visualize as V

H, W = 64, 96                         # zoom defaults to 512 // 96 = 5


def _scene():
    image = np.full((H, W, 3), 128, np.uint8)
    masks = np.zeros((2, H, W), np.uint8)
    masks[0, 10:30, 10:40] = 1
    masks[1, 35:60, 50:90] = 1
    boxes = np.array([[10, 10, 40, 30], [50, 35, 90, 60]], np.float32)
    return image, masks, boxes, np.array([1, 2]), np.array([0.9, 0.7])


def _png(path):
    assert path.stat().st_size > 0
    return np.asarray(Image.open(path).convert("RGB"))


def _no_temporaries(folder):
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]


def test_draw_instances_writes_the_documented_size(tmp_path):
    image, masks, boxes, labels, scores = _scene()
    fig = V.draw_instances(image, boxes, labels, scores, masks, ["bg", "a", "b"], title="t",
                           save_path=tmp_path / "inst.png")
    assert isinstance(fig, Figure)
    assert _png(tmp_path / "inst.png").shape == (H * 5, W * 5, 3)
    _no_temporaries(tmp_path)


def test_mask_overlay_colours_exactly_the_masked_pixels(tmp_path):
    image, masks, _, _, _ = _scene()
    alpha, z = 0.5, 3
    V.draw_instances(image, masks=masks, alpha=alpha, zoom=z, save_path=tmp_path / "m.png")
    png = _png(tmp_path / "m.png")
    assert png.shape == (H * z, W * z, 3)
    for d in range(2):
        expected = np.round((1 - alpha) * 128 + alpha * V.PALETTE[d].astype(float))
        ys, xs = np.nonzero(masks[d])
        # interior pixels (one pixel in from the outline), sampled at the centre of their zoomed block
        inner = (ys > ys.min()) & (ys < ys.max()) & (xs > xs.min()) & (xs < xs.max())
        got = png[ys[inner] * z + z // 2, xs[inner] * z + z // 2]
        assert np.abs(got.astype(int) - expected).max() <= 1
        # the outline takes the full colour
        edge = png[ys.min() * z + z // 2, (xs.min() + 5) * z + z // 2]
        assert np.abs(edge.astype(int) - V.PALETTE[d]).max() <= 1
    outside = ~masks.any(axis=0)
    ys, xs = np.nonzero(outside)
    assert (png[ys * z + z // 2, xs * z + z // 2] == 128).all()        # untouched background


def test_overlay_masks_numbers():
    image, masks, _, _, _ = _scene()
    out = V.overlay_masks(image, masks, colors=[[255, 0, 0], [0, 0, 255]], alpha=0.25, outline=False)
    np.testing.assert_array_equal(out[20, 20], [160, 96, 96])      # 0.75 * 128 + 0.25 * 255 = 159.75
    np.testing.assert_array_equal(out[40, 60], [96, 96, 160])
    np.testing.assert_array_equal(out[0, 0], [128, 128, 128])


def test_image_layouts_are_equivalent():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    chw = u8.transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_array_equal(V.to_rgb_uint8(chw), u8)
    np.testing.assert_array_equal(V.to_rgb_uint8(u8[..., 0])[..., 2], u8[..., 0])
    with pytest.raises(ValueError, match="image: expected"):
        V.to_rgb_uint8(np.zeros((5, 5, 5)))


def test_draw_anchors(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    ys, xs = np.mgrid[4:H:8, 4:W:8]
    centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    anchors = np.concatenate([np.concatenate([centres - s / 2 * r, centres + s / 2 * r], 1)
                              for s in (16, 32) for r in (np.array([1, 1]), np.array([1.4, 0.7]))])
    V.draw_anchors(image, anchors, zoom=2, save_path=tmp_path / "anchors.png")
    png = _png(tmp_path / "anchors.png")
    assert png.shape == (H * 2, W * 2, 3) and png.any()       # something was drawn on black


def test_draw_proposals_and_gt_vs_pred(tmp_path):
    image, masks, boxes, labels, scores = _scene()
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (200, 2))
    before = np.concatenate([xy, xy + rng.uniform(4, 40, (200, 2))], 1)
    V.draw_proposals(image, before, before[:10], save_path=tmp_path / "props.png")
    assert _png(tmp_path / "props.png").shape == (H * 5, 2 * W * 5, 3)
    gt = {"boxes": boxes, "labels": labels, "masks": masks}
    pred = {"boxes": boxes + 2, "labels": labels, "scores": scores, "masks": masks}
    fig = V.draw_gt_vs_pred(image, gt, pred, ["bg", "a", "b"], zoom=2, save_path=tmp_path / "gp.png")
    png = _png(tmp_path / "gp.png")
    assert isinstance(fig, Figure) and png.shape == (H * 2, 2 * W * 2, 3)
    # the left panel shows the GT overlay, the right one the prediction with the same masks
    assert (png[40, 40] != 128).any() and (png[40, W * 2 + 40] != 128).any()
    _no_temporaries(tmp_path)


def test_empty_inputs_still_draw(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    V.draw_instances(image, np.zeros((0, 4)), [], [], np.zeros((0, H, W)), save_path=tmp_path / "a.png")
    V.draw_proposals(image, np.zeros((0, 4)), np.zeros((0, 4)), save_path=tmp_path / "b.png")
    V.draw_anchors(image, np.zeros((0, 4)), save_path=tmp_path / "c.png")
    for name in "abc":
        assert _png(tmp_path / f"{name}.png").shape[0] == H * 5


def test_plot_losses_from_records_and_jsonl(tmp_path):
    names = ["loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"]
    records = [dict({k: float(np.exp(-i / 20) * (j + 1)) for j, k in enumerate(names)}, iter=i,
                    loss=float(np.exp(-i / 20) * 15)) for i in range(50)]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    fig = V.plot_losses(path, smooth=5, save_path=tmp_path / "losses.png")
    assert _png(tmp_path / "losses.png").shape == (500, 800, 3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss"] + names
    assert ax.get_xlabel() == "iter"
    fig = V.plot_losses(records, keys=["loss_mask"], figsize=(4, 3), dpi=50,
                        save_path=tmp_path / "small.png")
    assert _png(tmp_path / "small.png").shape == (150, 200, 3)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [r["loss_mask"] for r in records])
    _no_temporaries(tmp_path)
