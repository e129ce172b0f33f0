"""Time one training step of the demo model under each backend, and torchvision's same model.

    python benchmarks/bench_step.py [--steps 10] [--warmup 3] [--backends numpy,numba] [--out FILE]
        [--late runs/demo/checkpoint.npz runs/torchvision_demo/model.pt]

Two phases: *early*, freshly initialised models (what the first steps of a run cost), and with
``--late``, both models loaded with weights trained on the shapes data (ours from ``make demo``,
torchvision's from ``benchmarks/torchvision_baseline.py``): a trained RPN passes other numbers of
proposals and positives to the heads, so the late steps cost differently.

A step is what ``mrcnn_np.train`` does (``train_step``: zero the gradients, forward (losses),
backward, the gradient norm, one read of the losses, SGD update; momentum 0.9, weight decay 1e-4,
lr 0 so that every step repeats the same work; no clipping, as torchvision's step), on one fixed
batch (4 shapes images of 128x128, seed 0) with a fixed sampler seed; the figure is the median over ``--steps`` steps after ``--warmup`` steps
(the first numba call compiles or loads its cache). Every backend that can run here is timed; where
PyTorch is importable (a separate venv, never a dependency: ``--torch-python``), torchvision's
Mask R-CNN built to the same config runs the same batch in a child process with the same thread
count (GroupNorm ResNet 16/32/48/64/96 with basic blocks, FPN 64 on P2-P5 without P6, one anchor size
per level and three ratios, RPN 1000/300 per level/image, NMS 0.7, 256 anchors per image, RoI
sampling 64 per image at 25 % positives, RoIAlign 7x7 / 14x14 with sampling ratio 2 and the same
level mapping, box head 2 x FC 256, mask head 4 x conv 32 + deconv + 1x1). Prints the ratios
numba/numpy and numba/torchvision, the BLAS in use (threadpoolctl), and writes
``benchmarks/results/step.json``.

Run it with ``unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE`` for that command only, so OpenBLAS picks
its kernels for the CPU it finds (see docs/results.md, "Per-op speed on the CPU"). Each step's process CPU time is recorded too: on
a machine shared with other jobs, ``--threads 1`` CPU times compare the work itself, where wall
times mostly measure the other jobs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

STEP_CONFIG = "demo"
# lr 0: every timed step does the same work on the same (freshly initialised) model; the update's
# arithmetic still runs. (lr 0.02 without the demo's warm-up diverges on one repeated batch.)
LR, MOMENTUM, WEIGHT_DECAY = 0.0, 0.9, 1e-4


def make_batch(n=4, size=128, seed=0):
    """n shapes images (N, 3, S, S) float32 in [0, 1] and their targets (boxes from the masks)."""
    from mrcnn_np.data.shapes import random_shapes_image
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        image, masks, cats = random_shapes_image(rng, size)
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        images.append(image.transpose(2, 0, 1).astype(np.float32) / 255)
        targets.append({"boxes": np.array(boxes, np.float32), "labels": cats.astype(np.int64),
                        "masks": masks.astype(np.uint8)})
    return np.stack(images), targets


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                     f"({i.get('num_threads')} threads)" for i in threadpool_info()
                     if i.get("user_api") == "blas")


def time_ours(backend, images, targets, steps, warmup, threads, weights=None):
    """Median seconds of a training step under ``backend`` (None if it cannot run here): the training
    loop's own :func:`mrcnn_np.train.train_step` (no clipping, as torchvision's step below), from
    the ``weights`` checkpoint if given (the late phase), else a fresh model."""
    import mrcnn_np
    from mrcnn_np.backend import BackendError
    from mrcnn_np.checkpoint import load_checkpoint
    from mrcnn_np.model import build_model, get_config
    from mrcnn_np.optim import SGD
    from mrcnn_np.train import train_step
    try:
        b = mrcnn_np.set_backend(backend)
    except BackendError as exc:
        print(f"backend {backend}: skipped ({str(exc).split(';')[0]})")
        return None, None, None
    # a GPU step is timed to its end: the update's kernels are asynchronous
    sync = b.xp.cuda.Device().synchronize if b.gpu else (lambda: None)
    if backend == "numba":
        import numba
        numba.set_num_threads(threads)
    model = build_model(get_config(STEP_CONFIG, num_classes=3), seed=0)
    if weights:
        load_checkpoint(weights, model)
    opt = SGD(model.trainable_parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    times, cpu, first = [], [], None
    for t in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(model, opt, images, targets, np.random.default_rng(0), LR, None)
        sync()
        dt = time.perf_counter() - t0
        if t == 0:
            first = dt
        if t >= warmup:
            times.append(dt)
            cpu.append(time.process_time() - c0)
    mrcnn_np.set_backend("numpy")
    return float(np.median(times)), first, float(np.median(cpu))


# ------------------------------------------------------------------------ torchvision, same model
def build_torchvision(cfg, torch):
    """torchvision's MaskRCNN with our demo config's architecture (see the module docstring)."""
    from collections import OrderedDict

    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

    g = cfg.gn_groups

    def cnr(c_in, c_out, k, s, relu=True):
        layers = [nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.GroupNorm(g, c_out)]
        return nn.Sequential(*(layers + [nn.ReLU()] if relu else layers))

    class Block(nn.Module):
        def __init__(self, c_in, c_out, s):
            super().__init__()
            self.conv1, self.conv2 = cnr(c_in, c_out, 3, s), cnr(c_out, c_out, 3, 1, relu=False)
            self.short = cnr(c_in, c_out, 1, s, relu=False) if s != 1 or c_in != c_out else None

        def forward(self, x):
            return torch.relu(self.conv2(self.conv1(x)) + (self.short(x) if self.short else x))

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cnr(3, cfg.stem_channels, 3, 2)
            stages, c_in = [], cfg.stem_channels
            for c_out, n_b in zip(cfg.stage_channels, cfg.blocks_per_stage):
                stages.append(nn.Sequential(*[Block(c_in if i == 0 else c_out, c_out, 2 if i == 0 else 1)
                                              for i in range(n_b)]))
                c_in = c_out
            self.stages = nn.ModuleList(stages)
            self.fpn = FeaturePyramidNetwork(list(cfg.stage_channels), cfg.fpn_channels)  # P2..P5
            self.out_channels = cfg.fpn_channels

        def forward(self, x):
            x, feats = self.stem(x), OrderedDict()
            for k, stage in enumerate(self.stages):
                x = stage(x)
                feats[str(k)] = x
            return self.fpn(feats)

    names = ["0", "1", "2", "3"]
    pool = dict(featmap_names=names, sampling_ratio=cfg.sampling_ratio,
                canonical_scale=int(cfg.canonical_scale), canonical_level=cfg.canonical_level)
    k1 = cfg.num_classes + 1
    anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * 4)
    return MaskRCNN(
        Backbone(), num_classes=None, min_size=cfg.image_size, max_size=cfg.image_size,
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchors, rpn_head=RPNHead(cfg.fpn_channels, len(cfg.aspect_ratios)),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
        rpn_nms_thresh=cfg.rpn_nms, rpn_fg_iou_thresh=cfg.rpn_fg_iou, rpn_bg_iou_thresh=cfg.rpn_bg_iou,
        rpn_batch_size_per_image=cfg.rpn_batch_per_image,
        rpn_positive_fraction=cfg.rpn_positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(output_size=cfg.box_pool, **pool),
        box_head=TwoMLPHead(cfg.fpn_channels * cfg.box_pool ** 2, cfg.box_fc),
        box_predictor=FastRCNNPredictor(cfg.box_fc, k1),
        box_fg_iou_thresh=cfg.roi_iou, box_bg_iou_thresh=cfg.roi_iou,
        box_batch_size_per_image=cfg.roi_batch_per_image,
        box_positive_fraction=cfg.roi_positive_fraction,
        mask_roi_pool=MultiScaleRoIAlign(output_size=cfg.mask_pool, **pool),
        mask_head=MaskRCNNHeads(cfg.fpn_channels, [cfg.mask_channels] * cfg.mask_convs, 1),
        mask_predictor=MaskRCNNPredictor(cfg.mask_channels, cfg.mask_channels, k1))


def _torch_only(batch_path, steps, warmup, threads, device="cpu", weights=None):
    """Child process: time torchvision's step on the saved batch (on ``device``), from the state dict
    ``weights`` if given (a ``model.pt`` of benchmarks/torchvision_baseline.py); print one JSON line."""
    import torch
    import torchvision
    from mrcnn_np.model import get_config
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = get_config(STEP_CONFIG, num_classes=3)
    model = build_torchvision(cfg, torch)
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    model = model.to(device)
    model.train()
    data = np.load(batch_path)
    images = [torch.tensor(im, device=device) for im in data["images"]]
    targets = [{"boxes": torch.tensor(data[f"boxes{i}"], device=device),
                "labels": torch.tensor(data[f"labels{i}"], device=device),
                "masks": torch.tensor(data[f"masks{i}"], device=device)} for i in range(len(images))]
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    times, cpu = [], []
    for t in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        losses = model(images, targets)
        sum(losses.values()).backward()
        opt.step()
        sync()
        if t >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                      "step_s": float(np.median(times)), "cpu_s": float(np.median(cpu)),
                      "threads": torch.get_num_threads(), "device": device}))


def run_phase(args, images, targets, threads, ours_weights=None, torch_weights=None):
    """Time every backend and torchvision on the batch; returns ``(results, cpu, torch_record)``."""
    results, cpu = {}, {}
    for backend in args.backends.split(","):
        med, first, med_cpu = time_ours(backend, images, targets, args.steps, args.warmup, threads,
                                        ours_weights)
        if med is not None:
            results[backend], cpu[backend] = med, med_cpu
            print(f"{backend:>12}: {med * 1e3:8.1f} ms per step (median of {args.steps}; "
                  f"CPU {med_cpu * 1e3:.1f} ms; first step {first:.2f} s)")
    torch_record = None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batch.npz")
        np.savez(path, images=images, **{f"{k}{i}": t[k] for i, t in enumerate(targets)
                                         for k in ("boxes", "labels", "masks")})
        repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (repo, os.environ.get("PYTHONPATH")) if p))
        child = subprocess.run([args.torch_python, __file__, "--torch-only", path, "--steps",
                                str(args.steps), "--warmup", str(args.warmup),
                                "--threads", str(threads), "--torch-device", args.torch_device]
                               + (["--torch-weights", torch_weights] if torch_weights else []),
                               capture_output=True, text=True, env=env)
    if child.returncode == 0 and child.stdout.strip():
        torch_record = json.loads(child.stdout.strip().splitlines()[-1])
        results["torchvision"], cpu["torchvision"] = torch_record["step_s"], torch_record["cpu_s"]
        print(f"{'torchvision':>12}: {torch_record['step_s'] * 1e3:8.1f} ms per step (CPU "
              f"{torch_record['cpu_s'] * 1e3:.1f} ms; torch {torch_record['torch']}, "
              f"{torch_record['threads']} threads)")
    else:
        print("torchvision not importable here (pass --torch-python): "
              + (child.stderr.strip().splitlines() or ["no output"])[-1])
    return results, cpu, torch_record


def ratios_of(results, cpu):
    ratios = {}
    for b in results:
        if b != "numba" and "numba" in results:
            ratios[f"numba/{b}"] = results["numba"] / results[b]
    for gpu_backend in ("cupy", "numba-cuda"):
        for b in ("numpy", "torchvision", "cupy"):
            if gpu_backend in results and b in results and b != gpu_backend:
                ratios[f"{gpu_backend}/{b}"] = results[gpu_backend] / results[b]
    cpu_ratios = {f"numba/{b}": cpu["numba"] / cpu[b] for b in cpu if b != "numba" and "numba" in cpu}
    for k, v in ratios.items():
        print(f"{k:>20}: {v:.2f}")
    print("CPU-time ratios (process CPU time; robust on a busy machine with --threads 1): "
          + ", ".join(f"{k} {v:.2f}" for k, v in cpu_ratios.items()))
    return ratios, cpu_ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backends", default="numpy,numba,cupy,numba-cuda")
    ap.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", sys.executable),
                    help="a Python that can import torch and torchvision (default: this one)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for BLAS, Numba and PyTorch (default: every core)")
    ap.add_argument("--torch-device", default="cpu",
                    help="where torchvision's model runs: cpu, or cuda to compare with the GPU backends")
    ap.add_argument("--late", nargs=2, metavar=("OURS_CKPT", "TORCH_PT"), default=None,
                    help="also time the late phase of training: our demo checkpoint (make demo: "
                         "runs/demo/checkpoint.npz) and torchvision's model.pt trained on the same "
                         "data (benchmarks/torchvision_baseline.py --out DIR writes DIR/model.pt)")
    ap.add_argument("--torch-only", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--torch-weights", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "step.json"))
    args = ap.parse_args(argv)
    threads = args.threads
    if args.torch_only:
        return _torch_only(args.torch_only, args.steps, args.warmup, threads, args.torch_device,
                           args.torch_weights)
    if args.late:
        for path in args.late:
            if not os.path.isfile(path):
                ap.error(f"--late: {path} is not a file")

    from mrcnn_np.allocator import keep_freed_memory
    keep_freed_memory()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads, user_api="blas")
    except ImportError:
        if threads != os.cpu_count():
            print("threadpoolctl missing: BLAS keeps its own thread count")
    # (Numba's thread count is set once its backend is loaded: importing the backend first lets it
    # pick its threading layer, see mrcnn_np/backends/numba/_jit.py)
    images, targets = make_batch()
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {threads} threads used"
    blas = blas_info()
    print(f"machine: {machine}; python {platform.python_version()}; numpy {np.__version__}; "
          f"BLAS: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    phases = {}
    print("== early: freshly initialised models")
    results, cpu, torch_record = run_phase(args, images, targets, threads)
    ratios, cpu_ratios = ratios_of(results, cpu)
    phases["early"] = {"results": results, "ratios": ratios, "cpu_s": cpu, "cpu_ratios": cpu_ratios}
    if args.late:
        print(f"== late: trained weights ({args.late[0]}; {args.late[1]})")
        late, late_cpu, _ = run_phase(args, images, targets, threads, *args.late)
        late_ratios, late_cpu_ratios = ratios_of(late, late_cpu)
        phases["late"] = {"weights": list(args.late), "results": late, "ratios": late_ratios,
                          "cpu_s": late_cpu, "cpu_ratios": late_cpu_ratios}
    torch_device = torch_record.get("device", "cpu") if torch_record else None
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    record = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
              "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "machine": machine, "blas": blas, "numpy": np.__version__, "threads": threads,
              "steps": args.steps, "warmup": args.warmup, "config": STEP_CONFIG, "load_avg_1min": load,
              "unit": "s, median training step (mrcnn_np.train.train_step without clipping; "
                      "torchvision: zero_grad + forward + backward + SGD)",
              "torch": torch_record, "torch_device": torch_device,
              # the early phase at the top level, as before; both phases under "phases"
              "results": results, "ratios": ratios, "cpu_s": cpu, "cpu_ratios": cpu_ratios,
              "phases": phases}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
