"""Forward+backward time of every layer at the demo model's shapes, per backend, against PyTorch.

    python benchmarks/bench_ops.py [--repeats 30] [--ops conv2d_3x3,roi_align_7x7] [--out FILE]

For each op and each backend that can run here, the median of ``--repeats`` timed calls of
forward + backward. When PyTorch is importable (never a dependency: use a separate venv), the same op
is timed in PyTorch in the same process, with the same thread count, and the ratio ours / PyTorch
is printed (PyTorch's grads are reset to None each call, as ``optimizer.zero_grad()`` does).
PyTorch runs in a child process of this run (``--torch-python``: a Python with torch and
torchvision, e.g. a separate venv), so the two libraries' thread pools never compete. Results go to ``benchmarks/results/ops.json`` (written atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from mrcnn_np import functional as F  # noqa: E402
from mrcnn_np.allocator import keep_freed_memory  # noqa: E402
from mrcnn_np.backend import BACKENDS, BackendError, set_backend  # noqa: E402


def demo_cases(rng):
    """name -> (our forward, our backward, args, kwargs, torch builder). Shapes: the demo model
    (128x128 images, batch 4, 64-channel FPN, 512 sampled RoIs, 128 positive RoIs for masks)."""
    f32 = np.float32

    def r(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(f32)

    def rois(n, size=128.0):
        xy = rng.uniform(0, size * 0.8, (n, 2))
        wh = rng.uniform(8, size * 0.5, (n, 2))
        return np.concatenate([rng.integers(0, 4, (n, 1)), xy, xy + wh], 1).astype(f32)

    feats = r(4, 64, 32, 32)
    feats_nhwc = np.ascontiguousarray(feats.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    box_rois, mask_rois = rois(512), rois(128)
    labels = rng.integers(0, 4, 512)
    return {
        "conv2d_3x3 (4,64,32,32)->64": (F.conv2d_forward, F.conv2d_backward,
                                        (feats, r(64, 64, 3, 3, scale=0.05), r(64)), dict(stride=1, padding=1),
                                        "conv2d"),
        "conv2d_3x3_s2 (4,32,64,64)->64": (F.conv2d_forward, F.conv2d_backward,
                                           (r(4, 32, 64, 64), r(64, 32, 3, 3, scale=0.05), r(64)),
                                           dict(stride=2, padding=1), "conv2d"),
        "conv2d_1x1 (4,128,16,16)->64": (F.conv2d_forward, F.conv2d_backward,
                                         (r(4, 128, 16, 16), r(64, 128, 1, 1, scale=0.05), r(64)), {},
                                         "conv2d"),
        "conv2d_3x3 mask head (128,64,14,14)->64": (F.conv2d_forward, F.conv2d_backward,
                                                    (r(128, 64, 14, 14), r(64, 64, 3, 3, scale=0.05), r(64)),
                                                    dict(stride=1, padding=1), "conv2d"),
        "conv_transpose2d_2x2_s2 (128,64,14,14)->64": (F.conv_transpose2d_forward,
                                                       F.conv_transpose2d_backward,
                                                       (r(128, 64, 14, 14), r(64, 64, 2, 2, scale=0.05), r(64)),
                                                       dict(stride=2), "conv_transpose2d"),
        "max_pool2d_3x3_s2 (4,32,64,64)": (F.max_pool2d_forward, F.max_pool2d_backward,
                                           (r(4, 32, 64, 64), 3, 2, 1), {}, "max_pool2d"),
        "upsample_nearest2d_x2 (4,64,16,16)": (F.upsample_nearest2d_forward,
                                               F.upsample_nearest2d_backward, (r(4, 64, 16, 16), 2), {},
                                               "upsample"),
        "relu (4,64,32,32)": (F.relu_forward, F.relu_backward, (feats,), {}, "relu"),
        "group_norm_G16 (4,64,32,32)": (F.group_norm_forward, F.group_norm_backward,
                                        (feats, r(64), r(64), 16), {}, "group_norm"),
        # the layout GroupNorm gets inside the model: an NCHW view of a conv's NHWC buffer
        "group_norm_G16 NHWC-backed (4,64,32,32)": (F.group_norm_forward, F.group_norm_backward,
                                                    (feats_nhwc, r(64), r(64), 16), {}, "group_norm"),
        "linear (512,3136)->256": (F.linear_forward, F.linear_backward,
                                   (r(512, 64 * 49), r(256, 64 * 49, scale=0.02), r(256)), {}, "linear"),
        "roi_align_7x7 512 rois (4,64,32,32)": (F.roi_align_forward, F.roi_align_backward,
                                                (feats, box_rois, 7, 0.25, 2, True), {}, "roi_align"),
        "roi_align_14x14 128 rois (4,64,32,32)": (F.roi_align_forward, F.roi_align_backward,
                                                  (feats, mask_rois, 14, 0.25, 2, True), {}, "roi_align"),
        "roi_pool_7x7 512 rois (4,64,32,32)": (F.roi_pool_forward, F.roi_pool_backward,
                                               (feats, box_rois, 7, 0.25), {}, "roi_pool"),
        "softmax_cross_entropy (512,4)": (F.softmax_cross_entropy_forward,
                                          F.softmax_cross_entropy_backward, (r(512, 4), labels), {}, "ce"),
        "smooth_l1 (512,4)": (F.smooth_l1_forward, F.smooth_l1_backward,
                              (r(512, 4), r(512, 4)), dict(beta=1 / 9), "smooth_l1"),
        "sigmoid_bce (128,28,28)": (F.sigmoid_bce_with_logits_forward,
                                    F.sigmoid_bce_with_logits_backward,
                                    (r(128, 28, 28), (rng.uniform(size=(128, 28, 28)) > 0.5).astype(f32)),
                                    {}, "bce"),
    }


TIMER = time.perf_counter          # --cpu: time.process_time (with --threads 1: robust on a busy machine)


def median_ms(fn, repeats):
    fn()                                               # warm-up: caches, allocator, JIT
    times = []
    for _ in range(repeats):
        t0 = TIMER()
        fn()
        times.append(TIMER() - t0)
    return float(np.median(times) * 1e3)


def ours_fn(fwd, bwd, args, kwargs):
    def step():
        out, cache = fwd(*args, **kwargs)
        # the upstream gradient has the memory layout of the output, as in a real backward pass
        dout = 1.0 if np.ndim(out) == 0 else np.ones_like(out)
        bwd(dout, cache)
    return step


def torch_fn(torch, kind, args, kwargs):
    """The same op in PyTorch, forward + backward, or None where there is no counterpart."""
    import torch.nn.functional as TF
    tv_ops = None
    if kind in ("roi_align", "roi_pool"):
        try:
            import torchvision.ops as tv_ops
        except Exception:                               # torchvision missing or broken
            return None
    t = [torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    grads = [x for x in t if isinstance(x, torch.Tensor) and x.is_floating_point()]
    if kind in ("roi_align", "roi_pool"):
        grads = grads[:1]                               # gradient w.r.t. the features only
    if kind in ("ce", "smooth_l1", "bce"):
        grads = grads[:1]
    for x in grads:
        x.requires_grad_(True)
    s, p = kwargs.get("stride", 1), kwargs.get("padding", 0)
    call = {
        "conv2d": lambda: TF.conv2d(t[0], t[1], t[2], stride=s, padding=p),
        "conv_transpose2d": lambda: TF.conv_transpose2d(t[0], t[1], t[2], stride=s, padding=p),
        "max_pool2d": lambda: TF.max_pool2d(t[0], t[1], t[2], t[3]),
        "upsample": lambda: TF.interpolate(t[0], scale_factor=t[1], mode="nearest"),
        "relu": lambda: TF.relu(t[0]),
        "group_norm": lambda: TF.group_norm(t[0], t[3], t[1], t[2]),
        "linear": lambda: TF.linear(t[0], t[1], t[2]),
        "roi_align": lambda: tv_ops.roi_align(t[0], t[1], t[2], t[3], t[4], t[5]),
        "roi_pool": lambda: tv_ops.roi_pool(t[0], t[1], t[2], t[3]),
        "ce": lambda: TF.cross_entropy(t[0], t[1]),
        "smooth_l1": lambda: TF.smooth_l1_loss(t[0], t[1], beta=kwargs["beta"], reduction="sum"),
        "bce": lambda: TF.binary_cross_entropy_with_logits(t[0], t[1]),
    }[kind]

    def step():
        for x in grads:
            x.grad = None
        out = call()
        out.backward(torch.ones_like(out))
    return step


def _torch_only(cases, repeats, threads):
    """Child process: time the PyTorch counterparts and print one JSON line."""
    import torch
    torch.set_num_threads(threads)
    out = {}
    for name, (_, _, a, kw, kind) in cases.items():
        fn = torch_fn(torch, kind, a, kw)
        if fn is not None:
            out[name] = median_ms(fn, repeats)
    print(json.dumps({"torch": torch.__version__, "results": out}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--ops", default="", help="comma-separated substrings of op names to run")
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for BLAS, Numba and PyTorch (default: every core)")
    ap.add_argument("--cpu", action="store_true",
                    help="time with the process CPU clock (meaningful with --threads 1)")
    ap.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", sys.executable),
                    help="a Python that can import torch and torchvision (default: this one)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ops.json"))
    args = ap.parse_args(argv)

    cases = demo_cases(np.random.default_rng(0))
    if args.ops:
        wanted = args.ops.split(",")
        cases = {k: v for k, v in cases.items() if any(w in k for w in wanted)}
    threads = args.threads
    if args.cpu:
        global TIMER
        TIMER = time.process_time
    if args.torch_only:
        return _torch_only(cases, args.repeats, threads)
    keep_freed_memory()                                # steady-state timings, as in training
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        threadpool_limits(threads, user_api="blas")
        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        blas = "(threadpoolctl not installed)"
    # (Numba's thread count is set once its backend is loaded, so that it picks its threading layer)
    machine = f"{platform.machine()} {platform.processor() or ''} {threads} cores".strip()
    print(f"machine: {machine}; python {platform.python_version()}; numpy {np.__version__}; "
          f"BLAS {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(auto)')}; "
          f"{threads} threads")

    results = {name: {} for name in cases}
    for backend in BACKENDS:
        try:
            set_backend(backend)
        except BackendError as exc:
            print(f"backend {backend}: skipped ({str(exc).split(';')[0]})")
            continue
        if backend == "numba":
            import numba
            numba.set_num_threads(threads)
        for name, (fwd, bwd, a, kw, _) in cases.items():
            results[name][backend] = median_ms(ours_fn(fwd, bwd, a, kw), args.repeats)
    set_backend("numpy")

    torch_version = None
    # PyTorch runs in a child process: two thread pools (OpenBLAS's and PyTorch's OpenMP) that
    # spin-wait in one process on a small machine slow each other down by up to 30x.
    child = subprocess.run([args.torch_python, __file__, "--torch-only", "--repeats", str(args.repeats),
                            "--ops", args.ops, "--threads", str(threads)] + (["--cpu"] if args.cpu else []),
                           capture_output=True,
                           text=True)
    if child.returncode == 0 and child.stdout.strip():
        torch_record = json.loads(child.stdout.strip().splitlines()[-1])
        torch_version = torch_record["torch"]
        for name, t in torch_record["results"].items():
            results[name]["torch"] = t
    else:
        print("PyTorch not importable here: printing our times only")

    backends = [b for b in BACKENDS if any(b in r for r in results.values())]
    head = f"{'op (forward+backward, float32)':<44}" + "".join(f"{b + ' ms':>12}" for b in backends)
    others = [b for b in backends if b != "numpy"]
    head += "".join(f"{b + '/numpy':>15}" for b in others)
    if torch_version:
        head += f"{'torch ms':>11}" + "".join(f"{b + '/torch':>13}" for b in backends)
    print(head)
    for name, r in results.items():
        line = f"{name:<44}" + "".join(f"{r.get(b, float('nan')):>12.2f}" for b in backends)
        line += "".join(f"{r[b] / r['numpy']:>15.2f}" if b in r and "numpy" in r else f"{'-':>15}"
                        for b in others)
        if torch_version:
            t = r.get("torch")
            line += f"{t:>11.2f}" if t else f"{'-':>11}"
            line += "".join(f"{r[b] / t:>13.2f}" if t and b in r else f"{'-':>13}" for b in backends)
        print(line)

    record = {"machine": machine, "blas": blas, "timer": "process CPU time" if args.cpu else "wall", "numpy": np.__version__, "torch": torch_version,
              "threads": threads, "repeats": args.repeats, "unit": "ms, median of forward+backward",
              "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=1)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
