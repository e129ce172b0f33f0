"""COCO evaluation: perfect and degraded predictions, agreement with pycocotools run by hand, edge cases."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest_data import coco_dict, rect_polygon, shapes_dir, write_json, write_png  # noqa: F401
from mrcnn_np.data import CocoDataset
from mrcnn_np.evaluate import METRIC_KEYS, evaluate_coco, predictions_to_coco_results

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def val(shapes_dir):
    return CocoDataset(shapes_dir / "val" / "images", shapes_dir / "val" / "annotations.json")


def _perfect(ds):
    preds = {}
    for i in range(len(ds)):
        t = ds.get_target(i)
        preds[t["image_id"]] = {"boxes": t["boxes"], "labels": t["labels"], "masks": t["masks"],
                                "scores": np.linspace(0.9, 0.5, len(t["labels"]))}
    return preds


def _noisy(ds, seed=0):
    """Jittered boxes, shifted masks, random scores and one false positive per image."""
    rng = np.random.default_rng(seed)
    preds = {}
    for i in range(len(ds)):
        t = ds.get_target(i)
        n = len(t["labels"])
        boxes = t["boxes"] + rng.uniform(-4, 4, (n, 4)).astype(np.float32)
        masks = np.stack([np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1)) for m in t["masks"]])
        fp_mask = np.zeros((1,) + masks.shape[1:], np.uint8)
        fp_mask[0, 10:30, 50:90] = 1
        preds[t["image_id"]] = {
            "boxes": np.concatenate([boxes, [[50, 10, 90, 30]]]),
            "labels": np.concatenate([t["labels"], [rng.integers(1, 4)]]),
            "masks": np.concatenate([masks, fp_mask]),
            "scores": rng.uniform(0.05, 1.0, n + 1)}
    return preds


def _by_hand(gt_path, results_path, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(results_path))
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_perfect_predictions_score_one(val, tmp_path):
    out = tmp_path / "metrics.json"
    m = evaluate_coco(_perfect(val), val, out)
    assert list(m) == ["bbox", "segm"]
    for t in ("bbox", "segm"):
        assert list(m[t]) == list(METRIC_KEYS)
        for k in ("AP", "AP50", "AP75", "AR100"):
            assert m[t][k] == pytest.approx(1.0)
        assert all(m[t][k] == pytest.approx(1.0) or m[t][k] == -1.0 for k in ("APs", "APm", "APl"))
    assert json.loads(out.read_text()) == m
    assert os.listdir(tmp_path) == ["metrics.json"]          # no temporary file left behind


def test_shifted_predictions_score_lower(val):
    preds = _perfect(val)
    for p in preds.values():
        p["boxes"] = p["boxes"] + 6
        p["masks"] = np.roll(p["masks"], (6, 6), axis=(1, 2))
    m = evaluate_coco(preds, val)
    for t in ("bbox", "segm"):
        assert 0.0 <= m[t]["AP"] < 0.8 and m[t]["AP75"] < 1.0


def test_numbers_equal_pycocotools_run_by_hand(val, tmp_path):
    m = evaluate_coco(_noisy(val), val.annotation_json, results_dir=tmp_path)
    assert 0.05 < m["bbox"]["AP"] < 0.95 and 0.05 < m["segm"]["AP"] < 0.95     # not a trivial case
    for t in ("bbox", "segm"):
        stats = _by_hand(val.annotation_json, tmp_path / f"{t}_results.json", t)
        assert [m[t][k] for k in METRIC_KEYS] == [float(stats[i]) for i in (0, 1, 2, 3, 4, 5, 8)]


def test_result_entries(val):
    preds = _noisy(val, seed=1)
    bbox, segm = predictions_to_coco_results(preds, val.label_to_cat_id)
    assert len(bbox) == len(segm) == sum(len(p["scores"]) for p in preds.values())
    first_id = min(preds)
    p = preds[first_id]
    x1, y1, x2, y2 = (float(v) for v in p["boxes"][0])
    assert bbox[0]["image_id"] == first_id
    assert bbox[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    assert bbox[0]["score"] == pytest.approx(p["scores"][0])
    assert isinstance(segm[0]["segmentation"]["counts"], str) and "bbox" not in segm[0]
    json.dumps(bbox + segm)                                     # JSON-serialisable
    numpy_keys = {np.int64(k): v for k, v in preds.items()}     # ids as NumPy ints work too
    json.dumps(predictions_to_coco_results(numpy_keys, val.label_to_cat_id)[0])


def test_category_ids_are_mapped_back(tmp_path):
    # Category ids 9 and 5 (labels 2 and 1): right labels score 1, swapped labels score 0.
    cats = [{"id": 9, "name": "b"}, {"id": 5, "name": "a"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 9, "segmentation": [rect_polygon(2, 2, 12, 10)],
             "bbox": [2, 2, 10, 8], "area": 80, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "segmentation": [rect_polygon(20, 15, 36, 30)],
             "bbox": [20, 15, 16, 15], "area": 240, "iscrowd": 0}]
    write_png(tmp_path / "images" / "a.png", np.zeros((40, 40, 3)))
    path = write_json(tmp_path / "gt.json", coco_dict([(1, "a.png", 40, 40)], anns, cats))
    ds = CocoDataset(tmp_path / "images", path)
    t = ds.get_target(0)
    np.testing.assert_array_equal(t["labels"], [2, 1])
    pred = {"boxes": t["boxes"], "labels": t["labels"], "scores": [0.9, 0.8], "masks": t["masks"]}
    m = evaluate_coco({1: pred}, ds)
    assert m["bbox"]["AP"] == pytest.approx(1.0) and m["segm"]["AP"] == pytest.approx(1.0)
    swapped = dict(pred, labels=t["labels"][::-1].copy())
    m = evaluate_coco({1: swapped}, ds)
    assert m["bbox"]["AP"] == m["segm"]["AP"] == 0.0
    # list form == dict form
    assert evaluate_coco([dict(pred, image_id=1)], ds) == evaluate_coco({1: pred}, ds)


def _expected_zero_metrics(ds):
    """0.0 where the ground truth has objects in the area range, -1.0 where it has none."""
    areas = np.array([a["area"] for i in range(len(ds)) for a in ds.annotations(i)])
    has = {"APs": (areas < 32 ** 2).any(), "APm": ((areas >= 32 ** 2) & (areas < 96 ** 2)).any(),
           "APl": (areas >= 96 ** 2).any()}
    return {k: (0.0 if has.get(k, len(areas) > 0) else -1.0) for k in METRIC_KEYS}


def test_zero_predictions(val, tmp_path):
    expected = _expected_zero_metrics(val)
    assert expected["AP"] == 0.0 and expected["APl"] == -1.0       # shapes are never large
    empty_per_image = {iid: {"boxes": np.zeros((0, 4)), "scores": [], "labels": [],
                             "masks": np.zeros((0, 128, 128))} for iid in val.image_ids}
    for preds in ({}, [], empty_per_image):
        m = evaluate_coco(preds, val, tmp_path / "m.json")
        assert m == {"bbox": expected, "segm": expected}
        assert json.loads((tmp_path / "m.json").read_text()) == m


def test_only_the_predicted_images_count(val):
    preds = _perfect(val)
    first = {k: preds[k] for k in list(preds)[:3]}
    assert evaluate_coco(first, val)["bbox"]["AP"] == pytest.approx(1.0)
    assert evaluate_coco(first, val, image_ids=val.image_ids)["bbox"]["AP"] < 1.0
    assert evaluate_coco(preds, val, iou_types=("bbox",)).keys() == {"bbox"}


def test_bad_predictions_name_the_image(val):
    preds = _perfect(val)
    iid = val.image_ids[0]
    with pytest.raises(ValueError, match=r"image id 999 is not in .*annotations\.json"):
        evaluate_coco({999: preds[iid]}, val)
    with pytest.raises(ValueError, match=rf"image id {iid}: label 7 is not one of"):
        evaluate_coco({iid: dict(preds[iid], labels=np.full(len(preds[iid]["labels"]), 7))}, val)
    with pytest.raises(ValueError, match=rf"image id {iid}: masks are 64x64 but the image is 128x128"):
        evaluate_coco({iid: dict(preds[iid], masks=preds[iid]["masks"][:, :64, :64])}, val)
    with pytest.raises(ValueError, match=rf"image id {iid}: no 'masks'"):
        evaluate_coco({iid: dict(preds[iid], masks=None)}, val)
    with pytest.raises(ValueError, match="iou_types"):
        evaluate_coco(preds, val, iou_types=("keypoints",))
