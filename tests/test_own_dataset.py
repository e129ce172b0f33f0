"""The worked example of docs/data.md, end to end: a folder of images with LabelMe polygons ->
``labelme-to-coco`` -> ``import-weights`` (a torchvision-layout file, written here at r50_tiny's
widths) -> ``train --init`` 5 steps -> ``eval`` -> ``predict``; and the errors a user meets on the way."""
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mrcnn_np.cli import main
from mrcnn_np.data import CocoDataset
from mrcnn_np.import_weights import model_to_state_dict
from mrcnn_np.model import build_model, get_config
from mrcnn_np.pth import save_state_dict


def _labelme_folder(root, n=6):
    """``n`` 160x120 photos-to-be: a 'balloon' (a 24-gon) and a 'kite' (a triangle) each; image 0
    also has a balloon cut in two by a string (two polygons, one group_id) and a 'kite' rectangle."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 60, (120, 160, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        cx, cy, r = 40 + 5 * i, 50, 18
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        balloon = [[float(cx + r * np.cos(a)), float(cy + r * np.sin(a))] for a in t]
        kite = [[100, 20 + 3 * i], [140, 60], [100, 100 - 2 * i]]
        draw.polygon([tuple(p) for p in balloon], fill=(220, 40, 40))
        draw.polygon([tuple(p) for p in kite], fill=(40, 200, 60))
        shapes = [{"label": "balloon", "points": balloon, "shape_type": "polygon", "group_id": None},
                  {"label": "kite", "points": kite, "shape_type": "polygon", "group_id": None}]
        if i == 0:
            draw.rectangle([10, 90, 30, 110], fill=(40, 200, 60))
            shapes += [{"label": "kite", "points": [[10, 90], [31, 111]], "shape_type": "rectangle"},
                       {"label": "balloon", "points": [[60, 95], [70, 95], [70, 100], [60, 100]],
                        "group_id": 1},
                       {"label": "balloon", "points": [[72, 95], [80, 95], [80, 100], [72, 100]],
                        "group_id": 1}]
        img.save(root / f"photo{i}.jpg", quality=95)
        (root / f"photo{i}.json").write_text(json.dumps(
            {"imagePath": f"photo{i}.jpg", "imageHeight": 120, "imageWidth": 160, "shapes": shapes}))
    return root


def test_labelme_to_coco_writes_what_the_loader_reads(tmp_path):
    src = _labelme_folder(tmp_path / "labelme")
    assert main(["labelme-to-coco", str(src), "--out", str(tmp_path / "coco"), "--val-fraction", "0.34"]) == 0
    train = CocoDataset(tmp_path / "coco/train/images", tmp_path / "coco/train/annotations.json")
    val = CocoDataset(tmp_path / "coco/val/images", tmp_path / "coco/val/annotations.json")
    assert (len(train), len(val)) == (4, 2)
    assert train.class_names == val.class_names == ["background", "balloon", "kite"]
    anns = [json.loads((tmp_path / f"coco/{s}/annotations.json").read_text())["annotations"]
            for s in ("train", "val")]
    assert sum(map(len, anns)) == 6 * 2 + 2                     # the group is one instance
    grouped = [a for a in anns[0] + anns[1] if len(a["segmentation"]) == 2]
    assert len(grouped) == 1 and grouped[0]["area"] == pytest.approx(10 * 5 + 8 * 5)
    assert grouped[0]["bbox"] == [60.0, 95.0, 20.0, 5.0]
    rect = [a for a in anns[0] + anns[1] if a["bbox"] == [10.0, 90.0, 21.0, 21.0]]
    assert len(rect) == 1 and rect[0]["area"] == pytest.approx(21 * 21)
    for ds in (train, val):                                      # masks follow the polygons
        for i in range(len(ds)):
            image, target = ds[i]
            assert image.shape == (120, 160, 3) and target["masks"].shape[1:] == (120, 160)
            assert target["masks"].reshape(len(target["masks"]), -1).sum(1).min() > 0


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["shapes"].append({"label": "balloon", "points": [[1, 1], [5, 5]], "shape_type": "circle"}),
     "photo2.json: shape 2 ('balloon') is a 'circle'"),
    (lambda d: d["shapes"].append({"label": "kite", "points": [[1, 1], [5, 5]]}),
     "photo2.json: shape 2 ('kite'): a polygon needs at least 3 points, got 2"),
    (lambda d: d.update(imageWidth=161), "photo2.json: imageWidth x imageHeight 161 x 120 disagree"),
    (lambda d: d.update(imagePath="gone.jpg"), None),            # found by its stem instead
])
def test_labelme_errors_name_the_file_and_write_nothing(tmp_path, capsys, mutate, message):
    src = _labelme_folder(tmp_path / "labelme")
    doc = json.loads((src / "photo2.json").read_text())
    mutate(doc)
    (src / "photo2.json").write_text(json.dumps(doc))
    rc = main(["labelme-to-coco", str(src), "--out", str(tmp_path / "coco")])
    if message is None:
        assert rc == 0
        return
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "coco").exists() and [p.name for p in tmp_path.iterdir()] == ["labelme"]


def test_worked_example_import_train_eval_predict(tmp_path, capsys):
    src = _labelme_folder(tmp_path / "labelme")
    data = tmp_path / "coco"
    assert main(["labelme-to-coco", str(src), "--out", str(data)]) == 0
    # a torchvision-layout state dict (here r50_tiny's widths; the real one is torchvision's file)
    weights = model_to_state_dict(build_model(get_config("r50_tiny", num_classes=90), seed=1))
    save_state_dict(tmp_path / "tv.pth", weights, "zip")
    assert main(["import-weights", str(tmp_path / "tv.pth"), "--config", "r50_tiny",
                 "--out", str(tmp_path / "coco_init.npz")]) == 0
    capsys.readouterr()
    assert main(["train", "--config", "r50_tiny", "--init", str(tmp_path / "coco_init.npz"),
                 "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "5",
                 "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    assert "re-initialised box_predictor.bbox_pred, box_predictor.cls_score, " \
           "mask_predictor.mask_fcn_logits for 2 classes (the checkpoint has 90)" in err
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 5 and np.isfinite(log[-1]["loss"])
    ckpt = tmp_path / "run" / "checkpoint.npz"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data),
                 "--out", str(tmp_path / "metrics.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "segm"} and set(metrics["segm"]["per_class"]) == {"balloon", "kite"}
    assert main(["predict", str(data / "val" / "images"), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "pred")]) == 0
    images = json.loads((tmp_path / "pred" / "images.json").read_text())["images"]
    assert len(images) == 1 and (tmp_path / "pred" / f"{images[0]['file_name'][:-4]}_pred.png").is_file()


def test_a_malformed_dataset_stops_train_init_with_one_line(tmp_path, capsys):
    src = _labelme_folder(tmp_path / "labelme")
    data = tmp_path / "coco"
    assert main(["labelme-to-coco", str(src), "--out", str(data)]) == 0
    ann_path = data / "train" / "annotations.json"
    ann = json.loads(ann_path.read_text())
    ann["annotations"][0]["category_id"] = 7                      # no such category
    ann_path.write_text(json.dumps(ann))
    build = build_model(get_config("r50_tiny", num_classes=90))
    from mrcnn_np.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "init.npz", build)
    capsys.readouterr()
    assert main(["train", "--config", "r50_tiny", "--init", str(tmp_path / "init.npz"), "--data",
                 str(data), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "annotations.json" in err[0] and "category" in err[0], err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
