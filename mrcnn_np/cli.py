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
    try:
        written = generate_shapes(args.out, args.train, args.val, seed=args.seed,
                                  image_size=args.image_size)
    except ValueError as exc:
        print(f"mrcnn-np shapes: error: {exc}", file=sys.stderr)
        return 2
    for split, info in written.items():
        print(f"{split}: {info['num_images']} images, {info['num_instances']} instances -> "
              f"{info['annotations']}")
    return 0


def _cmd_demo(args) -> int:
    # The model arrives with the end-to-end issue; until then the demo is the gradient-check table,
    # the first thing a learner should see work.
    print("mrcnn-np demo: the model is not built yet; showing every layer's gradient check.\n")
    args.tol, args.seed = 1e-6, 0
    return _cmd_gradcheck(args)


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

    p = sub.add_parser("demo", parents=[common], help="the main job (see README)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()          # steady-state speed for training loops; see mrcnn_np/allocator.py
    try:
        if args.backend is not None:
            set_backend(args.backend)
        return args.func(args)
    except BackendError as exc:
        print(f"mrcnn-np: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
