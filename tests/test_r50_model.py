"""The r50 architecture's pieces, without weights: torchvision's transform sizes and anchors, the
FrozenBN fold, and the whole-model gradient of the width-reduced ``r50_tiny`` (float64)."""
from __future__ import annotations

import numpy as np
import pytest

import mrcnn_np
from mrcnn_np import nn
from mrcnn_np.detection.anchors import AnchorGenerator
from mrcnn_np.gradcheck import numerical_gradient
from mrcnn_np.model import LOSS_NAMES, build_model, get_config
from mrcnn_np.model import backbone as backbone_module
from mrcnn_np.model.transform import resized_size_min_max

from test_model import fixed_proposals, toy_batch


def test_resize_floors_like_torch():
    """``floor(side * scale)`` in doubles: r50-notes (measured with torch) counts 154 short sides in
    1..2999 that come out as 799, and 140 long sides in 1..4999 that come out as 1332."""
    assert resized_size_min_max(390, 600, 800, 1333) == (799, 1230)
    assert resized_size_min_max(300, 451, 800, 1333) == (800, 1202)
    assert resized_size_min_max(512, 512, 800, 1333) == (800, 800)
    assert resized_size_min_max(480, 640, 800, 1333) == (800, 1066)
    short = [s for s in range(1, 3000) if resized_size_min_max(s, s, 800, 1333)[0] == 799]
    assert len(short) == 154 and short[:6] == [97, 161, 167, 193, 194, 195]
    long_ = [s for s in range(1, 5000) if resized_size_min_max(1, s, 800, 1333)[1] == 1332]
    assert len(long_) == 140 and long_[:3] == [149, 153, 298]


