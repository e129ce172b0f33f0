"""The paper's ablations as model options (Table 2b-2e): the new pieces' forward against direct formulas,
their backward against finite differences (float64), the whole model's gradient under each variant,
``--set`` parsing, and per-class AP read from pycocotools' precision array."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from conftest_data import shapes_dir  # noqa: F401
from mrcnn_np.gradcheck import gradcheck, numerical_gradient
from mrcnn_np.model import build_model, get_config
from mrcnn_np.model.configs import parse_overrides
from mrcnn_np.model.mask_head_fc import MaskHeadFC
from mrcnn_np.model.poolers import MultiScaleRoIAlign
from mrcnn_np.model.roi_heads import softmax_winner_margin
from mrcnn_np.ops.losses import softmax_mask_cross_entropy_backward, softmax_mask_cross_entropy_forward
from test_model import fixed_proposals, toy_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_softmax_mask_cross_entropy_matches_direct_formula_and_finite_differences():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4, 5, 5)) * 3
    y = rng.integers(0, 4, (3, 5, 5))
    loss, cache = softmax_mask_cross_entropy_forward(z, y)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)                   # (R, C, m, m), direct
    r, q1, q2 = np.meshgrid(np.arange(3), np.arange(5), np.arange(5), indexing="ij")
    assert np.isclose(loss, -np.log(p[r, y, q1, q2]).mean())
    onehot = np.moveaxis(np.eye(4)[y], -1, 1)
    assert np.allclose(softmax_mask_cross_entropy_backward(1.0, cache), (p - onehot) / y.size)
    err = gradcheck(softmax_mask_cross_entropy_forward, softmax_mask_cross_entropy_backward, (z, y),
                    {"logits": 0})
    assert err["logits"] < 1e-7
    # stable for huge logits, and an empty batch is 0
    big = np.zeros((1, 2, 1, 1)); big[0, 0] = 1000.0
    assert np.isclose(softmax_mask_cross_entropy_forward(big, np.ones((1, 1, 1), int))[0], 1000.0)
    assert softmax_mask_cross_entropy_forward(np.zeros((0, 2, 3, 3)), np.zeros((0, 3, 3), int))[0] == 0
    with pytest.raises(ValueError, match="targets"):
        softmax_mask_cross_entropy_forward(z, np.full((3, 5, 5), 4))


def test_softmax_winner_margin_is_positive_exactly_where_the_class_wins():
    z = np.random.default_rng(1).standard_normal((2, 4, 5, 5)) * 5
    margin = softmax_winner_margin(z)
    winner = z.argmax(1)
    for c in range(4):
        assert np.array_equal(margin[:, c] > 0, winner == c)
        others = np.delete(z, c, axis=1).max(1)
        assert np.allclose(margin[:, c], z[:, c] - others)
    two = z[:, :2]                                   # two channels: sigmoid(margin) = softmax
    p = np.exp(two) / np.exp(two).sum(1, keepdims=True)
    assert np.allclose(1 / (1 + np.exp(-softmax_winner_margin(two))), p)


def test_fc_mask_head_shapes_and_gradients():
    rng = np.random.default_rng(0)
    head = MaskHeadFC(2, 4, 6, 3, 8, rng, "float64")
    for p in head.named_parameters().values():
        p.data += rng.normal(0, 0.05, p.data.shape)                    # off ReLU's kink
    x = rng.standard_normal((5, 2, 4, 4))
    out = head(x)
    assert out.shape == (5, 3, 8, 8)
    g = rng.standard_normal(out.shape)
    head.zero_grad()
    dx = head.backward(g)

    def loss():
        v = float((head(x) * g).sum())
        head.clear_caches()
        return v

    assert np.abs(numerical_gradient(loss, x) - dx).max() / np.abs(dx).max() < 1e-7
    for name, p in head.named_parameters().items():
        num = numerical_gradient(loss, p.data)
        assert np.abs(num - p.grad).max() / max(np.abs(p.grad).max(), 1e-12) < 1e-7, name


@pytest.mark.parametrize("op,level", [("roi_pool", 0), ("roi_align", 5), ("roi_pool", 3)])
def test_pooler_variants_route_to_one_level_and_backpropagate(op, level):
    rng = np.random.default_rng(0)
    feats = [rng.permutation(2 * 3 * s * s).reshape(2, 3, s, s) / 7.0 for s in (16, 8, 4, 2)]   # distinct
    rois = np.array([[0, 3.3, 4.1, 20.2, 30.7], [1, 10.0, 2.0, 60.0, 50.0], [0, 1.0, 1.0, 9.0, 7.0]])
    pooler = MultiScaleRoIAlign(2, 2, 32.0, 3, op=op, level=level)
    out = pooler.forward(feats, rois)
    g = rng.standard_normal(out.shape)
    d = pooler.backward(g)
    if level:
        assert all(np.all(dk == 0) for k, dk in enumerate(d) if k != level - 2)
        assert np.any(d[level - 2] != 0)
    for k in range(4):
        def loss():
            v = float((pooler.forward(feats, rois) * g).sum())
            pooler.clear_caches()
            return v
        num = numerical_gradient(loss, feats[k])
        assert np.allclose(num, d[k], atol=1e-6), k


@pytest.mark.parametrize("overrides", [dict(mask_loss="softmax"), dict(mask_head="fc", mask_fc=8),
                                       dict(pool_level=5)], ids=lambda o: ",".join(map(str, o.values())))
def test_whole_model_gradient_under_each_variant(overrides):
    cfg = get_config("tiny", dtype="float64", **overrides)
    model = build_model(cfg, seed=1)
    rng = np.random.default_rng(2)
    for name, p in model.named_parameters().items():
        if name.endswith("bias"):
            p.data += rng.normal(0, 0.05, p.data.shape)
        if name.startswith("roi_heads.mask_head") and name.endswith("bias"):
            p.data += 0.2                   # NOTE: away from ReLU's kink, where differences see half a slope
    images, targets = toy_batch(cfg)
    props = fixed_proposals(targets)

    def total_loss():
        losses = model.forward_train(images, targets, np.random.default_rng(5), proposals=props)
        model.clear_caches()
        return sum(losses.values())

    losses = model.forward_train(images, targets, np.random.default_rng(5), proposals=props)
    assert losses["loss_mask"] > 0
    model.zero_grad()
    model.backward()
    params = {n: p for n, p in model.named_parameters().items() if n.startswith(("roi_heads", "fpn.output"))}
    rng = np.random.default_rng(0)
    for name, p in params.items():
        idx = rng.choice(p.data.size, size=min(3, p.data.size), replace=False)
        numeric = numerical_gradient(total_loss, p.data, 1e-6, indices=idx).reshape(-1)[idx]
        scale = max(np.abs(p.grad).max(), 1e-8)
        # 1e-4: a wrong backward is off by O(1); a ReLU kink crossed by one pixel of many, ~1e-5.
        # 5e-9: central differences of a float64 loss L ~ 4 with h = 1e-6 carry about eps L / h
        # ~ 1e-9 of rounding noise, which matters where a gradient is tiny (the softmax variant's
        # first mask conv: ~4e-6)
        assert np.abs(numeric - p.grad.reshape(-1)[idx]).max() < 1e-4 * scale + 5e-9, name
    out = model.predict(images[:1])[0]
    assert out["masks"].shape[1:] == (cfg.image_size, cfg.image_size)


def test_parse_overrides_and_bad_values():
    assert parse_overrides(["mask_loss=softmax", "pool_level=5", "anchor_sizes=8,16,32,64"]) == {
        "mask_loss": "softmax", "pool_level": 5, "anchor_sizes": (8, 16, 32, 64)}
    with pytest.raises(ValueError, match="fields"):
        parse_overrides(["nonsense=1"])
    with pytest.raises(ValueError, match="int"):
        parse_overrides(["pool_level=five"])
    with pytest.raises(ValueError, match="mask_loss"):
        get_config("tiny", mask_loss="softmx")


def test_per_class_ap_agrees_with_cocoeval_restricted_to_one_class(shapes_dir, tmp_path):
    from mrcnn_np.data import CocoDataset
    from mrcnn_np.evaluate import evaluate_coco, load_coco_gt
    val = CocoDataset(shapes_dir / "val" / "images", shapes_dir / "val" / "annotations.json")
    rng = np.random.default_rng(0)
    preds = {}
    for i in range(len(val)):
        t = val.get_target(i)
        n = len(t["labels"])
        masks = np.stack([np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1)) for m in t["masks"]])
        labels = np.where(rng.uniform(size=n) < 0.2, rng.integers(1, 4, n), t["labels"])   # some wrong
        preds[t["image_id"]] = {"boxes": t["boxes"] + rng.uniform(-3, 3, (n, 4)), "labels": labels,
                                "masks": masks, "scores": rng.uniform(0.1, 1, n)}
    m = evaluate_coco(preds, val, tmp_path / "m.json", per_class=True, results_dir=tmp_path)
    assert json.loads((tmp_path / "m.json").read_text())["segm"]["per_class"] == m["segm"]["per_class"]
    gt = load_coco_gt(val)
    for iou_type in ("bbox", "segm"):
        dt = gt.loadRes(str(tmp_path / f"{iou_type}_results.json"))
        values = []
        for cat in gt.getCatIds():
            with contextlib.redirect_stdout(io.StringIO()):
                ev = COCOeval(gt, dt, iou_type)
                ev.params.imgIds = sorted(preds)
                ev.params.catIds = [cat]            # pycocotools' own AP for this one class
                ev.evaluate(); ev.accumulate(); ev.summarize()
            got = m[iou_type]["per_class"][gt.cats[cat]["name"]]
            assert np.allclose([got["AP"], got["AP50"], got["AP75"]], ev.stats[:3]), (iou_type, cat)
            values.append(got["AP"])
        assert np.isclose(np.mean(values), m[iou_type]["AP"])          # the mean over classes is AP
        assert len(set(np.round(values, 6))) > 1                        # classes really differ
