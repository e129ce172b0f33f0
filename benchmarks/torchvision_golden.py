"""torchvision's ``maskrcnn_resnet50_fpn`` on real photos, stage by stage: the golden files that
``tests/test_r50_golden.py`` compares ``r50_fpn`` with, without torch.

    /path/to/torch-venv/bin/python benchmarks/torchvision_golden.py [--out tests/golden]

Run it with a Python that has torch, torchvision and pycocotools besides mrcnn-np's requirements (a
separate venv: ``pip install torch==2.14.1 torchvision==0.29.1 pycocotools``); mrcnn-np itself is
imported from this checkout for its NumPy-only pieces (the fixture recipe, the ``.pth`` reader and
writer). PyTorch is never a dependency of mrcnn-np.

What it does:

1. builds torchvision's model as ``maskrcnn_resnet50_fpn(weights=COCO_V1)`` builds it
   (``resnet50(norm_layer=FrozenBatchNorm2d)``, FPN with LastLevelMaxPool, 91 classes, then every
   FrozenBN's eps set to 0), with the fixture weights of :mod:`mrcnn_np.fixture_weights`;
2. calibrates the 53 FrozenBN layers' running mean and variance on the four photos (resized to
   512 x 512, one forward pass, each layer set from the statistics of its own input before it runs)
   and writes them to ``OUT/r50/calibration.npz``: the only committed part of the weights;
3. cross-checks the ``.pth`` formats: torch writes the fixture in the legacy format with the 2019 key
   names and module versions (as the released file is) and as a zip; ``mrcnn_np.pth`` must read both
   to the same arrays, torchvision must load the old-name file strictly, and ``torch.load`` must read
   what ``mrcnn_np.pth.save_state_dict`` writes. Small torch-written files with every tensor kind the
   reader handles go to ``OUT/pth/`` with the arrays they hold;
4. runs the model on each photo in ``OUT/photos/`` and records, per photo (``OUT/r50/<name>.npz``):
   the transform's output (sizes, per-channel sums, three full rows), C2..C5 and P2..P6 (per-channel
   means and an 8 x 8 x 8 slice), the 1,000 proposals with their objectness, the box head's logits (first
   200 proposals) and deltas (first 50), the detections in the resized frame and the original one,
   mask probabilities (28 x 28, first 50, float16) and the final masks (``> 0.5``, as COCO RLE);
5. writes ``OUT/r50/golden.json``: versions, the fixture's fingerprint, the recipe, per-photo counts.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from torchvision.models.detection import MaskRCNN  # noqa: E402
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # noqa: E402
from torchvision.models.resnet import resnet50  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from mrcnn_np import fixture_weights  # noqa: E402
from mrcnn_np import pth  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CALIBRATION_SIZE = 512
SLICE = 8


def build_model():
    """torchvision's v1 Mask R-CNN with FrozenBN and the released file's key set, eps 0, eval mode."""
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    model = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91)
    for m in model.modules():                       # torchvision's overwrite_eps(model, 0.0)
        if isinstance(m, FrozenBatchNorm2d):
            m.eps = 0.0
    return model.eval()


def load_photo(path):
    """uint8 (H, W, 3) and the float tensor (3, H, W) in [0, 1] torchvision takes."""
    arr = np.asarray(Image.open(path).convert("RGB"))
    return arr, torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def calibrate(model, photos):
    """Set each FrozenBN's running stats to the per-channel mean / variance of its input (one pass,
    in forward order, so each layer sees the already calibrated layers before it)."""
    tensors = []
    for _, x in photos:
        x = model.transform.normalize(x)
        tensors.append(torch.nn.functional.interpolate(x[None], size=(CALIBRATION_SIZE,) * 2,
                                                       mode="bilinear", align_corners=False)[0])
    batch = torch.stack(tensors)
    names = {m: n for n, m in model.backbone.body.named_modules()}

    def hook(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False).clamp_min(1e-2))

    handles = [m.register_forward_pre_hook(hook) for m in names if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        model.backbone.body(batch)
    for h in handles:
        h.remove()
    out = {}
    for n, m in model.backbone.body.named_modules():
        if isinstance(m, FrozenBatchNorm2d):
            out[f"backbone.body.{n}.running_mean"] = m.running_mean.numpy().astype(np.float32).copy()
            out[f"backbone.body.{n}.running_var"] = m.running_var.numpy().astype(np.float32).copy()
    return out


OLD = (("backbone.fpn.inner_blocks.{i}.0.{p}", "backbone.fpn.inner_blocks.{i}.{p}"),
       ("backbone.fpn.layer_blocks.{i}.0.{p}", "backbone.fpn.layer_blocks.{i}.{p}"),
       ("rpn.head.conv.0.0.{p}", "rpn.head.conv.{p}"))


def to_2019_names(sd):
    """Today's keys -> the released file's (FPN blocks without ``.0``, ``rpn.head.conv``,
    ``mask_head.mask_fcn{1..4}``), with those modules' metadata versions set to 1."""
    out = collections.OrderedDict()
    for k, v in sd.items():
        new = k
        for i in range(4):
            for p in ("weight", "bias"):
                for kind in ("inner", "layer"):
                    if k == f"backbone.fpn.{kind}_blocks.{i}.0.{p}":
                        new = f"backbone.fpn.{kind}_blocks.{i}.{p}"
                if k == f"roi_heads.mask_head.{i}.0.{p}":
                    new = f"roi_heads.mask_head.mask_fcn{i + 1}.{p}"
        for p in ("weight", "bias"):
            if k == f"rpn.head.conv.0.0.{p}":
                new = f"rpn.head.conv.{p}"
        out[new] = v
    meta = collections.OrderedDict((k, dict(v)) for k, v in sd._metadata.items())
    for k in list(meta):
        if k.startswith(("backbone.fpn", "rpn.head", "roi_heads.mask_head")) or k == "backbone.body":
            meta[k]["version"] = 1
    out._metadata = meta
    return out


