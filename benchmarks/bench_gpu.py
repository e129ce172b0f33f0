"""GPU columns: every op's forward+backward at the demo model's shapes on one GPU, per GPU backend.

    python benchmarks/bench_gpu.py [--repeats 50] [--ops roi_align,nms] [--out FILE]

Columns, all on the same GPU in one run (medians; each call ends with a device synchronise, so a
time is what the step would wait for):

* ``ref@cupy``   the NumPy reference run on CuPy arrays (ops take ``xp`` from their arrays): the floor
                 that the hand-written kernels must beat;
* ``cupy``       the ``cupy`` backend (CUDA C kernels from ``kernels/*.cu`` where it has them);
* ``numba-cuda`` the ``numba-cuda`` backend (``@cuda.jit`` kernels on CuPy arrays);
* ``torch``      the same op in PyTorch on the GPU, when PyTorch with CUDA is importable (a separate
                 install, never a dependency).

NMS of 4,000 boxes is timed too (forward only). Results go to ``benchmarks/results/gpu_ops.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench_ops import demo_cases, torch_fn  # noqa: E402
from mrcnn_np import functional as F  # noqa: E402
from mrcnn_np.backend import BackendError, set_backend  # noqa: E402


def nms_case(rng, n=4000, size=128.0):
    """4,000 random boxes and scores (as in benchmarks/bench_nms.py), IoU threshold 0.7."""
    xy = rng.uniform(0, size * 0.9, (n, 2))
    wh = rng.uniform(4, size * 0.3, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.uniform(size=n).astype(np.float32)


def gpu_median_ms(fn, repeats, sync):
    fn()
    fn()                                               # compile, caches, allocator pools
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def step_fn(fwd, bwd, args, kwargs, xp):
    def step():
        out, cache = fwd(*args, **kwargs)
        dout = xp.ones((), out.dtype) if out.ndim == 0 else xp.ones_like(out)
        bwd(dout, cache)
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--ops", default="", help="comma-separated substrings of op names to run")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gpu_ops.json"))
    args = ap.parse_args(argv)
    import cupy as cp
    sync = cp.cuda.Device().synchronize
    gpu = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"GPU: {gpu}; cupy {cp.__version__}; numpy {np.__version__}")

    rng = np.random.default_rng(0)
    cases = demo_cases(rng)
    boxes, scores = nms_case(rng)
    if args.ops:
        wanted = args.ops.split(",")
        cases = {k: v for k, v in cases.items() if any(w in k for w in wanted)}
    dev = {name: ([cp.asarray(a) if isinstance(a, np.ndarray) else a for a in c[2]],) + c
           for name, c in cases.items()}
    results = {name: {} for name in cases}
    results["nms 4000 boxes (forward)"] = {}
    d_boxes, d_scores = cp.asarray(boxes), cp.asarray(scores)

    set_backend("cupy")
    for name, (dargs, fwd, bwd, _, kw, _) in dev.items():
        results[name]["ref@cupy"] = gpu_median_ms(step_fn(fwd.reference, bwd.reference, dargs, kw, cp),
                                                  args.repeats, sync)
    results["nms 4000 boxes (forward)"]["ref@cupy"] = gpu_median_ms(
        lambda: F.nms.reference(d_boxes, d_scores, 0.7), args.repeats, sync)
    for backend in ("cupy", "numba-cuda"):
        try:
            set_backend(backend)
        except BackendError as exc:
            print(f"backend {backend}: skipped ({exc})")
            continue
        for name, (dargs, fwd, bwd, _, kw, _) in dev.items():
            try:
                results[name][backend] = gpu_median_ms(step_fn(fwd, bwd, dargs, kw, cp), args.repeats, sync)
            except Exception as exc:                   # report and go on: one broken kernel
                print(f"{backend} {name}: FAILED {type(exc).__name__}: {exc}")
        results["nms 4000 boxes (forward)"][backend] = gpu_median_ms(
            lambda: F.nms(d_boxes, d_scores, 0.7), args.repeats, sync)
    set_backend("numpy")

    torch_version = None
    try:
        import torch
        import torchvision
        if torch.cuda.is_available():
            torch_version = f"{torch.__version__} / torchvision {torchvision.__version__}"
            tsync = torch.cuda.synchronize
            for name, (dargs, _, _, a, kw, kind) in dev.items():
                fn = torch_fn(_CudaTorch(torch), kind, a, kw)      # the case's tensors on "cuda"
                if fn is not None:
                    results[name]["torch"] = gpu_median_ms(fn, args.repeats, tsync)
            tb, ts = torch.tensor(boxes, device="cuda"), torch.tensor(scores, device="cuda")
            results["nms 4000 boxes (forward)"]["torch"] = gpu_median_ms(
                lambda: torchvision.ops.nms(tb, ts, 0.7), args.repeats, tsync)
    except ImportError:
        print("PyTorch not importable: no torch column")

    cols = ["ref@cupy", "cupy", "numba-cuda", "torch"]
    print(f"{'op (forward+backward, float32), ms':<46}" + "".join(f"{c:>12}" for c in cols)
          + f"{'cupy/torch':>12}{'nbcuda/cupy':>12}{'cupy/ref':>12}")
    for name, r in results.items():
        line = f"{name:<46}" + "".join(f"{r[c]:>12.3f}" if c in r else f"{'-':>12}" for c in cols)
        for a, b in (("cupy", "torch"), ("numba-cuda", "cupy"), ("cupy", "ref@cupy")):
            line += f"{r[a] / r[b]:>12.2f}" if a in r and b in r else f"{'-':>12}"
        print(line)
    record = {"gpu": gpu, "cupy": cp.__version__, "numpy": np.__version__, "torch": torch_version,
              "repeats": args.repeats, "unit": "ms, median of forward+backward, synchronised",
              "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


class _CudaTorch:
    """``torch`` with ``tensor(...)`` creating CUDA tensors, so bench_ops.torch_fn builds GPU cases."""

    def __init__(self, torch):
        self._torch = torch

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def tensor(self, a, **kw):
        return self._torch.tensor(a, device="cuda", **kw)


if __name__ == "__main__":
    main()
