"""``r50_fpn`` against torchvision's ``maskrcnn_resnet50_fpn``, stage by stage, on four real photos,
with no torch in this venv.

The golden files (``tests/golden/r50/``) were written by ``benchmarks/torchvision_golden.py`` with
torch 2.14.1 / torchvision 0.29.1 (``golden.json`` records the versions). Both sides hold the same
weights: :mod:`mrcnn_np.fixture_weights` regenerates them here from a seed and the committed FrozenBN
calibration, and their fingerprint must equal the one the golden script loaded into torchvision.
The weights reach the model the way a user's do: written as the released file is (legacy format,
2019 key names), then ``mrcnn-np import-weights``.

Tolerances, per stage (measured on this project's machine in brackets; float32 throughout, so
differences come from summation order, and grow with depth):

* transform: sizes exactly; pixels within 1e-5 [5e-7] of torchvision's normalised, resized input;
* C2..C5 and P2..P6: shapes exactly; per-channel means within 1e-4 of the level's largest |mean|
  [1e-5], an 8x8x8 slice within 1e-3 of its largest |value| [1.3e-4];
* proposals: >= 99% of torchvision's 1,000 have a twin (IoU > 0.999) among ours, all of its top 100
  [99.5-100%, 100%], the twins' objectness within 1e-4 [5e-6]: near-equal scores may swap across
  an NMS decision, which is where the 0.5% come from;
* box head on torchvision's proposals: logits and deltas within 1e-3 of their largest |value| [2e-5];
* mask head on torchvision's detections: probabilities within 2e-3 [the float16 storage's 5e-4];
* paste of torchvision's 28x28 probabilities: its pasted masks, except where the probability is within
  the golden file's float16 rounding of 0.5 [8 of 19,000 mask pixels];
* end to end (``mrcnn-np predict``): one-to-one, same label, box IoU >= 0.99, score within 0.01,
  mask IoU >= 0.9, for >= 95% of the detections in both directions, on every photo [100%].
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mrcnn_np
from mrcnn_np import nn
from mrcnn_np.backend import to_numpy
from mrcnn_np.cli import main
from mrcnn_np.data.coco import decode_rle
from mrcnn_np.detection.boxes import box_iou
from mrcnn_np.detection.postprocess import paste_masks_torchvision, select_class_masks
from mrcnn_np.fixture_weights import fingerprint, fixture_state_dict
from mrcnn_np.pth import save_state_dict

GOLDEN = Path(__file__).parent / "golden"
META = json.loads((GOLDEN / "r50" / "golden.json").read_text())
PHOTOS = sorted(META["photos"])
GPU = pytest.mark.gpu
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=GPU), pytest.param("numba-cuda", marks=GPU)]


def golden(name) -> dict:
    with np.load(GOLDEN / "r50" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def photo(name) -> np.ndarray:
    return np.asarray(Image.open(GOLDEN / "photos" / f"{name}.jpg").convert("RGB"))


def fixture_weights() -> dict:
    """The fixture under torchvision's (today's) keys, checked against what torchvision loaded."""
    shapes = {k: tuple(v) for k, v in META["state_dict_shapes"]}
    calibration = dict(np.load(GOLDEN / "r50" / "calibration.npz"))
    weights = fixture_state_dict(shapes, calibration)
    assert fingerprint(weights) == META["fixture_fingerprint"], (
        "the fixture weights differ from those the golden files were made with (did NumPy's random "
        "streams or the recipe in mrcnn_np/fixture_weights.py change?)")
    return weights


#: today's key -> the 2019 file's (``inner_blocks.0.weight``, ``rpn.head.conv.weight``,
#: ``mask_head.mask_fcn1.weight``): the inverse of torchvision's renames, written out independently
TO_2019 = ((r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.0\.(weight|bias)$", r"backbone.fpn.\1_blocks.\2.\3"),
           (r"^rpn\.head\.conv\.0\.0\.(weight|bias)$", r"rpn.head.conv.\1"),
           (r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$",
            lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.{m[2]}"))


def as_released(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for pattern, repl in TO_2019:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("r50")
    released = as_released(fixture_weights())
    assert "backbone.fpn.inner_blocks.0.weight" in released and "rpn.head.conv.weight" in released
    assert "roi_heads.mask_head.mask_fcn4.bias" in released
    metadata = {k: {**v, "version": 1} if k.startswith(("backbone.fpn", "rpn.head", "roi_heads.mask_head"))
                else v for k, v in META["state_dict_metadata"].items()}
    src = save_state_dict(d / "maskrcnn_resnet50_fpn_coco-fixture.pth", released, "legacy", metadata)
    out = d / "r50.npz"
    assert main(["import-weights", str(src), "--out", str(out)]) == 0
    return out


@pytest.fixture(params=BACKENDS)
def backend(request):
    previous = mrcnn_np.get_backend().name
    try:
        mrcnn_np.set_backend(request.param)
    except mrcnn_np.BackendError as exc:
        if request.param in ("cupy", "numba-cuda") and not os.environ.get("MRCNN_REQUIRE_GPU"):
            pytest.skip(f"the {request.param} backend cannot run here: {exc}")
        raise
    yield request.param
    mrcnn_np.set_backend(previous)


@pytest.fixture(scope="module")
def _models():
    models = {}
    yield models
    models.clear()                                     # 180 MB each: gone with this module


@pytest.fixture
def r50(r50_checkpoint, backend, _models):
    """The imported model, its arrays where the backend keeps them (loaded once per backend)."""
    if backend not in _models:
        model, meta = mrcnn_np.load_model(r50_checkpoint)
        assert meta["extra"]["class_names"][1] == "person" and len(meta["extra"]["class_names"]) == 91
        _models[backend] = model
    return _models[backend]


def rel(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))


def _centre_slice(a, n=8):
    c, h, w = a.shape
    y0, x0 = max(0, h // 2 - n // 2), max(0, w // 2 - n // 2)
    return a[:n, y0: y0 + n, x0: x0 + n]


@pytest.mark.parametrize("name", PHOTOS)
def test_stage_by_stage(r50, backend, name):
    xp = mrcnn_np.get_backend().xp
    g = golden(name)
    image = photo(name)
    assert str(g["pixels_sha256"]) == hashlib.sha256(image.tobytes()).hexdigest(), (
        f"{name}.jpg decodes to other pixels than the golden script saw (another JPEG decoder?)")
    batch, sizes, originals = r50.transform([image])           # on the host, as the model's input
    # transform: torchvision's sizes (floor, not round: coffee is 799 rows) and pixels
    assert sizes == [tuple(g["image_size"])] and batch.shape[2:] == tuple(g["padded_size"])
    assert originals == [tuple(g["original_size"])]
    x = batch[0].astype(np.float64)
    assert np.abs(x[:, g["input_rows_index"], :] - g["input_rows"]).max() < 1e-5
    assert rel(x.sum(axis=(1, 2)), g["input_channel_sums"]) < 1e-6
    with nn.no_cache():
        C = r50.backbone(xp.asarray(batch))
        P = r50.fpn(C)
        for level, t in [(f"C{k + 2}", c) for k, c in enumerate(C)] + [(f"P{k + 2}", p) for k, p in enumerate(P)]:
            a = to_numpy(t[0]).astype(np.float64)
            if level.startswith("P"):
                assert a.shape == tuple(g[f"{level}_shape"]), level
            assert rel(a.mean(axis=(1, 2)), g[f"{level}_mean"]) < 1e-4, level
            assert rel(_centre_slice(a), g[f"{level}_slice"]) < 1e-3, level
        # RPN: proposals as sets (near-equal scores may trade places across an NMS decision)
        (boxes, scores), = [p for p in r50.rpn.forward(P, sizes, False, input_size=batch.shape[2:])[0]]
        theirs = g["proposals"]
        boxes, scores = to_numpy(boxes), to_numpy(scores)
        iou = box_iou(theirs.astype(np.float64), boxes.astype(np.float64))
        twin = iou.argmax(axis=1)
        matched = iou[np.arange(len(theirs)), twin] > 0.999
        assert len(boxes) == len(theirs) == 1000
        assert matched.mean() >= 0.99 and matched[:100].all(), matched.mean()
        assert np.abs(np.asarray(scores)[twin[matched]] - g["proposal_scores"][matched]).max() < 1e-4
        # box head on torchvision's own proposals: no upstream difference carried in
        rois = np.concatenate([np.zeros((len(theirs), 1), np.float32), theirs.astype(np.float32)], 1)
        logits, deltas = (to_numpy(a) for a in r50.roi_heads.box_head(r50.roi_heads.box_pooler.forward(P, xp.asarray(rois))))
        assert rel(logits[:200], g["class_logits_head"]) < 1e-3
        assert rel(deltas[:50], g["box_deltas_head"]) < 1e-3
        # mask head on torchvision's detections
        det = g["det_boxes_resized"][:50].astype(np.float32)
        mrois = np.concatenate([np.zeros((len(det), 1), np.float32), det], 1)
        mask_logits = r50.roi_heads.mask_head(r50.roi_heads.mask_pooler.forward(P, xp.asarray(mrois)))
        probs = to_numpy(select_class_masks(mask_logits, xp.asarray(g["det_labels"][:50]),
                                            background_channel=True))
        assert np.abs(probs - g["det_mask_probs"].astype(np.float32)).max() < 2e-3


def _golden_masks(g):
    rles = json.loads(str(g["masks_rle"]))
    return np.stack([decode_rle({"size": r["size"], "counts": r["counts"].encode()}) for r in rles]).astype(bool)


def _mask_iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("name", PHOTOS)
def test_paste_is_torchvisions(name):
    """torchvision's 28x28 probabilities, pasted by ours, give its masks: a pixel may differ only
    where the pasted probability is within the float16 storage's rounding (5e-4) of the 0.5
    threshold."""
    g = golden(name)
    n = len(g["det_mask_probs"])
    probs = g["det_mask_probs"].astype(np.float32)
    ours = paste_masks_torchvision(probs, g["boxes"][:n], tuple(g["original_size"]))
    soft = paste_masks_torchvision(probs, g["boxes"][:n], tuple(g["original_size"]), threshold=None)
    theirs = _golden_masks(g)[:n]
    assert ours.shape == theirs.shape and ours.dtype == bool and soft.dtype == np.float32
    assert np.array_equal(ours, soft > 0.5)
    differ = ours != theirs
    assert np.all(np.abs(soft[differ] - 0.5) < 1e-3), np.abs(soft[differ] - 0.5).max()
    assert differ.sum() <= 0.01 * theirs.sum()


def _one_to_one(gb, gl, gs, gm, ob, ol, os_, om):
    """Fraction of the first set's detections with a twin in the second: same label, box IoU >= 0.99,
    score within 0.01, mask IoU >= 0.9 (each twin used once, best IoU first)."""
    if len(gb) == 0:
        return 1.0
    iou = box_iou(gb.astype(np.float64), ob.astype(np.float64)) * (gl[:, None] == ol[None, :])
    used, hits = set(), 0
    for i in np.argsort(-iou.max(axis=1, initial=0)):
        for j in np.argsort(-iou[i]):
            if iou[i, j] < 0.99:
                break
            if j in used:
                continue
            if abs(gs[i] - os_[j]) <= 0.01 and _mask_iou(gm[i], om[j]) >= 0.9:
                used.add(j)
                hits += 1
            break
    return hits / len(gb)


def test_predict_end_to_end_matches_torchvision(r50_checkpoint, backend, tmp_path):
    files = [GOLDEN / "photos" / f"{n}.jpg" for n in PHOTOS]
    out = tmp_path / "pred"
    assert main(["predict", *map(str, files), "--checkpoint", str(r50_checkpoint), "--out", str(out),
                 "--backend", backend]) == 0
    results = json.loads((out / "results.json").read_text())
    images = {im["file_name"]: im for im in json.loads((out / "images.json").read_text())["images"]}
    for name in PHOTOS:
        g = golden(name)
        assert (out / f"{name}_pred.png").is_file()
        im = images[f"{name}.jpg"]
        assert (im["height"], im["width"]) == tuple(g["original_size"])
        mine = [r for r in results if r["image_id"] == im["id"]]
        ob = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]).reshape(-1, 4)
        ol = np.array([r["category_id"] for r in mine])          # torchvision's label = COCO id
        os_ = np.array([r["score"] for r in mine])
        om = np.stack([decode_rle({"size": r["segmentation"]["size"],
                                   "counts": r["segmentation"]["counts"].encode()}) for r in mine]).astype(bool)
        gm = _golden_masks(g)
        forward = _one_to_one(g["boxes"], g["det_labels"], g["det_scores"], gm, ob, ol, os_, om)
        backward = _one_to_one(ob, ol, os_, om, g["boxes"], g["det_labels"], g["det_scores"], gm)
        assert forward >= 0.95 and backward >= 0.95, (name, backend, forward, backward, len(mine))


def test_eval_on_a_coco_folder(r50_checkpoint, tmp_path):
    """``mrcnn-np eval`` of the imported model on a COCO folder whose ground truth is torchvision's
    own detections: category ids are torchvision's labels, so AP is ~1 when the detections agree."""
    import shutil
    split = tmp_path / "val"
    (split / "images").mkdir(parents=True)
    images, anns, cats = [], [], set()
    for i, name in enumerate(PHOTOS, start=1):
        g = golden(name)
        shutil.copy(GOLDEN / "photos" / f"{name}.jpg", split / "images" / f"{name}.jpg")
        h, w = (int(v) for v in g["original_size"])
        images.append({"id": i, "file_name": f"{name}.jpg", "width": w, "height": h})
        for box, label, rle in zip(g["boxes"], g["det_labels"], json.loads(str(g["masks_rle"]))):
            x1, y1, x2, y2 = (float(v) for v in box)
            if rle["counts"] in ("", None) or decode_rle({"size": rle["size"], "counts": rle["counts"].encode()}).sum() == 0:
                continue                                   # an empty mask is no object
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": rle})
            cats.add(int(label))
    (split / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in sorted(cats)]}))
    out = tmp_path / "metrics.json"
    assert main(["eval", "--checkpoint", str(r50_checkpoint), "--data", str(tmp_path), "--out", str(out),
                 "--backend", "numba"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["bbox"]["AP"] > 0.95 and metrics["segm"]["AP"] > 0.95, metrics
