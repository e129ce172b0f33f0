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


def _ema_by_weights(y, span):
    """The EMA written as a weighted sum, s_t = (1 - a)^t y_0 + sum_{1 <= j <= t} a (1 - a)^(t - j) y_j,
    independently of visualize.ema's recursion."""
    a = 2 / (span + 1)
    t = np.arange(len(y))
    w = np.where(t[None, :] <= t[:, None], a * (1 - a) ** (t[:, None] - t[None, :]), 0.0)
    w[:, 0] = (1 - a) ** t                                  # the first value seeds the average
    return w @ np.asarray(y, float)


def test_plot_losses_draws_an_ema_over_faint_raw_values_and_the_lr_on_its_own_axis(tmp_path):
    """What `mrcnn-np train` draws into loss_curve.png (the defaults, as train._save calls it): every
    term smoothed by an EMA over its raw values (faint), the learning rate in a panel of its own, and
    a log axis because the terms differ by orders of magnitude."""
    rng = np.random.default_rng(0)
    steps = np.arange(10, 2010, 10)                           # 200 records, one every 10th step
    lr = np.minimum(steps / 200, 1) * 0.02 * 0.5 * (1 + np.cos(np.pi * steps / steps[-1]))
    scales = {"loss_rpn_cls": 0.05, "loss_rpn_box": 0.01, "loss_cls": 0.3, "loss_box": 0.2, "loss_mask": 0.4}
    records = []
    for s, l in zip(steps, lr):
        terms = {k: float(v * np.exp(-s / 800) * rng.uniform(0.5, 1.5)) for k, v in scales.items()}
        records.append({"step": int(s), "lr": float(l), "loss": sum(terms.values()), **terms,
                        "grad_norm": 3.0})
    fig = V.plot_losses(records, x_key="step", save_path=tmp_path / "curve.png")
    assert _png(tmp_path / "curve.png").shape == (500, 800, 3)
    ax = fig.axes[0]
    names = ["loss", *scales]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names      # smoothed lines only
    assert ax.get_yscale() == "log"                           # rpn_box ~ 0.01 vs loss ~ 1
    span = V.default_span(len(records))
    assert span > 1
    raw = {k: np.array([r[k] for r in records]) for k in names}
    labelled = {ln.get_label(): ln for ln in ax.lines}
    for k in names:
        smooth = labelled[k]
        faint, = [ln for ln in ax.lines if ln.get_color() == smooth.get_color() and ln is not smooth]
        np.testing.assert_allclose(faint.get_ydata(), raw[k])
        assert faint.get_alpha() < 0.5 and faint.get_label().startswith("_")   # faint, not in the legend
        np.testing.assert_allclose(smooth.get_ydata(), _ema_by_weights(raw[k], span), rtol=1e-12)
        assert np.std(np.diff(smooth.get_ydata())) < np.std(np.diff(raw[k]))   # and it is smoother
    lr_axes = [a for a in fig.axes if a.get_ylabel() == "learning rate"]
    assert len(lr_axes) == 1 and lr_axes[0] is not ax
    np.testing.assert_allclose(lr_axes[0].lines[0].get_ydata(), lr)
    np.testing.assert_allclose(lr_axes[0].lines[0].get_xdata(), steps)
    assert lr_axes[0].get_xlabel() == "step"
    # smooth=0: the raw values alone, labelled; no lr in the records: no lr panel; close terms: linear
    fig = V.plot_losses([{k: v for k, v in r.items() if k != "lr"} for r in records],
                        keys=["loss_cls", "loss_box"], smooth=0)
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "linear"
    assert [ln.get_label() for ln in fig.axes[0].lines] == ["loss_cls", "loss_box"]


def test_ema_skips_gaps():
    y = np.array([1.0, np.nan, 3.0, 5.0])
    out = V.ema(y, 3)                                          # alpha = 0.5
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3]], [1.0, 2.0, 3.5])
    np.testing.assert_allclose(V.ema(y, 1), y)                 # span 1: no smoothing
