"""Where a demo training step's time goes, per backend: cProfile over a few steps (after warm-up).

    python benchmarks/profile_step.py [--backend numba] [--steps 5] [--top 25]

Prints the functions with the largest own time (``tottime``): kernels show up under their Python
wrapper's module (e.g. ``backends/numba/roi_align.py``), NumPy/BLAS work under the reference's.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cpu", action="store_true",
                    help="time with the process CPU clock (robust on a busy machine; use with "
                         "NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)")
    args = ap.parse_args(argv)
    import mrcnn_np
    from bench_step import LR, STEP_CONFIG, make_batch
    from mrcnn_np.allocator import keep_freed_memory
    from mrcnn_np.model import build_model, get_config
    from mrcnn_np.optim import SGD
    from mrcnn_np.train import train_step
    keep_freed_memory()
    mrcnn_np.set_backend(args.backend)
    images, targets = make_batch()
    model = build_model(get_config(STEP_CONFIG, num_classes=3), seed=0)
    opt = SGD(model.named_parameters(), LR, momentum=0.9, weight_decay=1e-4)

    def step():                                            # the training loop's own step
        train_step(model, opt, images, targets, np.random.default_rng(0), LR, None)

    for _ in range(2):
        step()                                             # compile / load the cache, warm up
    prof = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        step()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    print(f"backend {args.backend}: {stats.total_tt / args.steps * 1e3:.1f} ms per step (profiled)")
    stats.sort_stats("tottime").print_stats(args.top)
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


if __name__ == "__main__":
    main()
