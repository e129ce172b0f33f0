"""Fine-tuning (``train --init``, ``--trainable-backbone-layers``): what is kept, what is
re-initialised, what is frozen, and that frozen means untouched and not computed."""
import json

import numpy as np
import pytest

from mrcnn_np.checkpoint import CheckpointError, save_checkpoint
from mrcnn_np.cli import main
from mrcnn_np.commands import open_split
from mrcnn_np.data.shapes import generate_shapes
from mrcnn_np.finetune import PREDICTORS, init_from_checkpoint
from mrcnn_np.import_weights import coco_extra
from mrcnn_np.model import build_model, get_config
from mrcnn_np.train import train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft_shapes")
    generate_shapes(out, 6, 2, seed=0, width=150, height=100)
    return out


@pytest.fixture(scope="module")
def coco_tiny(tmp_path_factory):
    """An r50_tiny checkpoint in the layout import-weights writes: 90 classes, COCO's names."""
    path = tmp_path_factory.mktemp("ft_init") / "r50_tiny_coco.npz"
    model = build_model(get_config("r50_tiny", num_classes=90), seed=7)
    for p in model.named_parameters().values():         # off the init, so 'kept' is visible
        p.data *= np.float32(1.01)
    save_checkpoint(path, model, extra=coco_extra())
    return path


def _arrays(model):
    return {n: p.data.copy() for n, p in {**model.named_parameters(), **model.named_buffers()}.items()}


def _frozen(name, n_frozen):
    return name.startswith(tuple(["backbone.stem.", *(f"backbone.stages.{i}." for i in range(4))][:n_frozen]))


@pytest.mark.parametrize("trainable", [0, 3, 5])
def test_frozen_layers_stay_bit_identical_and_trainable_ones_move(shapes, tmp_path, trainable):
    ds = open_split(shapes, "train")
    model = build_model(get_config("r50_tiny", num_classes=ds.num_classes,
                                   trainable_backbone_layers=trainable), seed=0)
    before = _arrays(model)
    train(model, ds, tmp_path / "run", steps=3, batch_size=2, warmup_steps=0, lr=0.01, progress=False)
    after = _arrays(model)
    n_frozen = 5 - trainable
    params = model.named_parameters()
    frozen = [n for n in params if _frozen(n, n_frozen)]
    assert bool(frozen) == (trainable < 5)
    for name in before:
        if name in params and not _frozen(name, n_frozen):
            assert not np.array_equal(before[name], after[name]), f"trainable {name} did not move"
        else:                                                  # frozen pieces and every FrozenBN
            assert np.array_equal(before[name], after[name]), f"frozen {name} changed"
    assert set(model.trainable_parameters()) == {n for n in params if not _frozen(n, n_frozen)}


def test_frozen_pieces_keep_no_cache_and_run_no_backward(shapes, monkeypatch):
    ds = open_split(shapes, "train")
    model = build_model(get_config("r50_tiny", num_classes=ds.num_classes, trainable_backbone_layers=3))
    images = np.stack([ds[0][0].transpose(2, 0, 1)[:, :96, :128] / 255.0] * 2).astype(np.float32)
    targets = [{"boxes": np.array([[10, 10, 60, 50]], np.float32), "labels": np.array([1]),
                "masks": np.pad(np.ones((1, 40, 50), np.uint8), ((0, 0), (10, 46), (10, 68)))}] * 2

    def refuse(*_):
        raise AssertionError("a frozen piece's backward ran")

    monkeypatch.setattr(model.backbone.stem, "backward", refuse)
    monkeypatch.setattr(model.backbone.stages[0], "backward", refuse)
    model.forward_train(images, targets, np.random.default_rng(0))
    frozen_modules = [model.backbone.stem, model.backbone.stages[0]]

    def caches(m):
        own = len(m._caches)
        for v in vars(m).values():
            for item in (v if isinstance(v, (list, tuple)) else [v]):
                if hasattr(item, "_caches"):
                    own += caches(item)
        return own

    assert all(caches(m) == 0 for m in frozen_modules)       # nothing kept for a backward
    assert caches(model.backbone.stages[1]) > 0
    model.backward()                                          # and the frozen backward never runs
    assert caches(model) == 0


def test_freezing_leaves_the_trainable_gradients_as_they_were(shapes):
    """The gradient of every trainable parameter is the same with the bottom frozen as without
    (float64, same weights, same batch, same draws): freezing only skips work."""
    ds = open_split(shapes, "train")
    grads = []
    for trainable in (5, 2):
        model = build_model(get_config("r50_tiny", num_classes=ds.num_classes, dtype="float64",
                                       trainable_backbone_layers=trainable), seed=0)
        image, target = ds[0]
        batch, sizes, _ = model.transform([image])
        scale = np.array([sizes[0][1] / 150, sizes[0][0] / 100] * 2)
        masks = np.zeros((len(target["masks"]),) + batch.shape[2:], np.uint8)
        t = {"boxes": target["boxes"] * scale, "labels": target["labels"], "masks": masks,
             "resized_size": sizes[0]}
        model.zero_grad()
        model.forward_train(batch, [t], np.random.default_rng(1))
        model.backward()
        grads.append({n: p.grad.copy() for n, p in model.trainable_parameters().items()})
    full, frozen = grads
    assert len(frozen) < len(full)
    for name, g in frozen.items():
        np.testing.assert_allclose(g, full[name], rtol=1e-10, atol=1e-14, err_msg=name)
    assert np.any(full["backbone.stem.conv.weight"])        # unfrozen, the stem does get a gradient


