"""Where a training step and an inference pass wait for the GPU: device -> host syncs, host -> device
uploads and device calls, per source line, counted on the CPU under a strict CuPy stand-in.

    python benchmarks/sync_report.py [--config demo] [--batch 4] [--steps 2]

The stand-in (``tests/cupy_strict.py``) gives device arrays their own type, runs the ``cupy``
backend's real launchers (their CUDA C compiled with g++), and records every transfer with the line
that asked for it. One warm-up step is not counted; the table is per step (training: the loop's own
``mrcnn_np.train.train_step``, gradient clipping on) and per image (inference: ``model.predict``,
masks pasted). No GPU is needed, and none is used.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests"), HERE]

import numpy as np  # noqa: E402


def measure(config: str = "demo", batch: int = 4, steps: int = 2, dtype: str = "float32",
            infer: bool = True, call_sites: bool = False):
    """``(train_log, infer_log, steps, images)``: the :class:`cupy_strict.Log` of ``steps`` training
    steps and of one ``predict`` over ``batch`` images (None with ``infer=False``), each after a
    warm-up."""
    import cupy_strict
    from bench_step import make_batch
    from mrcnn_np.model import build_model, get_config
    from mrcnn_np.optim import SGD
    from mrcnn_np.train import CLIP_NORM, train_step

    cfg = get_config(config, num_classes=3, dtype=dtype)
    images, targets = make_batch(batch, cfg.image_size)
    images = images.astype(dtype)
    with cupy_strict.activate():
        model = build_model(cfg, seed=0)
        params = model.trainable_parameters()
        opt = SGD(params, 0.01, momentum=0.9, weight_decay=1e-4)

        def one(t):
            return train_step(model, opt, images, targets, np.random.default_rng([0, t]), 0.01, CLIP_NORM,
                              step=t + 1)
        one(0)
        with cupy_strict.counting(call_sites) as train_log:
            for t in range(1, steps + 1):
                one(t)
        infer_log = None
        if infer:
            model.predict(images)
            with cupy_strict.counting(call_sites) as infer_log:
                model.predict(images)
    return train_log, infer_log, steps, batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="demo")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    train_log, infer_log, steps, batch = measure(args.config, args.batch, args.steps, call_sites=True)
    print(f"config {args.config}, batch {args.batch}, gradient clipping on "
          f"({time.perf_counter() - t0:.0f} s on the CPU stand-in)\n")
    print(f"== per training step (mean of {steps})")
    print(train_log.table(per=steps))
    print(f"\n== per image at inference (predict over {batch} images, masks pasted)")
    print(infer_log.table(per=batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
