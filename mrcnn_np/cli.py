"""The ``mrcnn-np`` command (also ``python -m mrcnn_np``). Every sub-command takes ``--backend``."""
from __future__ import annotations

import argparse
import math
import os
import sys

from . import __version__
from .allocator import keep_freed_memory
from .backend import BACKENDS, BackendError, get_backend, set_backend


def _cmd_gradcheck(args) -> int:
    from .gradcheck import format_table, run_all
    rows = run_all(seed=args.seed)
    print(format_table(rows, tol=args.tol))
    bad = [r for r in rows if not r[2] < args.tol]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} gradients agree with finite differences "
          f"to better than {args.tol:g}")
    return 1 if bad else 0


def _cmd_backends(args) -> int:
    """Each backend: available here or not (and why), and the ops that have their own kernel."""
    from . import functional  # noqa: F401  (defines the dispatched ops)
    from .backend import get_backend
    from .dispatch import OPS, kernels_of
    active = get_backend().name
    for name in BACKENDS:
        try:
            b = set_backend(name)
        except BackendError as exc:
            print(f"{name:11s} not available: {exc}")
            continue
        own = kernels_of(name) if name != "numpy" else []
        where = "GPU" if b.gpu else "CPU"
        print(f"{name:11s} available ({where}, arrays: {b.xp.__name__}); "
              + ("the reference for every op" if name == "numpy" else
                 f"own kernels for {len(own)} of {len(OPS)} ops"))
        if own:
            print(f"{'':13s}kernels:   {', '.join(own)}")
            print(f"{'':13s}reference: {', '.join(op for op in OPS if op not in own)}")
    set_backend(active)
    return 0


def _cmd_shapes(args) -> int:
    from .data.shapes import generate_shapes
    written = generate_shapes(args.out, args.train, args.val, seed=args.seed, image_size=args.image_size,
                              width=args.width, height=args.height)
    for split, info in written.items():
        print(f"{split}: {info['num_images']} images, {info['num_instances']} instances -> "
              f"{info['annotations']}")
    return 0