def test_anchors_are_torchvisions():
    """Cell anchors rounded (half to even), on the cells' corners, strides = padded size // grid:
    the values torchvision 0.29.1 gives for an 800 x 1216 input (printed with it)."""
    cfg = get_config("r50_fpn")
    gen = AnchorGenerator(sizes=cfg.anchor_sizes, aspect_ratios=cfg.aspect_ratios,
                          strides=(4, 8, 16, 32, 64), offset=cfg.anchor_offset, round_base=cfg.anchor_round)
    assert gen.cell[0].tolist() == [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    assert gen.cell[4].tolist() == [[-362, -181, 362, 181], [-256, -256, 256, 256], [-181, -362, 181, 362]]
    grids = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    assert gen.strides_for(grids, (800, 1216))[4] == (61, 64)
    anchors = gen(grids, input_size=(800, 1216))
    assert sum(len(a) for a in anchors) == 242_991
    assert anchors[4][-3:].tolist() == [[790, 551, 1514, 913], [896, 476, 1408, 988], [971, 370, 1333, 1094]]
    assert anchors[1][5].tolist() == [-15, -45, 31, 45]


@pytest.fixture(scope="module")
def r50_tiny64():
    """``r50_tiny`` in float64 with every FrozenBN and bias moved off its identity / zero start, so
    the fold and the gradients are exercised at a generic point."""
    model = build_model(get_config("r50_tiny", dtype="float64"), seed=3)
    rng = np.random.default_rng(4)
    for name, b in model.named_buffers().items():
        if name.endswith("running_var"):
            b.data[...] = rng.uniform(0.5, 2.0, b.data.shape)
        elif name.endswith("weight"):
            b.data[...] = rng.uniform(0.5, 1.5, b.data.shape)
        else:
            b.data[...] = rng.normal(0, 0.2, b.data.shape)
    for name, p in model.named_parameters().items():
        if name.endswith("bias"):
            p.data += rng.normal(0, 0.05, p.data.shape)
    return model


def _batch(model):
    cfg = model.config
    images, targets = toy_batch(get_config("tiny", image_size=128), n=2, seed=1)
    return images.astype(cfg.dtype), targets


def test_the_frozen_bn_fold_changes_nothing(r50_tiny64, monkeypatch):
    """conv -> FrozenBN as two ops, and as one conv with the BN folded in: the same losses and the
    same gradients (float64)."""
    model = r50_tiny64
    images, targets = _batch(model)
    props = fixed_proposals(targets)
    runs = []
    for fold in (True, False):
        monkeypatch.setattr(backbone_module, "FOLD_FROZEN_BN", fold)
        losses = model.forward_train(images, targets, np.random.default_rng(5), proposals=props)
        model.zero_grad()
        model.backward()
        runs.append((losses, {k: p.grad.copy() for k, p in model.named_parameters().items()}))
        with nn.no_cache():
            runs[-1] += (model.backbone(images),)
    (l1, g1, c1), (l2, g2, c2) = runs
    for k in LOSS_NAMES:
        assert abs(l1[k] - l2[k]) <= 1e-12 * max(1, abs(l2[k])), k
    for k in g1:
        assert np.allclose(g1[k], g2[k], rtol=1e-10, atol=1e-14), k
    for a, b in zip(c1, c2):
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_r50_tiny_whole_model_gradient(r50_tiny64, backend):
    """The total loss's gradient for parameters of every module of the r50 topology (7x7 stem and
    max-pool, bottlenecks with the folded FrozenBN, FPN with P6, RPN on five levels, heads with a
    background mask channel) against central differences, as tests/test_model.py does for ``tiny``."""
    previous = mrcnn_np.get_backend().name
    mrcnn_np.set_backend(backend)
    try:
        model = r50_tiny64
        images, targets = _batch(model)
        props = fixed_proposals(targets)
        SEED = 2
        # NOTE: r50_tiny samples 64 of 4,092 anchors per image, and only 60 lie on P5/P6; the sampler
        # seed must draw some of them, or fpn.output.3 gets no gradient (the assertion below checks
        # that every listed parameter has one, so a seed that misses them fails loudly)
        def total_loss():
            losses = model.forward_train(images, targets, np.random.default_rng(SEED), proposals=props)
            model.clear_caches()
            return sum(losses.values())

        losses = model.forward_train(images, targets, np.random.default_rng(SEED), proposals=props)
        assert all(losses[k] > 0 for k in LOSS_NAMES), losses
        model.zero_grad()
        model.backward()
        params = model.named_parameters()
        names = ["backbone.stem.conv.weight", "backbone.stages.0.layers.0.conv1.conv.weight",
                 "backbone.stages.1.layers.0.conv2.conv.weight", "backbone.stages.2.layers.1.conv3.conv.weight",
                 "backbone.stages.3.layers.0.shortcut.conv.weight", "fpn.lateral.3.weight",
                 "fpn.output.3.bias", "fpn.output.0.weight", "rpn.head.conv.weight", "rpn.head.cls.weight",
                 "roi_heads.box_head.fc6.weight", "roi_heads.box_head.bbox_pred.weight",
                 "roi_heads.mask_head.convs.0.weight", "roi_heads.mask_head.logits.weight"]
        rng = np.random.default_rng(0)
        worst = {}
        for name in names:
            p = params[name]
            assert np.abs(p.grad).max() > 0, name
            idx = rng.choice(p.data.size, size=min(3, p.data.size), replace=False)
            analytic = p.grad.reshape(-1)[idx]
            # NOTE: as in tests/test_model.py, each entry is judged at the step that agrees best: a
            # small step's rounding shows on parameters whose gradient is tiny (P5's output bias,
            # ~1e-5: 1e-4 relative at h = 1e-6, 1e-6 at h = 1e-4), a large one may cross a ReLU kink.
            errors = [np.abs(numerical_gradient(total_loss, p.data, h, indices=idx).reshape(-1)[idx] - analytic)
                      for h in (1e-4, 1e-5, 1e-6)]
            worst[name] = np.min(errors, axis=0).max() / max(np.abs(p.grad).max(), 1e-8)
        bad = {k: v for k, v in worst.items() if not v < 1e-5}
        assert not bad, bad
        # P6 feeds the RPN only; its gradient reaches P5's output conv through the pooling
        assert np.abs(params["fpn.output.3.weight"].grad).max() > 0
    finally:
        mrcnn_np.set_backend(previous)


def test_frozen_batch_norm_buffers_get_no_gradient_and_round_trip(tmp_path, r50_tiny64):
    from mrcnn_np.checkpoint import load_checkpoint, save_checkpoint
    model = r50_tiny64
    buffers = model.named_buffers()
    assert len(buffers) == 4 * 53 and not any(hasattr(b, "grad") for b in buffers.values())
    assert not set(buffers) & set(model.named_parameters())
    path = save_checkpoint(tmp_path / "c.npz", model)
    other = build_model(get_config("r50_tiny", dtype="float64"), seed=9)
    load_checkpoint(path, other)
    for k, b in other.named_buffers().items():
        assert np.array_equal(b.data, buffers[k].data), k


def test_python_entry_point_detects_at_the_original_size(tmp_path):
    """``mrcnn_np.load_model`` + ``model.detect`` on a 640 x 480 photo: everything at 480 x 640."""
    from mrcnn_np.checkpoint import save_checkpoint
    model = build_model(get_config("r50_tiny"), seed=0)
    path = save_checkpoint(tmp_path / "tiny.npz", model)
    loaded, meta = mrcnn_np.load_model(path)
    assert meta["config"]["name"] == "r50_tiny"
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    det, = loaded.detect(image)
    d = len(det["boxes"])
    assert det["masks"].shape == (d, 480, 640) and det["masks"].dtype == bool
    assert det["labels"].shape == det["scores"].shape == (d,)
    assert (det["boxes"] >= 0).all() and (det["boxes"][:, 2] <= 640).all() and (det["boxes"][:, 3] <= 480).all()
    # the transform: short side 128 (r50_tiny's min_size), long side at most 192
    batch, sizes, originals = loaded.transform([image])
    assert sizes == [(128, 170)] and batch.shape == (1, 3, 128, 192) and originals == [(480, 640)]


def test_training_batches_of_r50_presets_go_through_the_model_transform(tmp_path):
    """``train`` feeds ``resize="min_max"`` presets the model's own transform (torchvision's short-side
    rule and normalisation, as at inference), with boxes and masks following the image."""
    from mrcnn_np.commands import open_split
    from mrcnn_np.data.loader import load_sample
    from mrcnn_np.data.shapes import generate_shapes
    from mrcnn_np.train import train
    generate_shapes(tmp_path / "s", 3, 1, seed=0, width=150, height=100)
    ds = open_split(tmp_path / "s", "train")
    model = build_model(get_config("r50_tiny", num_classes=ds.num_classes), seed=0)
    image, target = ds[0]
    x, t = load_sample(ds, 0, model.transform)
    assert x.shape == (3, 128, 192) and t["resized_size"] == (128, 192)
    assert np.array_equal(x, model.transform.one(image))                 # normalised: mean 0-ish
    assert x.min() < 0
    f = np.array([192 / 150, 128 / 100] * 2, np.float32)
    assert np.allclose(t["boxes"], target["boxes"] * f, atol=1e-4)
    assert t["masks"].shape[1:] == (128, 192)
    summary = train(model, ds, tmp_path / "run", steps=2, batch_size=2, progress=False)
    assert summary["step"] == 2 and all(np.isfinite(v) for v in summary["final_losses"].values())