def test_init_reinitialises_the_predictors_for_new_classes_and_keeps_the_rest(coco_tiny):
    model = build_model(get_config("r50_tiny", num_classes=3), seed=0)
    fresh = _arrays(model)
    report = init_from_checkpoint(model, coco_tiny, ["background", "a", "b", "c"])
    src = build_model(get_config("r50_tiny", num_classes=90), seed=7)
    src_arrays = {n: a * np.float32(1.01) if n in src.named_parameters() else a
                  for n, a in _arrays(src).items()}
    reinit = set(report["reinitialised"])
    assert reinit == {n for n in fresh if n.startswith(PREDICTORS)} and len(reinit) == 6
    for name, a in _arrays(model).items():
        if name in reinit:
            assert np.array_equal(a, fresh[name])                   # the new model's own init
        else:
            assert np.array_equal(a, src_arrays[name]), name        # the checkpoint's
    assert report["kept"] == len(fresh) - 6 and report["checkpoint_classes"] == 90


def test_init_with_the_checkpoints_classes_keeps_the_heads(coco_tiny):
    model = build_model(get_config("r50_tiny", num_classes=90), seed=0)
    report = init_from_checkpoint(model, coco_tiny, coco_extra()["class_names"])
    assert report["reinitialised"] == [] and report["kept"] == len(_arrays(model))
    # other names, same count: a different label space, so new predictors
    names = ["background"] + [f"class{k}" for k in range(90)]
    assert len(init_from_checkpoint(model, coco_tiny, names)["reinitialised"]) == 6


def test_init_from_another_architecture_names_the_first_mismatch(coco_tiny):
    demo = build_model(get_config("demo", num_classes=3))
    before = _arrays(demo)
    with pytest.raises(CheckpointError, match=r"'backbone.stem.conv.weight' has shape \(4, 3, 7, 7\) "
                                              r"in the checkpoint \(config r50_tiny\), \(16, 3, 3, 3\) "
                                              r"in the demo model"):
        init_from_checkpoint(demo, coco_tiny)
    assert all(np.array_equal(a, before[n]) for n, a in _arrays(demo).items())   # nothing loaded
    wider = build_model(get_config("r50_tiny", num_classes=90, box_fc=32))
    with pytest.raises(CheckpointError, match=r"roi_heads.box_head.fc6.weight"):
        init_from_checkpoint(wider, coco_tiny)


def test_cli_fine_tunes_coco_to_new_classes_and_coco_to_coco(shapes, coco_tiny, tmp_path, capsys):
    rc = main(["train", "--config", "r50_tiny", "--init", str(coco_tiny), "--data", str(shapes),
               "--out", str(tmp_path / "ft"), "--steps", "2", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    line = next(x for x in err.splitlines() if "--init" in x)
    assert ("re-initialised box_predictor.bbox_pred, box_predictor.cls_score, "
            "mask_predictor.mask_fcn_logits for 3 classes (the checkpoint has 90)") in line
    assert "trainable backbone layers 3 (frozen: conv1, layer1)" in line
    meta = json.loads(str(np.load(tmp_path / "ft" / "checkpoint.npz")["meta"][()]))
    assert meta["config"]["num_classes"] == 3 and meta["config"]["trainable_backbone_layers"] == 3
    # resume without repeating --init keeps the run's frozen layers
    assert main(["train", "--config", "r50_tiny", "--data", str(shapes), "--out", str(tmp_path / "ft"),
                 "--steps", "3", "--batch-size", "2", "--resume"]) == 0
    # COCO -> COCO: the shapes categories renamed and renumbered as COCO ones keep the heads
    coco = tmp_path / "coco_like"
    for split in ("train", "val"):
        src = shapes / split
        (coco / split).mkdir(parents=True)
        (coco / split / "images").symlink_to(src / "images")
        ann = json.loads((src / "annotations.json").read_text())
        ids = {c["id"]: cid for c, cid in zip(ann["categories"], (1, 18, 62))}   # person, dog, chair
        names = coco_extra()["class_names"]
        ann["categories"] = [{"id": ids[c["id"]], "name": names[ids[c["id"]]]} for c in ann["categories"]]
        for a in ann["annotations"]:
            a["category_id"] = ids[a["category_id"]]
        (coco / split / "annotations.json").write_text(json.dumps(ann))
    rc = main(["train", "--config", "r50_tiny", "--init", str(coco_tiny), "--data", str(coco),
               "--out", str(tmp_path / "ft2"), "--steps", "1", "--batch-size", "2",
               "--trainable-backbone-layers", "5"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "heads kept (90 classes, the checkpoint's); trainable backbone layers 5 (nothing frozen)" in err
    assert main(["eval", "--checkpoint", str(tmp_path / "ft2" / "checkpoint.npz"), "--data", str(coco),
                 "--out", str(tmp_path / "m.json")]) == 0


def test_cli_refuses_bad_init_and_layers(shapes, coco_tiny, tmp_path, capsys):
    assert main(["train", "--config", "demo", "--init", str(coco_tiny), "--data", str(shapes),
                 "--out", str(tmp_path / "x"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'backbone.stem.conv.weight' has shape (4, 3, 7, 7)" in err[0]
    assert not (tmp_path / "x" / "checkpoint.npz").exists()
    assert main(["train", "--config", "r50_tiny", "--init", str(tmp_path / "none.npz"), "--data",
                 str(shapes), "--out", str(tmp_path / "y"), "--steps", "1"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--config", "r50_tiny", "--data", str(shapes), "--out", str(tmp_path / "z"),
                 "--trainable-backbone-layers", "6"]) == 2
    assert "--trainable-backbone-layers" in capsys.readouterr().err