def _cmd_labelme(args) -> int:
    from .data.labelme import labelme_to_coco
    r = labelme_to_coco(args.src, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(f"{r['train']} train and {r['val']} val images, {r['instances']} instances of "
          f"{len(r['categories'])} categories ({', '.join(r['categories'])}) -> {args.out}")
    return 0


def _training(run, *args, **kwargs):
    """``run(*args, **kwargs)``, a NaN stop turned into a ``ValueError`` that says what to try (main
    prints it as one line, exit status 2)."""
    from .train import NonFiniteLossError
    try:
        return run(*args, **kwargs)
    except NonFiniteLossError as exc:
        then = "--resume to continue from that checkpoint" if exc.checkpoint else "a fresh run"
        raise ValueError(f"{exc}; try a lower --lr than {exc.lr:g} (e.g. --lr {exc.lr / 4:g}) "
                         f"with mrcnn-np train and {then}") from None


def _cmd_train(args) -> int:
    from .commands import run_train
    from .model.configs import parse_overrides
    s = _training(run_train, args.config, args.data, args.out, steps=args.steps,
                  max_minutes=args.max_minutes, batch_size=args.batch_size, lr=args.lr,
                  resume=args.resume, seed=args.seed, overrides=parse_overrides(args.set),
                  init=args.init, trainable_backbone_layers=args.trainable_backbone_layers,
                  **({} if args.warmup_steps is None else {"warmup_steps": args.warmup_steps}))
    if s["stopped"] == "already finished":
        fitted = (f" (the planned {s['planned_steps']} fitted to --max-minutes)"
                  if s["total_steps"] < s["planned_steps"] else "")
        print(f"the run in {args.out} is complete: step {s['step']} of {s['total_steps']}{fitted}; "
              f"nothing to do (--steps above {s['planned_steps']} extends it)")
        return 0
    cut = (f"; the schedule was fitted to --max-minutes: {s['total_steps']} of the planned "
           f"{s['planned_steps']} steps" if s["total_steps"] < s["planned_steps"] else "")
    print(f"trained {s['step']} of {s['total_steps']} steps ({s['stopped']}{cut}); "
          f"{s['sec_per_step_median']:.3f} s/step; checkpoint {s['checkpoint']}")
    return 0


def _cmd_eval(args) -> int:
    from .commands import run_eval
    metrics = run_eval(args.checkpoint, args.data, args.out)
    for kind, m in metrics.items():
        print(f"{kind:5s} " + "  ".join(f"{k} {v:.3f}" for k, v in m.items() if k != "per_class"))
        for name, pc in m.get("per_class", {}).items():
            print(f"      {name:10s} AP {pc['AP']:.3f}  AP50 {pc['AP50']:.3f}  AP75 {pc['AP75']:.3f}")
    print(f"wrote {args.out}")
    return 0


def _cmd_predict(args) -> int:
    from .commands import run_predict
    r = run_predict(args.inputs, args.checkpoint, args.out, score_thresh=args.score_thresh)
    print(f"predicted {r['predicted']} images; wrote overlays, {r['results']} and {r['images']}")
    if r["skipped"]:
        print(f"mrcnn-np predict: {len(r['skipped'])} unreadable file(s) skipped (listed in "
              f"{r['images']})", file=sys.stderr)
        return 2
    return 0


def _cmd_import_weights(args) -> int:
    from .import_weights import R50_COCO_URL, download_weights, import_weights
    if args.download == (args.src is not None):
        raise ValueError("expected either SRC (a torchvision .pth file) or --download, not "
                         + ("both" if args.download else "neither"))
    src = args.src
    if args.download:
        url = os.environ.get("MRCNN_R50_URL") or R50_COCO_URL
        src = download_weights(url)
        print(f"weights in {src}")
    r = import_weights(src, args.out, config=args.config)
    extra = f" ({len(r['ignored'])} num_batches_tracked ignored)" if r["ignored"] else ""
    print(f"imported {r['tensors']} tensors from {src} ({r['format']} format){extra} -> {r['out']} "
          f"(config {args.config}, 91 COCO labels)")
    return 0


def _cmd_demo(args) -> int:
    from .commands import run_demo
    print(f"demo: backend {get_backend().name} (--backend or MRCNN_BACKEND to change)")
    r = _training(run_demo, args.data, args.out, steps=args.steps, max_minutes=args.max_minutes,
                  seed=args.seed)
    m = r["metrics"]
    print(f"\ndemo: {r['train_steps']} steps at {r['sec_per_step_median']:.3f} s/step, "
          f"{r['total_seconds'] / 60:.1f} min in all, peak memory {r['peak_rss_mib']:.0f} MiB")
    for kind in ("bbox", "segm"):
        print(f"  {kind:5s} AP {m[kind]['AP']:.3f}  AP50 {m[kind]['AP50']:.3f}  AP75 {m[kind]['AP75']:.3f}")
    print(f"pictures: {r['files']['predictions.png']} (validation images with their predictions), "
          f"{r['files']['loss_curve.png']} (the loss terms and the learning rate)")
    print(f"also in {args.out}/: metrics.json, summary.json, log.jsonl, checkpoint.npz")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``mrcnn-np train: error: argument --steps: ...``),
    exit status 2, like every other bad input."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, low, low_ok, what):
    """An argparse ``type``: ``kind(text)``, finite, and ``>= low`` (``> low`` if not ``low_ok``)."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(v) or (v < low if low_ok else v <= low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    parse.__name__ = what                    # what argparse names in its own messages
    return parse


_positive_int = _number(int, 0, False, "a positive integer")
_natural = _number(int, 0, True, "a non-negative integer")
_positive = _number(float, 0.0, False, "a positive number")
_non_negative = _number(float, 0.0, True, "a non-negative number")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=BACKENDS, default=None,
                        help="array backend (default: $MRCNN_BACKEND or numpy)")
    parser = _Parser(prog="mrcnn-np", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mrcnn-np {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("gradcheck", parents=[common],
                       help="check every layer's backward against finite differences (float64)")
    p.add_argument("--tol", type=float, default=1e-6, help="largest relative error accepted")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_gradcheck)

    p = sub.add_parser("backends", parents=[common],
                       help="list the backends: available or not (why), and which ops have kernels")
    p.set_defaults(func=_cmd_backends)

    p = sub.add_parser("shapes", parents=[common],
                       help="write the toy shapes dataset (PNG images + COCO JSON with RLE masks)")
    p.add_argument("--out", required=True, help="output folder (gets train/ and val/)")
    p.add_argument("--train", type=int, default=1000, help="number of training images")
    p.add_argument("--val", type=int, default=200, help="number of validation images")
    p.add_argument("--seed", type=_natural, default=0)
    p.add_argument("--image-size", type=int, default=128, help="square image side in pixels")
    p.add_argument("--width", type=int, default=None, help="image width (default: --image-size)")
    p.add_argument("--height", type=int, default=None, help="image height (default: --image-size)")
    p.set_defaults(func=_cmd_shapes)

    p = sub.add_parser("labelme-to-coco", parents=[common],
                       help="a folder of images with LabelMe polygon JSONs -> a COCO dataset folder")
    p.add_argument("src", metavar="DIR", help="images, each with its LabelMe .json beside it")
    p.add_argument("--out", required=True, help="new folder: gets train/ and val/ (images/ + annotations.json)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of the images for val/")
    p.add_argument("--seed", type=_natural, default=0, help="seed of the train/val split")
    p.set_defaults(func=_cmd_labelme)

    p = sub.add_parser("train", parents=[common], help="train a model on a COCO-format dataset")
    p.add_argument("--config", default="demo", help="preset: tiny, demo, small, r50_fpn, r50_tiny")
    p.add_argument("--data", required=True, help="dataset folder (a split, or a root with train/)")
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, loss curve")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="updates (default: 10 epochs; with --resume, what the run was started with; "
                        "a larger number extends a resumed run)")
    p.add_argument("--max-minutes", type=_non_negative, default=None,
                   help="time cap: the schedule is shortened to end (annealed) within it")
    p.add_argument("--batch-size", type=_positive_int, default=4)
    p.add_argument("--lr", type=_positive, default=None,
                   help="base learning rate (default: 0.02 x min(batch-size, 4) / 4)")
    p.add_argument("--warmup-steps", type=_natural, default=None,
                   help="linear warm-up of the lr, in steps (default 200, the recipe's; a short "
                        "fine-tuning run wants fewer)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--init", default=None, metavar="CKPT.npz",
                   help="fine-tune from this checkpoint (e.g. import-weights' r50_coco.npz): every "
                        "weight kept but the class-dependent predictors, re-initialised for the "
                        "dataset's classes unless they are the checkpoint's")
    p.add_argument("--trainable-backbone-layers", type=int, choices=range(6), default=None,
                   metavar="N", help="0-5: the top N of conv1, layer1..layer4 train, the rest are "
                                     "frozen (torchvision's meaning; default 3 with --init, else 5)")
    p.add_argument("--seed", type=_natural, default=0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a config field, e.g. --set mask_loss=softmax --set pooler=roi_pool "
                        "(the paper's ablations; see mrcnn_np/model/configs.py); repeatable")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", parents=[common], help="COCO box and mask AP of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="dataset folder (a split, or a root with val/)")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", parents=[common], help="overlay PNGs and COCO results for images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-thresh", type=float, default=0.5, help="smallest score drawn")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("import-weights", parents=[common],
                       help="torchvision's maskrcnn_resnet50_fpn .pth -> an r50_fpn checkpoint (no PyTorch)")
    p.add_argument("src", nargs="?", default=None, metavar="SRC.pth",
                   help="a torchvision state_dict file (zip or legacy format)")
    p.add_argument("--out", required=True, help="checkpoint to write (.npz)")
    p.add_argument("--config", default="r50_fpn", choices=("r50_fpn", "r50_tiny"),
                   help="the preset the file holds (r50_tiny: the same layout at 1/16 of the widths, "
                        "for tests and examples)")
    p.add_argument("--download", action="store_true",
                   help="fetch the COCO v1 weights from torchvision's URL into $MRCNN_CACHE "
                        "(default ~/.cache/mrcnn-np) first ($MRCNN_R50_URL overrides the URL)")
    p.set_defaults(func=_cmd_import_weights)

    p = sub.add_parser("demo", parents=[common],
                       help="shapes -> train the demo config -> evaluate -> pictures (runs/demo)")
    p.add_argument("--data", default="data/shapes")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=_positive_int, default=2500)
    p.add_argument("--max-minutes", type=_non_negative, default=11.0,
                   help="cap on the training time (the schedule is fitted to end within it)")
    p.add_argument("--seed", type=_natural, default=0)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:    # --help, --version, or a usage error (already printed, one line)
        return exc.code if isinstance(exc.code, int) else 2
    keep_freed_memory()          # steady-state speed for training loops; see mrcnn_np/allocator.py
    try:
        if args.backend is not None:
            set_backend(args.backend)
        return args.func(args)
    except (BackendError, ValueError, OSError) as exc:
        # Bad input (a missing or corrupt file, a wrong config, a folder that cannot be written, a
        # loss that diverged): one clear line, no traceback. ValueError covers CheckpointError,
        # CocoFormatError and the NaN stop (re-raised by _cmd_train with its advice); OSError covers
        # FileNotFoundError, PermissionError, IsADirectoryError, a full disk.
        print(f"mrcnn-np {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mrcnn-np {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
