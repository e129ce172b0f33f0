"""``r50_fpn`` inference per image against torchvision's ``maskrcnn_resnet50_fpn``, on the CPU, at the same
thread count, per stage, with the peak memory of each: ratios measured in one run.

    OPENBLAS_CORETYPE= ... python benchmarks/bench_r50.py [--photos astronaut chelsea] [--repeats 5]
                                                          [--threads 2] [--backends numpy numba]

Run it with a Python that has torch and torchvision besides mrcnn-np's requirements (a separate venv;
PyTorch is never a dependency of mrcnn-np): without torch it measures mrcnn-np alone and says so.
Each (runner, photo) is measured in its own child process, so that each peak RSS is its own:
one unmeasured forward (Numba compiles, caches fill), then ``--repeats`` timed ones; medians are
reported. Both models hold the same weights (:mod:`mrcnn_np.fixture_weights`, calibrated on the
photos), so they find the same ~100 detections and do the same work in the mask head and the paste.

Stages (torchvision's modules, timed by forward hooks; ours called one by one, as ``predict`` does):
``transform`` (normalise, resize to 800, pad), ``backbone`` (ResNet-50 body), ``fpn``, ``rpn`` (head,
anchors, top-k, NMS), ``roi_heads`` (box head, postprocess, mask head) and ``paste`` (boxes and masks
back to the original image: torchvision's float masks, our bool masks).

``--ablations`` adds the numba runner with one speed-up off at a time (:data:`VARIANTS`: the FrozenBN
fold, in-place ReLUs, Winograd's 3x3 convs), to record what each gives.

Writes ``benchmarks/results/r50.json`` (``--out``): machine, BLAS, versions, per runner and photo the
median stage times, the total and the peak RSS, and the ratios to torchvision.

``--train`` times a *training step* instead (``--short-sides 800 512``; results in
``benchmarks/results/r50_train.json``): one photo with three annotated objects (:func:`_train_sample`,
the same for both), batch 1, the fine-tuning set-up of ``mrcnn-np train --init``
(``trainable_backbone_layers=3``: conv1 and layer1 frozen, as torchvision's default), SGD with
momentum and weight decay, lr 1e-4 (small, so that the weights stay where they are over the timed
steps). A step is ``zero_grad + forward (losses) + backward + clip + update``; timed as ``forward`` and
``backward`` (the rest). Two unmeasured steps first, then ``--repeats``; medians and the peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOLDEN = ROOT / "tests" / "golden"
STAGES = ("transform", "backbone", "fpn", "rpn", "roi_heads", "paste")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fixture():
    import numpy as np
    from mrcnn_np.fixture_weights import fixture_state_dict
    meta = json.loads((GOLDEN / "r50" / "golden.json").read_text())
    shapes = {k: tuple(v) for k, v in meta["state_dict_shapes"]}
    return fixture_state_dict(shapes, dict(np.load(GOLDEN / "r50" / "calibration.npz")))


def _photo(name):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(GOLDEN / "photos" / f"{name}.jpg").convert("RGB"))


def run_torchvision(photo, repeats, threads):
    import torch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from torchvision_golden import build_model
    torch.set_num_threads(threads)
    model = build_model()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in _fixture().items()})
    image = _photo(photo)
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    loaded = _peak_mib()
    marks = {}

    def pre(name):
        return lambda *_: marks.__setitem__(name + "0", time.perf_counter())

    def post(name):
        return lambda *_: marks.__setitem__(name + "1", time.perf_counter())

    for name, module in (("transform", model.transform), ("backbone", model.backbone.body),
                         ("fpn", model.backbone.fpn), ("rpn", model.rpn), ("roi_heads", model.roi_heads)):
        module.register_forward_pre_hook(pre(name))
        module.register_forward_hook(post(name))
    postprocess = model.transform.postprocess

    def timed_postprocess(*a, **k):
        marks["paste0"] = time.perf_counter()
        out = postprocess(*a, **k)
        marks["paste1"] = time.perf_counter()
        return out

    model.transform.postprocess = timed_postprocess
    runs = []
    with torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            out = model([x])[0]
            total = time.perf_counter() - t0
            # the transform's hook spans its forward only (normalise, resize, pad)
            runs.append({**{s: marks[s + "1"] - marks[s + "0"] for s in STAGES}, "total": total})
    return runs[1:], len(out["boxes"]), loaded


#: ``--ablations``: the numba runner with one of the inference speed-ups switched off.
VARIANTS = {
    "no_bn_fold": "each FrozenBN as its own pass after its conv (mrcnn_np.model.backbone.FOLD_FROZEN_BN)",
    "no_inplace_relu": "every ReLU into a new array (mrcnn_np.nn.INPLACE_RELU)",
    "no_winograd": "every 3x3 conv by im2col + GEMM (mrcnn_np.backends.numba.winograd.MIN_PIXELS)",
}


def _switch_off(variant):
    if variant == "no_bn_fold":
        from mrcnn_np.model import backbone
        backbone.FOLD_FROZEN_BN = False
    elif variant == "no_inplace_relu":
        from mrcnn_np import nn
        nn.INPLACE_RELU = False
    elif variant == "no_winograd":
        from mrcnn_np.backends.numba import winograd
        winograd.MIN_PIXELS = 1 << 62


def run_ours(backend, photo, repeats, threads, variant=None):
    import mrcnn_np
    from mrcnn_np import nn
    from mrcnn_np.allocator import keep_freed_memory
    from mrcnn_np.backend import to_numpy
    from mrcnn_np.detection.postprocess import detections_to_original
    from mrcnn_np.import_weights import state_dict_to_model
    from mrcnn_np.model import build_model, get_config
    keep_freed_memory()                        # as the mrcnn-np command does (mrcnn_np/allocator.py)
    mrcnn_np.set_backend(backend)
    if variant:
        _switch_off(variant)
    model = build_model(get_config("r50_fpn"))
    state_dict_to_model(_fixture(), model)
    image = _photo(photo)
    loaded = _peak_mib()
    runs = []
    for i in range(repeats + 1):
        t = [time.perf_counter()]
        batch, sizes, originals = model.transform([image])
        t.append(time.perf_counter())
        with nn.no_cache():
            C = model.backbone(batch)
            t.append(time.perf_counter())
            P = model.fpn(C)
            t.append(time.perf_counter())
            props, _, _ = model.rpn.forward(P, sizes, False, input_size=batch.shape[2:])
            t.append(time.perf_counter())
            det = model.roi_heads.predict(P, [p for p, _ in props], sizes)[0]
            det = {k: to_numpy(v) for k, v in det.items()}
            t.append(time.perf_counter())
        out = detections_to_original(det, sizes[0], originals[0], paste=True, mode=model.config.paste)
        t.append(time.perf_counter())
        del C, P
        runs.append({**{s: t[k + 1] - t[k] for k, s in enumerate(STAGES)}, "total": t[-1] - t[0]})
    return runs[1:], len(out["boxes"]), loaded


def _train_sample(photo, tmp):
    """A one-image COCO dataset of ``photo`` with three objects (an ellipse, a rectangle, a
    triangle, as polygons, labels 1, 18, 62) in ``tmp``: the training sample of both runners."""
    import numpy as np
    from PIL import Image
    from mrcnn_np.data import CocoDataset
    image = _photo(photo)
    h, w = image.shape[:2]
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(tmp / "images" / "photo.png")
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    ellipse = np.stack([0.3 * w + 0.15 * w * np.cos(t), 0.4 * h + 0.25 * h * np.sin(t)], 1).ravel()
    polygons = [ellipse.tolist(), [0.55 * w, 0.1 * h, 0.9 * w, 0.1 * h, 0.9 * w, 0.45 * h, 0.55 * w, 0.45 * h],
                [0.5 * w, 0.6 * h, 0.85 * w, 0.95 * h, 0.3 * w, 0.95 * h]]
    anns = []
    for k, (poly, cat) in enumerate(zip(polygons, (1, 18, 62)), 1):
        xs, ys = poly[0::2], poly[1::2]
        anns.append({"id": k, "image_id": 1, "category_id": cat, "segmentation": [poly], "iscrowd": 0,
                     "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "area": 1.0})
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}]
    (tmp / "annotations.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "photo.png", "width": w, "height": h}],
         "annotations": anns, "categories": cats}))
    ds = CocoDataset(tmp / "images", tmp / "annotations.json")
    ds.use_label_space({k: k for k in range(1, 91)}, ["background"] + [str(k) for k in range(1, 91)])
    return ds                             # labels = COCO category ids, as the imported model's


LR, WARM_STEPS = 1e-4, 2


def train_torchvision(photo, repeats, threads, short_side, tmp):
    import torch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from torchvision_golden import build_model
    torch.set_num_threads(threads)
    model = build_model()                 # _resnet_fpn_extractor(body, 3): conv1 and layer1 frozen
    model.load_state_dict({k: torch.from_numpy(v) for k, v in _fixture().items()})
    model.transform.min_size = (short_side,)
    model.train()
    image, target = _train_sample(photo, tmp)[0]
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    t = {"boxes": torch.from_numpy(target["boxes"]), "labels": torch.from_numpy(target["labels"]),
         "masks": torch.from_numpy(target["masks"])}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    loaded = _peak_mib()
    runs = []
    for i in range(repeats + WARM_STEPS):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = sum(model([x], [t]).values())
        t1 = time.perf_counter()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        t2 = time.perf_counter()
        runs.append({"forward": t1 - t0, "backward": t2 - t1, "total": t2 - t0})
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return runs[WARM_STEPS:], {"loss": float(loss.detach()), "frozen_parameters": frozen}, loaded


def train_ours(backend, photo, repeats, threads, short_side, tmp):
    import numpy as np
    import mrcnn_np
    from mrcnn_np.allocator import keep_freed_memory
    from mrcnn_np.data.loader import load_sample, pad_batch
    from mrcnn_np.import_weights import state_dict_to_model
    from mrcnn_np.model import build_model, get_config
    from mrcnn_np.optim import SGD, clip_grad_norm
    keep_freed_memory()
    mrcnn_np.set_backend(backend)
    model = build_model(get_config("r50_fpn", min_size=short_side, trainable_backbone_layers=3))
    state_dict_to_model(_fixture(), model)
    ds = _train_sample(photo, tmp)
    image, target = load_sample(ds, 0, model.transform)
    batch, targets = pad_batch([image], [target])
    params = model.trainable_parameters()
    opt = SGD(params, LR, momentum=0.9, weight_decay=1e-4)
    loaded = _peak_mib()
    runs = []
    for i in range(repeats + WARM_STEPS):
        t0 = time.perf_counter()
        model.zero_grad()
        losses = model.forward_train(batch, targets, np.random.default_rng([0, i]))
        t1 = time.perf_counter()
        model.backward()
        clip_grad_norm(params, 10.0)
        opt.step()
        t2 = time.perf_counter()
        runs.append({"forward": t1 - t0, "backward": t2 - t1, "total": t2 - t0})
    frozen = sum(p.data.size for n, p in model.named_parameters().items() if n not in params)
    return runs[WARM_STEPS:], {"loss": sum(losses.values()), "frozen_parameters": int(frozen)}, loaded


def child(args):
    if args.train:
        import tempfile
        runner = train_torchvision if args.child == "torchvision" else (
            lambda *a: train_ours(args.child, *a))
        with tempfile.TemporaryDirectory() as tmp:
            runs, info, loaded = runner(args.photo, args.repeats, args.threads, args.short_side, Path(tmp))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(json.dumps({"runner": args.child, "photo": args.photo, "short_side": args.short_side,
                          "median_s": med, "runs_total_s": [r["total"] for r in runs], **info,
                          "peak_rss_mib": _peak_mib(), "rss_after_load_mib": loaded}))
        return
    if args.child == "torchvision":
        runs, n_det, loaded = run_torchvision(args.photo, args.repeats, args.threads)
    elif args.child in VARIANTS:
        runs, n_det, loaded = run_ours("numba", args.photo, args.repeats, args.threads, args.child)
    else:
        runs, n_det, loaded = run_ours(args.child, args.photo, args.repeats, args.threads)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({"runner": args.child, "photo": args.photo, "median_s": med,
                      "runs_total_s": [r["total"] for r in runs], "detections": n_det,
                      "peak_rss_mib": _peak_mib(), "rss_after_load_mib": loaded}))


def _blas():
    try:
        from threadpoolctl import threadpool_info
        return [(i.get("internal_api"), i.get("architecture"), i.get("num_threads")) for i in threadpool_info()]
    except ImportError:
        return "threadpoolctl not installed"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", nargs="+", default=["astronaut", "chelsea"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=["numpy", "numba"])
    ap.add_argument("--ablations", action="store_true",
                    help="also time numba with each speed-up off: " + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items()))
    ap.add_argument("--out", default=None, help="default: benchmarks/results/r50.json (r50_train.json "
                                                 "with --train)")
    ap.add_argument("--train", action="store_true", help="time a training step (module docstring)")
    ap.add_argument("--short-sides", nargs="+", type=int, default=[800, 512],
                    help="--train: the short sides (torchvision's min_size) to time")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--photo", help=argparse.SUPPRESS)
    ap.add_argument("--short-side", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / ("r50_train.json" if args.train else "r50.json"))
    env = {**os.environ, **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    try:
        import torch
        import torchvision
        versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
        runners = ["torchvision"] + args.backends
    except ImportError as exc:
        print(f"torch not importable ({exc}): measuring mrcnn-np alone, no ratios")
        versions, runners = {}, list(args.backends)
    if args.ablations:
        runners += list(VARIANTS)
    import numba
    import numpy
    versions.update(numpy=numpy.__version__, numba=numba.__version__, python=platform.python_version())
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cores; threads {args.threads}; BLAS {_blas()}; {versions}")
    if args.train:
        return main_train(args, runners, env, cpu, versions)
    results = []
    for photo in args.photos:
        for runner in runners:
            cmd = [sys.executable, __file__, "--child", runner, "--photo", photo, "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode:
                print(f"{runner} on {photo} failed:\n{p.stderr[-2000:]}")
                continue
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    by = {(r["runner"], r["photo"]): r for r in results}
    header = f"{'photo':10s} {'runner':12s} " + " ".join(f"{s:>9s}" for s in STAGES) + \
             f" {'total':>7s} {'ratio':>6s} {'peak MiB':>9s} {'ratio':>6s} {'dets':>5s}"
    print(header)
    for r in results:
        tv = by.get(("torchvision", r["photo"]))
        ratio = r["median_s"]["total"] / tv["median_s"]["total"] if tv else float("nan")
        mem = r["peak_rss_mib"] / tv["peak_rss_mib"] if tv else float("nan")
        r["ratio_to_torchvision"] = {"time": ratio, "peak_rss": mem,
                                     "stages": {s: r["median_s"][s] / tv["median_s"][s] for s in STAGES} if tv else {}}
        print(f"{r['photo']:10s} {r['runner']:12s} " + " ".join(f"{r['median_s'][s]:9.3f}" for s in STAGES)
              + f" {r['median_s']['total']:7.3f} {ratio:6.2f} {r['peak_rss_mib']:9.0f} {mem:6.2f} {r['detections']:5d}")
    _write_results(args, cpu, versions, results, unit="s per image (median), MiB (peak RSS of the process)")


def _write_results(args, cpu, versions, results, **fields):
    """The run's record (command, date, machine, BLAS, versions, ``fields``, results) to ``--out``,
    atomically."""
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "machine": cpu,
              "cores": os.cpu_count(), "threads": args.threads, "blas": _blas(), "versions": versions,
              **fields, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


def main_train(args, runners, env, cpu, versions):
    """``--train``: every (photo, short side, runner) in its own process; a table and the JSON."""
    runners = [r for r in runners if r not in VARIANTS]
    results = []
    for photo in args.photos:
        for side in args.short_sides:
            for runner in runners:
                cmd = [sys.executable, __file__, "--train", "--child", runner, "--photo", photo,
                       "--repeats", str(args.repeats), "--threads", str(args.threads),
                       "--short-side", str(side)]
                p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if p.returncode:
                    print(f"{runner} on {photo} at {side} failed:\n{p.stderr[-2000:]}")
                    continue
                results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    by = {(r["runner"], r["photo"], r["short_side"]): r for r in results}
    print(f"{'photo':10s} {'side':>4s} {'runner':12s} {'forward':>8s} {'backward':>8s} {'step':>7s} "
          f"{'ratio':>6s} {'peak MiB':>9s} {'ratio':>6s} {'loss':>8s}")
    for r in results:
        tv = by.get(("torchvision", r["photo"], r["short_side"]))
        ratio = r["median_s"]["total"] / tv["median_s"]["total"] if tv else float("nan")
        mem = r["peak_rss_mib"] / tv["peak_rss_mib"] if tv else float("nan")
        r["ratio_to_torchvision"] = {"time": ratio, "peak_rss": mem}
        m = r["median_s"]
        print(f"{r['photo']:10s} {r['short_side']:4d} {r['runner']:12s} {m['forward']:8.3f} "
              f"{m['backward']:8.3f} {m['total']:7.3f} {ratio:6.2f} {r['peak_rss_mib']:9.0f} {mem:6.2f} "
              f"{r['loss']:8.3f}")
    _write_results(args, cpu, versions, results,
                   setup="batch 1, trainable_backbone_layers=3, SGD momentum 0.9 wd 1e-4 lr 1e-4, clip 10; "
                         f"{WARM_STEPS} unmeasured steps, then --repeats",
                   unit="s per training step (median), MiB (peak RSS of the process)")


if __name__ == "__main__":
    main()
