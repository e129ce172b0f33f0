"""The paper's Table 2 ablations at toy scale: train each variant on the shapes data, evaluate with
pycocotools, write ``benchmarks/results/ablations.json``.

Variants (each a set of config fields, see ``mrcnn_np/model/configs.py``; the same as
``mrcnn-np train --set NAME=VALUE``):

    baseline         Mask R-CNN as the project trains it: per-class sigmoid + BCE, FCN mask head,
                     RoIAlign, FPN level per RoI
    softmax          mask_loss=softmax        per-pixel softmax over classes (Table 2b)
    fc_mask_head     mask_head=fc             an MLP mask head (Table 2e)
    roi_pool         pooler=roi_pool          RoIPool instead of RoIAlign (Table 2c)
    p5_roi_align     pool_level=5             every RoI from P5 alone, stride 32 (Table 2d)
    p5_roi_pool      pool_level=5, pooler=roi_pool                                (Table 2d)

Each (variant, seed) is one ``mrcnn-np train`` then ``mrcnn-np eval`` in a child process with
``OMP_NUM_THREADS`` (and the BLAS equivalents) set to ``--threads`` (default: cores / jobs), ``--jobs``
of them at a time. The data is ``mrcnn-np shapes --train 1000 --val 200 --seed 0`` (written if missing).

    python benchmarks/ablations.py                       # 6 variants x 2 seeds, 400 steps, 12 jobs on 16 cores
    python benchmarks/ablations.py --jobs 12 --steps 400 --seeds 0 1 --out benchmarks/results/ablations.json
    python benchmarks/ablations.py --variants baseline softmax --steps 50 --out /tmp/smoke.json   # a smoke run

The default ``--steps`` (400) is chosen so that one run takes at most about 6 minutes on one thread of the
project's machine (measured CPU time per step at 1 thread: 0.36-0.42 s for most variants, 0.67 s with
RoIPool on the FPN levels; then about half a minute of evaluation). ``--max-minutes`` (5.5) caps each run's
training so that a slower machine stops early rather than overrun; the JSON records ``steps_done``.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "baseline": {},
    "softmax": {"mask_loss": "softmax"},
    "fc_mask_head": {"mask_head": "fc"},
    "roi_pool": {"pooler": "roi_pool"},
    "p5_roi_align": {"pool_level": 5},
    "p5_roi_pool": {"pool_level": 5, "pooler": "roi_pool"},
}
PAPER = {   # Mask R-CNN, Table 2 (COCO minival, mask AP / AP50 / AP75)
    "softmax": "2b: softmax 24.8 / 44.1 / 25.1 vs sigmoid 30.3 / 51.2 / 31.5",
    "fc_mask_head": "2e: MLP (fc) 31.5 / 53.7 / 32.8 vs FCN 33.6 / 55.2 / 35.3",
    "roi_pool": "2c: RoIPool 26.9 / 48.8 / 26.4 vs RoIAlign 30.3 / 51.2 / 31.5",
    "p5_roi_align": "2d (stride 32): RoIAlign 30.9 / 51.8 / 32.1",
    "p5_roi_pool": "2d (stride 32): RoIPool 23.6 / 46.5 / 21.6",
}
# (variant, reference it is compared with, the paper's mask AP of both, which table)
COMPARISONS = [
    ("softmax", "baseline", (24.8, 30.3), "2b: softmax vs sigmoid"),
    ("roi_pool", "baseline", (26.9, 30.3), "2c: RoIPool vs RoIAlign"),
    ("p5_roi_pool", "p5_roi_align", (23.6, 30.9), "2d: RoIPool vs RoIAlign, stride 32"),
    ("fc_mask_head", "baseline", (31.5, 33.6), "2e: MLP vs FCN mask head"),
    ("p5_roi_align", "baseline", None, "stride 32 alone vs the FPN levels (not in Table 2)"),
]
DEFAULT_STEPS = 400         # about 2.7 min (baseline) to 4.5 min (RoIPool) of training per run at 1 thread
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_run(variant, seed, args, data, threads) -> dict:
    out = Path(args.runs) / f"{variant}_seed{seed}"
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}}
    sets = [a for k, v in VARIANTS[variant].items() for a in ("--set", f"{k}={v}")]
    mrcnn = [sys.executable, "-m", "mrcnn_np"]
    backend = ["--backend", args.backend] if args.backend else []
    train = mrcnn + ["train", "--config", args.config, "--data", str(data), "--out", str(out),
                     "--steps", str(args.steps), "--seed", str(seed), *sets, *backend]
    if args.max_minutes:
        train += ["--max-minutes", str(args.max_minutes)]
    evaluate = mrcnn + ["eval", "--checkpoint", str(out / "checkpoint.npz"), "--data", str(data),
                        "--out", str(out / "metrics.json"), *backend]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out / "stdout.txt", "w") as log:
        for cmd in (train, evaluate):
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            r = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            if r.returncode:
                return {"seed": seed, "error": f"{shlex.join(cmd[2:4])} exited {r.returncode}; see {out / 'stdout.txt'}"}
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    secs = [r["sec_per_step"] for r in records if "sec_per_step" in r]
    return {"seed": seed, "steps_done": records[-1]["step"] if records else 0,
            "sec_per_step_median": statistics.median(secs) if secs else None, "wall_s": round(wall, 1),
            "segm": {k: metrics["segm"][k] for k in ("AP", "AP50", "AP75")},
            "bbox": {k: metrics["bbox"][k] for k in ("AP", "AP50", "AP75")},
            "segm_per_class": {n: v["AP"] for n, v in metrics["segm"].get("per_class", {}).items()},
            "final_loss_mask": records[-1].get("loss_mask") if records else None}


def summarise(runs: list) -> tuple[dict, dict]:
    """Mean and sample standard deviation (n - 1) over the seeds that finished, per metric."""
    ok = [r for r in runs if "error" not in r]
    mean, std = {}, {}
    for kind in ("segm", "bbox"):
        vals = {k: [r[kind][k] for r in ok] for k in ("AP", "AP50", "AP75")}
        mean[kind] = {k: statistics.fmean(v) for k, v in vals.items()} if ok else None
        std[kind] = {k: statistics.stdev(v) for k, v in vals.items()} if len(ok) > 1 else None
    return mean, std


def verdicts(report: dict) -> list[dict]:
    """Per comparison: our mask-AP gap (variant - reference, means over seeds), the seed spread (the
    larger of the two variants' ranges, max - min over seeds: notebooks 06-08 use the same rule), the
    standard error of the difference of means ``sqrt(s_v^2 / n_v + s_r^2 / n_r)``, the paper's gap,
    and whether the paper's direction holds here with a gap larger than the seed spread."""
    out = []
    for v, ref, paper, what in COMPARISONS:
        dv, dr = report["variants"].get(v), report["variants"].get(ref)
        if not dv or not dr or not dv["mean"]["segm"] or not dr["mean"]["segm"]:
            continue
        av = [r["segm"]["AP"] for r in dv["runs"] if "error" not in r]
        ar = [r["segm"]["AP"] for r in dr["runs"] if "error" not in r]
        gap = statistics.fmean(av) - statistics.fmean(ar)
        se = ((statistics.variance(av) / len(av) if len(av) > 1 else float("nan"))
              + (statistics.variance(ar) / len(ar) if len(ar) > 1 else float("nan"))) ** 0.5
        paper_gap = None if paper is None else paper[0] - paper[1]
        spread = max(max(av) - min(av), max(ar) - min(ar))
        out.append({"variant": v, "reference": ref, "what": what, "gap": gap, "se": se, "spread": spread,
                    "paper_gap": paper_gap,
                    "direction_holds": None if paper_gap is None else (gap < 0) == (paper_gap < 0),
                    "beyond_spread": abs(gap) > spread})
    return out


def markdown(report: dict) -> str:
    """The table of docs/results.md: per variant mean ± std over seeds, then one line per comparison."""
    lines = ["| variant | mask AP | AP50 | AP75 | box AP | seeds |", "|---|---:|---:|---:|---:|---:|"]
    for v, d in report["variants"].items():
        m, sd = d["mean"], d.get("std")
        if not m["segm"]:
            continue
        cell = (lambda kind, k: f"{m[kind][k]:.3f} ± {sd[kind][k]:.3f}") if sd else \
            (lambda kind, k: f"{m[kind][k]:.3f}")
        n = sum("error" not in r for r in d["runs"])
        lines.append(f"| {v} | {cell('segm', 'AP')} | {cell('segm', 'AP50')} | {cell('segm', 'AP75')} | "
                     f"{cell('bbox', 'AP')} | {n} |")
    lines += ["", "| comparison | our mask-AP gap (± s.e.) | seed spread | the paper's gap | "
                  "the paper's direction here |", "|---|---:|---:|---:|---|"]
    for c in verdicts(report):
        paper = "—" if c["paper_gap"] is None else f"{c['paper_gap']:+.1f}"
        if not c["beyond_spread"]:
            verdict = "not resolved: the gap is within the seed spread"
        elif c["direction_holds"] is None:
            verdict = "a gap larger than the seed spread"
        else:
            verdict = ("holds" if c["direction_holds"] else "reversed") + ", beyond the seed spread"
        lines.append(f"| {c['what']} ({c['variant']} − {c['reference']}) | {c['gap']:+.3f} "
                     f"(± {c['se']:.3f}) | {c['spread']:.3f} | {paper} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per run (batch 4)")
    p.add_argument("--jobs", type=int, default=None, help="runs at a time (default: min(cores, runs))")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: cores // jobs, >= 1)")
    p.add_argument("--config", default="demo")
    p.add_argument("--backend", default=None, help="array backend for every run (default: numpy)")
    p.add_argument("--max-minutes", type=float, default=5.5,
                   help="cap on each run's training time (a run that hits it records fewer steps_done)")
    p.add_argument("--data", default=str(ROOT / "data" / "shapes"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "ablations"), help="where the runs go")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ablations.json"))
    p.add_argument("--table", metavar="JSON", default=None,
                   help="train nothing: print the Markdown table of an earlier run's JSON")
    args = p.parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return 0
    n_runs = len(args.variants) * len(args.seeds)
    args.jobs = args.jobs or max(1, min(os.cpu_count() or 1, n_runs))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    data = Path(args.data)
    if not all((data / s / "annotations.json").is_file() for s in ("train", "val")):
        subprocess.run([sys.executable, "-m", "mrcnn_np", "shapes", "--out", str(data), "--train", "1000",
                        "--val", "200", "--seed", "0"], check=True, cwd=ROOT)
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    print(f"{len(jobs)} runs ({len(args.variants)} variants x {len(args.seeds)} seeds), {args.steps} steps "
          f"each, {args.jobs} at a time, {threads} thread(s) each", flush=True)
    t0 = time.perf_counter()
    results = {v: [] for v in args.variants}
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(one_run, v, s, args, data, threads): (v, s) for v, s in jobs}
        for f in cf.as_completed(futures):
            v, s = futures[f]
            r = f.result()
            results[v].append(r)
            msg = r.get("error") or (f"segm AP {r['segm']['AP']:.3f} AP50 {r['segm']['AP50']:.3f} "
                                     f"AP75 {r['segm']['AP75']:.3f}  {r['sec_per_step_median']:.3f} s/step")
            print(f"[{time.perf_counter() - t0:6.0f} s] {v:13s} seed {s}: {msg}", flush=True)
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "config": args.config, "backend": args.backend or os.environ.get("MRCNN_BACKEND", "numpy"),
        "steps": args.steps, "batch_size": 4, "seeds": args.seeds, "jobs": args.jobs,
        "threads_per_job": threads, "data": "shapes: 1000 train / 200 val images, seed 0",
        "total_seconds": round(time.perf_counter() - t0, 1),
        "variants": {v: {"overrides": VARIANTS[v], "paper": PAPER.get(v, "Table 2 baseline: 30.3 / 51.2 / 31.5"),
                         "runs": sorted(results[v], key=lambda r: r["seed"]),
                         **dict(zip(("mean", "std"), summarise(results[v])))}
                     for v in args.variants},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{'variant':14s} {'segm AP':>14s} {'AP50':>14s} {'AP75':>14s} {'bbox AP':>14s}   (mean ± std over seeds)")
    for v, d in report["variants"].items():
        m, sd = d["mean"], d["std"]
        if m["segm"]:
            cell = lambda kind, k: f"{m[kind][k]:.3f} ± {sd[kind][k]:.3f}" if sd else f"{m[kind][k]:.3f}"
            print(f"{v:14s} {cell('segm', 'AP'):>14s} {cell('segm', 'AP50'):>14s} {cell('segm', 'AP75'):>14s} "
                  f"{cell('bbox', 'AP'):>14s}")
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
