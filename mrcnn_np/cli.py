"""The ``mrcnn-np`` command (also ``python -m mrcnn_np``). Every sub-command takes ``--backend``."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .allocator import keep_freed_memory
from .backend import BACKENDS, BackendError, set_backend


def _cmd_gradcheck(args) -> int:
    from .gradcheck import format_table, run_all
    rows = run_all(seed=args.seed)
    print(format_table(rows, tol=args.tol))
    bad = [r for r in rows if not r[2] < args.tol]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} gradients agree with finite differences "
          f"to better than {args.tol:g}")
    return 1 if bad else 0


def _cmd_shapes(args) -> int:
    from .data.shapes import generate_shapes
    written = generate_shapes(args.out, args.train, args.val, seed=args.seed, image_size=args.image_size)
    for split, info in written.items():
        print(f"{split}: {info['num_images']} images, {info['num_instances']} instances -> "
              f"{info['annotations']}")
    return 0


def _cmd_train(args) -> int:
    from .commands import run_train
    from .model.configs import parse_overrides
    s = run_train(args.config, args.data, args.out, steps=args.steps, max_minutes=args.max_minutes,
                  batch_size=args.batch_size, lr=args.lr, resume=args.resume, seed=args.seed,
                  overrides=parse_overrides(args.set))
    print(f"trained {s['step']} of {s['total_steps']} steps ({s['stopped']}); "
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
    path = run_predict(args.inputs, args.checkpoint, args.out, score_thresh=args.score_thresh)
    print(f"wrote overlays and {path}")
    return 0


def _cmd_demo(args) -> int:
    from .commands import run_demo
    r = run_demo(args.data, args.out, steps=args.steps, max_minutes=args.max_minutes, seed=args.seed)
    m = r["metrics"]
    print(f"\ndemo: {r['train_steps']} steps at {r['sec_per_step_median']:.3f} s/step, "
          f"{r['total_seconds'] / 60:.1f} min in all, peak memory {r['peak_rss_mib']:.0f} MiB")
    for kind in ("bbox", "segm"):
        print(f"  {kind:5s} AP {m[kind]['AP']:.3f}  AP50 {m[kind]['AP50']:.3f}  AP75 {m[kind]['AP75']:.3f}")
    print(f"results in {args.out}/ (metrics.json, loss_curve.png, predictions.png, checkpoint.npz)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=BACKENDS, default=None,
                        help="array backend (default: $MRCNN_BACKEND or numpy)")
    parser = argparse.ArgumentParser(prog="mrcnn-np", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mrcnn-np {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("gradcheck", parents=[common],
                       help="check every layer's backward against finite differences (float64)")
    p.add_argument("--tol", type=float, default=1e-6, help="largest relative error accepted")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_gradcheck)

    p = sub.add_parser("shapes", parents=[common],
                       help="write the toy shapes dataset (PNG images + COCO JSON with RLE masks)")
    p.add_argument("--out", required=True, help="output folder (gets train/ and val/)")
    p.add_argument("--train", type=int, default=1000, help="number of training images")
    p.add_argument("--val", type=int, default=200, help="number of validation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128, help="square image side in pixels")
    p.set_defaults(func=_cmd_shapes)

    p = sub.add_parser("train", parents=[common], help="train a model on a COCO-format dataset")
    p.add_argument("--config", default="demo", help="preset: tiny, demo or small")
    p.add_argument("--data", required=True, help="dataset folder (a split, or a root with train/)")
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, loss curve")
    p.add_argument("--steps", type=int, default=None, help="updates (default: 10 epochs)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this long")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=0)
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

    p = sub.add_parser("demo", parents=[common],
                       help="shapes -> train the demo config -> evaluate -> pictures (runs/demo)")
    p.add_argument("--data", default="data/shapes")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--max-minutes", type=float, default=11.0, help="cap on the training time")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()          # steady-state speed for training loops; see mrcnn_np/allocator.py
    try:
        if args.backend is not None:
            set_backend(args.backend)
        return args.func(args)
    except (BackendError, ValueError, FileNotFoundError) as exc:
        # bad input (a missing file, a corrupt checkpoint, a wrong config): one clear line, no traceback
        print(f"mrcnn-np {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