def small_pth_fixtures(out_dir: Path):
    """Small torch-written files (both formats) holding every tensor kind the reader handles, and the
    arrays they must read back as."""
    base = torch.arange(24, dtype=torch.float32) / 7
    sd = collections.OrderedDict()
    sd["contiguous"] = torch.linspace(-1, 1, 12).reshape(3, 4)
    sd["strided_view"] = base[3:19].view(4, 4)[:, 1::2]          # offset and strides into a storage
    sd["same_storage"] = base                                      # shares the view's storage
    sd["transposed"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    sd["parameter"] = torch.nn.Parameter(torch.full((2, 2), 0.25))
    sd["num_batches_tracked"] = torch.tensor(17, dtype=torch.int64)
    sd["half"] = torch.tensor([0.5, -1.25], dtype=torch.float16)
    sd["bfloat16"] = torch.tensor([1.0, -2.5, 3.25], dtype=torch.bfloat16)
    sd["double"] = torch.tensor([1 / 3], dtype=torch.float64)
    sd["bool"] = torch.tensor([True, False, True])
    sd["uint8"] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    sd["int32"] = torch.tensor([-5, 6], dtype=torch.int32)
    sd["empty"] = torch.zeros(0, 3)
    sd["scalar"] = torch.tensor(2.5)
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("fpn", {"version": 2})])
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out_dir / "small_zip.pth")
    torch.save(sd, out_dir / "small_legacy.pth", _use_new_zipfile_serialization=False)
    expected = {k: (v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy())
                for k, v in sd.items()}
    np.savez(out_dir / "small_expected.npz", **expected)
    for name in ("small_zip.pth", "small_legacy.pth"):         # our reader on torch's files
        got = pth.load_state_dict(out_dir / name)
        assert list(got) == list(expected), name
        for k, v in expected.items():
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v), (name, k)
        assert got.metadata == {"": {"version": 1}, "fpn": {"version": 2}}, got.metadata


