"""The whole model: total loss against finite differences for parameters in every module (float64),
shapes of the outputs, inference, and bad input."""
import numpy as np
import pytest

from mrcnn_np.gradcheck import numerical_gradient
from mrcnn_np.model import LOSS_NAMES, build_model, get_config


def toy_batch(cfg, n=2, seed=0):
    """n images of size S with two filled rectangles each (classes 1 and 2), exact masks."""
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    images = rng.uniform(0, 0.2, (n, 3, s, s))
    targets = []
    for i in range(n):
        boxes, masks = [], []
        for _ in range(2):
            x1, y1 = rng.integers(2, s // 2, 2)
            w, h = rng.integers(s // 6, s // 3, 2)
            m = np.zeros((s, s), np.uint8)
            m[y1:y1 + h, x1:x1 + w] = 1
            images[i, :, y1:y1 + h, x1:x1 + w] += rng.uniform(0.3, 1.0, (3, 1, 1))
            boxes.append([x1, y1, x1 + w, y1 + h])
            masks.append(m)
        targets.append({"boxes": np.array(boxes, float), "labels": np.array([1, 2]),
                        "masks": np.stack(masks)})
    return images, targets


def fixed_proposals(targets, seed=0):
    """Jittered ground truth plus random boxes: enough positives and negatives, never re-ranked."""
    rng = np.random.default_rng(seed)
    out = []
    for t in targets:
        jitter = t["boxes"][rng.integers(0, len(t["boxes"]), 12)] + rng.uniform(-3, 3, (12, 4))
        xy = rng.uniform(0, 40, (8, 2))
        rand = np.concatenate([xy, xy + rng.uniform(6, 24, (8, 2))], 1)
        out.append(np.concatenate([jitter, rand]))
    return out


@pytest.fixture(scope="module")
def tiny64():
    cfg = get_config("tiny", dtype="float64")
    model = build_model(cfg, seed=1)
    # NOTE: zero-initialised biases put some pre-activations exactly on ReLU's kink (a pixel whose
    # inputs are all zero), where finite differences see half a slope; move to a generic point.
    rng = np.random.default_rng(2)
    for name, p in model.named_parameters().items():
        if name.endswith("bias"):
            p.data += rng.normal(0, 0.05, p.data.shape)
    return cfg, model


def test_whole_model_gradient_matches_finite_differences(tiny64):
    cfg, model = tiny64
    images, targets = toy_batch(cfg)
    props = fixed_proposals(targets)

    def total_loss():
        losses = model.forward_train(images, targets, np.random.default_rng(5), proposals=props)
        model.clear_caches()
        return sum(losses.values())

    losses = model.forward_train(images, targets, np.random.default_rng(5), proposals=props)
    assert all(losses[k] > 0 for k in LOSS_NAMES), losses
    model.zero_grad()
    model.backward()
    params = model.named_parameters()
    # every module must be represented: backbone, FPN, RPN head, box head, mask head
    for prefix in ("backbone.stem", "backbone.stages.3", "fpn.lateral", "fpn.output", "rpn.head",
                   "roi_heads.box_head", "roi_heads.mask_head"):
        assert any(name.startswith(prefix) for name in params), prefix
    rng = np.random.default_rng(0)
    # NOTE: two step sizes, and each entry is judged by the one that agrees better. The tiny model has
    # thousands of ReLUs, so a 1e-5 step of some parameter can cross one of their kinks (then the
    # difference quotient is off, by a few 1e-4 relative), while a 1e-6 step is exact there but its
    # rounding (~1e-10 absolute on the loss sum) shows in parameters with small gradients. A wrong
    # gradient is wrong at both step sizes.
    worst = {}
    for name, p in params.items():
        idx = rng.choice(p.data.size, size=min(3, p.data.size), replace=False)
        analytic = p.grad.reshape(-1)[idx]
        errors = [np.abs(numerical_gradient(total_loss, p.data, h, indices=idx).reshape(-1)[idx] - analytic)
                  for h in (1e-5, 1e-6)]
        # relative to the parameter's gradient scale, so near-zero entries do not dominate
        scale = max(np.abs(p.grad).max(), 1e-8)
        worst[name] = np.minimum(*errors).max() / scale
    bad = {k: v for k, v in worst.items() if not v < 1e-5}
    assert not bad, bad


def test_training_step_and_prediction_shapes():
    cfg = get_config("tiny")
    model = build_model(cfg, seed=0)
    images, targets = toy_batch(cfg)
    losses = model.forward_train(images.astype(np.float32), targets, np.random.default_rng(0))
    assert set(losses) == set(LOSS_NAMES) and all(np.isfinite(v) for v in losses.values())
    model.backward()
    assert all(p.grad.shape == p.data.shape and p.grad.dtype == np.float32
               for p in model.named_parameters().values())
    out = model.predict(images.astype(np.float32))
    assert len(out) == 2
    for r in out:
        d = r["boxes"].shape[0]
        assert r["boxes"].shape == (d, 4) and r["scores"].shape == (d,) and r["labels"].shape == (d,)
        assert r["masks"].shape == (d, cfg.image_size, cfg.image_size) and r["masks"].dtype == bool
        assert d <= cfg.detections_per_img
    # inference keeps no caches
    assert not model.backbone.stem.conv._caches


def test_image_without_objects_trains():
    cfg = get_config("tiny")
    model = build_model(cfg, seed=0)
    images, targets = toy_batch(cfg)
    s = cfg.image_size
    targets[1] = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "masks": np.zeros((0, s, s), np.uint8)}
    losses = model.forward_train(images.astype(np.float32), targets, np.random.default_rng(0))
    assert all(np.isfinite(v) for v in losses.values())
    model.backward()
    assert all(np.isfinite(p.grad).all() for p in model.named_parameters().values())


def test_wrong_image_size_is_a_clear_error():
    cfg = get_config("tiny")
    model = build_model(cfg)
    with pytest.raises(ValueError, match=r"images: expected shape \(N, 3, H, W\) with H and W "
                                         r"positive multiples of 32.*\(1, 3, 50, 64\)"):
        model.predict(np.zeros((1, 3, 50, 64), np.float32))
    with pytest.raises(ValueError, match=r"image_sizes: \(70, 64\) is larger than the input 64x64"):
        model.predict(np.zeros((1, 3, 64, 64), np.float32), image_sizes=[(70, 64)])
    with pytest.raises(ValueError, match=r"original_sizes: expected 1 pairs"):
        model.predict(np.zeros((1, 3, 64, 64), np.float32), original_sizes=[(70, 64), (3, 3)])


def test_configs():
    assert get_config("demo").image_size == 128
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="image_size: expected a multiple of 32"):
        get_config("demo", image_size=100)
    cfg = get_config("small")
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("mask_head", ["fcn", "fc"])
def test_an_image_without_proposals_gets_no_detections(mask_head):
    """The RPN can leave an image no proposal (e.g. early in training, all boxes too small): the heads
    then return empty detections rather than fail on a (0, C*7*7) reshape."""
    model = build_model(get_config("tiny", mask_head=mask_head))
    feats = model.fpn(model.backbone(np.zeros((1, 3, 64, 64), np.float32)))
    det = model.roi_heads.predict(feats, [np.zeros((0, 4), np.float32)], [(64, 64)])[0]
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and len(det["labels"]) == 0
