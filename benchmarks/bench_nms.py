"""Time our NumPy NMS against torchvision.ops.nms (when torch is importable) at 4,000 boxes.

    PYTHONPATH=. python benchmarks/bench_nms.py [--n 4000] [--repeats 7]

The boxes imitate RPN proposals: jittered copies around a few dozen "objects" in an 800 x 800 image
(many heavy overlaps), plus a uniform scatter (few overlaps above 0.7); scores are uniform random.
Each case is timed ``--repeats`` times and the median is reported; results (with the machine's
processor and CPU count) go to ``benchmarks/results/nms.json``, written atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mrcnn_np.ops.nms import nms  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "nms.json"


def clustered(rng, n, img=800.0, objects=40):
    c = rng.uniform(0, img, (objects, 2))
    s = rng.uniform(16, 300, (objects, 2))
    k = rng.integers(0, objects, n)
    ctr = c[k] + rng.normal(0, 0.15, (n, 2)) * s[k]
    wh = s[k] * np.exp(rng.normal(0, 0.25, (n, 2)))
    return np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=1).clip(0, img).astype(np.float32)


def uniform(rng, n, img=800.0):
    xy = rng.uniform(0, img, (n, 2))
    wh = rng.uniform(8, 256, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def median_time(fn, repeats):
    fn()                                                   # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    return {"processor": cpu_name(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__}


def write_atomically(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    try:
        import torch
        import torchvision
        torch.set_num_threads(1)       # torchvision's CPU NMS kernel is single-threaded anyway
    except ImportError:
        torch = torchvision = None
    info = machine()
    print(f"machine: {info['processor']}, {info['cpu_count']} CPUs, {info['platform']}")
    print(f"numpy {np.__version__}; torchvision {torchvision.__version__ if torchvision else 'absent'}")
    rng = np.random.default_rng(0)
    cases = []
    for name, make in (("clustered", clustered), ("uniform", uniform)):
        boxes = make(rng, args.n)
        scores = rng.random(args.n).astype(np.float32)
        for thr in (0.5, 0.7):
            ours_keep = nms(boxes, scores, thr)
            ours = median_time(lambda: nms(boxes, scores, thr), args.repeats)
            case = {"boxes": name, "n": args.n, "iou_threshold": thr, "kept": int(ours_keep.size),
                    "ours_ms": round(ours * 1e3, 3)}
            line = f"{name:9s} n={args.n} thr={thr}: kept {ours_keep.size:5d}  ours {ours * 1e3:8.2f} ms"
            if torch is not None:
                tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
                same = bool(np.array_equal(torchvision.ops.nms(tb, ts, thr).numpy(), ours_keep))
                theirs = median_time(lambda: torchvision.ops.nms(tb, ts, thr), args.repeats)
                case.update(torchvision_ms=round(theirs * 1e3, 3), ratio=round(ours / theirs, 3),
                            identical_result=same)
                line += f"  torchvision {theirs * 1e3:8.2f} ms  ratio {ours / theirs:5.2f}x" \
                        f"  {'identical' if same else 'DIFFERENT'}"
            print(line)
            cases.append(case)
    result = {"benchmark": "nms", "machine": info, "repeats": args.repeats,
              "torchvision": torchvision.__version__ if torchvision else None, "cases": cases}
    if torch is not None:
        result["max_ratio"] = max(c["ratio"] for c in cases)
        print(f"worst ratio (ours / torchvision): {result['max_ratio']:.2f}x  (target: within 3x)")
    write_atomically(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