def summary(t):
    """Per-channel mean (float64) and an 8 x 8 x 8 slice from the map's middle, image 0."""
    a = t[0].double().numpy()
    c, h, w = a.shape
    y0, x0 = max(0, h // 2 - SLICE // 2), max(0, w // 2 - SLICE // 2)
    return a.mean(axis=(1, 2)), a[:SLICE, y0: y0 + SLICE, x0: x0 + SLICE].astype(np.float32)


def run_photo(model, name, arr, x):
    rec = {}
    hooks = []

    def keep(key):
        def fn(_m, _inp, out):
            if key == "roi_heads":      # transform.postprocess then rewrites these dicts in place
                out = ([{k: v.clone() for k, v in d.items()} for d in out[0]], out[1])
            rec[key] = out
        return fn

    hooks.append(model.transform.register_forward_hook(keep("transform")))
    hooks.append(model.backbone.body.register_forward_hook(keep("body")))
    hooks.append(model.backbone.fpn.register_forward_hook(keep("fpn")))
    hooks.append(model.roi_heads.box_predictor.register_forward_hook(keep("box_predictor")))
    hooks.append(model.roi_heads.register_forward_hook(keep("roi_heads")))
    original_filter = model.rpn.filter_proposals

    def filter_proposals(*args, **kwargs):
        rec["proposals"] = original_filter(*args, **kwargs)
        return rec["proposals"]

    model.rpn.filter_proposals = filter_proposals
    try:
        with torch.no_grad():
            out = model([x])[0]
    finally:
        model.rpn.filter_proposals = original_filter
        for h in hooks:
            h.remove()
    image_list = rec["transform"][0]
    tensors = image_list.tensors[0].double().numpy()
    h, w = image_list.image_sizes[0]
    rows = sorted({0, h // 2, h - 1})
    g = {"original_size": np.array(arr.shape[:2]), "image_size": np.array([h, w]),
         "padded_size": np.array(tensors.shape[1:]), "input_channel_sums": tensors.sum(axis=(1, 2)),
         "input_rows_index": np.array(rows), "input_rows": tensors[:, rows, :].astype(np.float32),
         "pixels_sha256": np.array(hashlib.sha256(arr.tobytes()).hexdigest())}
    for k, t in rec["body"].items():
        g[f"C{int(k) + 2}_mean"], g[f"C{int(k) + 2}_slice"] = summary(t)
    for k, t in rec["fpn"].items():
        level = "P6" if k == "pool" else f"P{int(k) + 2}"
        g[f"{level}_mean"], g[f"{level}_slice"] = summary(t)
        g[f"{level}_shape"] = np.array(t.shape[1:])
    boxes, scores = rec["proposals"]
    g["proposals"], g["proposal_scores"] = boxes[0].numpy(), scores[0].numpy()
    logits, deltas = rec["box_predictor"]
    g["class_logits_head"], g["box_deltas_head"] = logits[:200].numpy(), deltas[:50].numpy()
    det = rec["roi_heads"][0][0]
    g["det_boxes_resized"] = det["boxes"].numpy()
    g["det_labels"], g["det_scores"] = det["labels"].numpy(), det["scores"].numpy()
    g["det_mask_probs"] = det["masks"][:50, 0].numpy().astype(np.float16)
    g["boxes"] = out["boxes"].numpy()
    masks = (out["masks"][:, 0] > 0.5).numpy()
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    g["masks_rle"] = np.array(json.dumps([{"size": r["size"], "counts": r["counts"].decode()} for r in rles]))
    g["mask_areas"] = masks.reshape(len(masks), -1).sum(axis=1)
    assert np.array_equal(g["det_labels"], out["labels"].numpy())
    return g


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    photos = {n: load_photo(out / "photos" / f"{n}.jpg") for n in PHOTOS}

    model = build_model()
    sd = model.state_dict()
    shapes = collections.OrderedDict((k, tuple(v.shape)) for k, v in sd.items())
    start = fixture_weights.fixture_state_dict(shapes)                   # BN stats 0 / 1
    model.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()}, strict=True)
    calibration = calibrate(model, photos.values())
    np.savez_compressed(out / "r50" / "calibration.npz", **calibration)
    calibration = dict(np.load(out / "r50" / "calibration.npz"))          # exactly what is committed
    weights = fixture_weights.fixture_state_dict(shapes, calibration)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    fp = fixture_weights.fingerprint(weights)

    # the .pth formats, both directions
    small_pth_fixtures(out / "pth")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = to_2019_names(model.state_dict())
        torch.save(old, tmp / "fixture_2019.pth", _use_new_zipfile_serialization=False)
        torch.save(model.state_dict(), tmp / "fixture_zip.pth")
        fresh = build_model()
        fresh.load_state_dict(torch.load(tmp / "fixture_2019.pth", weights_only=True), strict=True)
        for name in ("fixture_2019.pth", "fixture_zip.pth"):
            ours = pth.load_state_dict(tmp / name)
            assert len(ours) == 307, (name, len(ours))
        ours_old = pth.load_state_dict(tmp / "fixture_2019.pth")
        assert all(np.array_equal(ours_old[k], v.numpy()) for k, v in old.items())
        pth.save_state_dict(tmp / "ours_legacy.pth", weights, "legacy",
                            metadata={k: dict(v) for k, v in sd._metadata.items()})
        pth.save_state_dict(tmp / "ours_zip.pth", weights, "zip")
        for name in ("ours_legacy.pth", "ours_zip.pth"):
            back = torch.load(tmp / name, weights_only=True)
            assert all(np.array_equal(back[k].numpy(), v) for k, v in weights.items()), name
        sizes = {n: (tmp / n).stat().st_size for n in ("fixture_2019.pth", "fixture_zip.pth")}

    record = {"created": datetime.date.today().isoformat(), "torch": torch.__version__,
              "torchvision": torchvision.__version__, "numpy": np.__version__,
              "pillow": Image.__version__, "python": platform.python_version(),
              "threads": args.threads, "fixture_seed": fixture_weights.FIXTURE_SEED,
              "fixture_scales": fixture_weights.SCALES, "fixture_fingerprint": fp,
              "calibration": f"FrozenBN stats from one pass over the {len(PHOTOS)} photos at "
                             f"{CALIBRATION_SIZE}x{CALIBRATION_SIZE}, var floored at 1e-2",
              "pth_cross_checks": "torch wrote the fixture (legacy, 2019 key names, module versions 1; "
                                  "and zip): mrcnn_np.pth read both, torchvision loaded the old-name "
                                  "file strictly; torch.load read mrcnn_np.pth's legacy and zip files "
                                  "bit for bit",
              "pth_sizes_bytes": sizes,
              "state_dict_shapes": [[k, list(v)] for k, v in shapes.items()],
              "state_dict_metadata": {k: dict(v) for k, v in sd._metadata.items()},
              "photos": {}}
    for name, (arr, x) in photos.items():
        g = run_photo(model, name, arr, x)
        np.savez_compressed(out / "r50" / f"{name}.npz", **g)
        record["photos"][name] = {"original_size": g["original_size"].tolist(),
                                  "image_size": g["image_size"].tolist(),
                                  "padded_size": g["padded_size"].tolist(),
                                  "detections": int(len(g["det_labels"])),
                                  "labels": sorted(set(g["det_labels"].tolist())),
                                  "score_range": [float(g["det_scores"].min(initial=1)),
                                                  float(g["det_scores"].max(initial=0))]}
        print(name, record["photos"][name])
    with open(out / "r50" / "golden.json", "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    total = sum(p.stat().st_size for p in (out / "r50").iterdir()) + sum(
        p.stat().st_size for p in (out / "pth").iterdir())
    print(f"wrote {out / 'r50'} and {out / 'pth'}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
