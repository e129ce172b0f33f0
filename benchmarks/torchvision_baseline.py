"""Train torchvision's Mask R-CNN built to a config's architecture with *our* recipe and data, and
score it with *our* evaluation: the baseline that mrcnn-np's box and mask AP are compared with.

    python benchmarks/torchvision_baseline.py --data data/shapes --out runs/torchvision [--steps 2500]

Everything but the model is shared with ``mrcnn-np train`` / ``mrcnn-np eval``, so a difference in
AP is the model's:

* the same batches in the same order with the same flips (``mrcnn_np.data.BatchLoader``, seed 0,
  batch 4, horizontal flips with p = 0.5), already resized and padded as ours are;
* the same recipe (``mrcnn_np.train``): SGD with momentum 0.9 and weight decay 1e-4 on every
  parameter, lr ``scaled_lr(batch)`` with the linear warm-up of ``WARMUP_STEPS`` from 0.001 and the
  cosine to 0 (``mrcnn_np.optim.LRSchedule``), the global gradient norm clipped to ``CLIP_NORM``;
* the same architecture and training-time numbers (``bench_step.build_torchvision``: GroupNorm
  ResNet, FPN P2-P5, one anchor size per level, 256 anchors / 64 RoIs per image, RoIAlign 7x7 and
  14x14 with sampling ratio 2), and here also our *test-time* numbers (RPN 500 / 100 proposals,
  score 0.05, NMS 0.5, ``detections_per_img``) unless ``--torchvision-test-numbers`` asks for
  torchvision's defaults (1000 / 1000 / 100);
* the same evaluation: torchvision's pasted masks thresholded at 0.5 and encoded as RLE, its boxes as
  they are, scored by ``mrcnn_np.evaluate.evaluate_coco`` (pycocotools) on the ``val`` split.

PyTorch is never a dependency of mrcnn-np: run this with a Python that has torch and torchvision
besides mrcnn-np's own requirements (a separate venv). Writes ``OUT/metrics.json`` (the eval's JSON
plus the run's record) and ``OUT/log.jsonl`` (losses every 50 steps).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402


def to_torch_targets(targets, torch):
    """Our loader's target dicts -> torchvision's (boxes float32, labels int64, masks uint8)."""
    return [{"boxes": torch.as_tensor(np.asarray(t["boxes"], np.float32).reshape(-1, 4)),
             "labels": torch.as_tensor(np.asarray(t["labels"], np.int64)),
             "masks": torch.as_tensor(np.asarray(t["masks"], np.uint8))} for t in targets]


def predict(model, ds, torch):
    """{image_id: {boxes, scores, labels, segmentation}} at the original image size (our format).

    Each original image goes in as it is: torchvision's transform resizes it to the longer side
    ``max_size`` (= our ``image_size``) and pads it, and its postprocess maps boxes back and pastes the
    masks at the original size (``paste_masks_in_image``), thresholded here at 0.5 as ours are."""
    from pycocotools import mask as mask_util

    from mrcnn_np.data.coco import image_to_float_chw
    preds = {}
    model.eval()
    with torch.no_grad():
        for i in range(len(ds)):
            image, target = ds[i]
            out = model([torch.as_tensor(image_to_float_chw(image))])[0]
            probs = out["masks"][:, 0]
            binary = np.asfortranarray((probs >= 0.5).numpy().astype(np.uint8).transpose(1, 2, 0))
            rles = mask_util.encode(binary) if len(probs) else []
            preds[target["image_id"]] = {
                "boxes": out["boxes"].numpy().astype(np.float32), "scores": out["scores"].numpy(),
                "labels": out["labels"].numpy().astype(np.int64),
                "segmentation": [{"size": list(r["size"]), "counts": r["counts"].decode("ascii")}
                                 for r in rles]}
    model.train()
    return preds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset root with train/ and val/ (COCO format)")
    ap.add_argument("--out", required=True, help="folder for metrics.json and log.jsonl")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    ap.add_argument("--eval", nargs="+", default=None, metavar="DIR",
                    help="datasets whose val split to evaluate on (default: --data)")
    ap.add_argument("--weights", default=None,
                    help="skip training: evaluate this model.pt of an earlier run (written to --out)")
    ap.add_argument("--torchvision-test-numbers", action="store_true",
                    help="torchvision's test-time defaults (RPN 1000/1000, 100 detections)")
    args = ap.parse_args(argv)

    import torch
    import torchvision

    from bench_step import build_torchvision
    from mrcnn_np.atomic import atomic_write_json
    from mrcnn_np.commands import open_split
    from mrcnn_np.evaluate import evaluate_coco
    from mrcnn_np.model import get_config

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_ds = open_split(args.data, "train")
    cfg = get_config(args.config, num_classes=train_ds.num_classes)
    model = build_torchvision(cfg, torch)
    if not args.torchvision_test_numbers:
        model.rpn._pre_nms_top_n["testing"] = cfg.rpn_pre_nms_test
        model.rpn._post_nms_top_n["testing"] = cfg.rpn_post_nms_test
        model.roi_heads.score_thresh = cfg.score_thresh
        model.roi_heads.nms_thresh = cfg.nms_thresh
        model.roi_heads.detections_per_img = cfg.detections_per_img
    model.train()

    record = {"config": args.config, "seed": args.seed, "threads": torch.get_num_threads(),
              "test_numbers": "torchvision" if args.torchvision_test_numbers else "ours",
              "torch": torch.__version__, "torchvision": torchvision.__version__,
              "machine": platform.processor() or platform.machine()}
    if args.weights:
        model.load_state_dict(torch.load(args.weights))
        record["weights"] = args.weights
    else:
        record.update(train(model, train_ds, cfg, args, out, torch))
        torch.save(model.state_dict(), out / "model.pt")
    record["eval"] = {}
    for root in args.eval or [args.data]:
        ds = open_split(root, "val")
        metrics = evaluate_coco(predict(model, ds, torch), ds, per_class=True)
        record["eval"][str(root)] = metrics
        print(root, json.dumps({k: {m: round(v, 3) for m, v in metrics[k].items() if m != "per_class"}
                                for k in ("bbox", "segm")}))
    atomic_write_json(out / "metrics.json", record, indent=1)


def train(model, train_ds, cfg, args, out, torch):
    """Our recipe on torchvision's model (module docstring); returns the run's record."""
    from mrcnn_np.data.loader import BatchLoader
    from mrcnn_np.optim import LRSchedule
    from mrcnn_np.train import CLIP_NORM, WARMUP_STEPS, scaled_lr

    loader = BatchLoader(train_ds, args.batch_size, cfg.image_size, seed=args.seed, hflip_prob=0.5)
    lr = scaled_lr(args.batch_size)
    lr_at = LRSchedule(lr, args.steps, WARMUP_STEPS, 0.001, "cosine")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    t_begin, times, t, epoch = time.perf_counter(), [], 0, 0
    model.train()
    with open(out / "log.jsonl", "w", encoding="utf-8") as log:
        while t < args.steps:
            for images, targets in loader.epoch(epoch):
                if t >= args.steps:
                    break
                t0 = time.perf_counter()
                losses = model([torch.as_tensor(im) for im in images], to_torch_targets(targets, torch))
                total = sum(losses.values())
                if not math.isfinite(total.item()):
                    raise FloatingPointError(f"torchvision baseline: loss {total.item()} at step {t + 1}")
                opt.zero_grad()
                total.backward()
                norm = float(torch.nn.utils.clip_grad_norm_(params, CLIP_NORM))
                for g in opt.param_groups:
                    g["lr"] = lr_at(t)
                opt.step()
                times.append(time.perf_counter() - t0)
                t += 1
                if t % 50 == 0 or t == args.steps:
                    rec = {"step": t, "lr": lr_at(t - 1), "grad_norm": norm, "loss": total.item(),
                           **{k: v.item() for k, v in losses.items()}}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    print(f"step {t}/{args.steps}  loss {total.item():.3f}  "
                          f"{np.median(times[-50:]):.3f} s/step", flush=True)
            epoch += 1
    return {"steps": args.steps, "batch_size": args.batch_size, "lr": lr,
            "train_seconds": time.perf_counter() - t_begin, "sec_per_step_median": float(np.median(times))}


if __name__ == "__main__":
    main()
