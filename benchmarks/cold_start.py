"""Numba's cold start: the first demo training step with an empty kernel cache, then with a warm one.

    python benchmarks/cold_start.py

Each measurement runs in a fresh Python process with ``NUMBA_CACHE_DIR`` pointing at a temporary
folder: the first process finds it empty and compiles every kernel a training step uses (float32),
the second loads them from the cache (``cache=True``). Printed: import + ``set_backend("numba")``,
the first step and the second step (steady state) of each process, in wall-clock and in CPU time
(the compilation is single-threaded, so its CPU time is what it takes on an idle machine).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np
import mrcnn_np
mrcnn_np.set_backend("numba")
t1, c1 = time.perf_counter(), time.process_time()
sys.path.insert(0, sys.argv[1])
from bench_step import LR, STEP_CONFIG, make_batch
from mrcnn_np.model import build_model, get_config
images, targets = make_batch()
model = build_model(get_config(STEP_CONFIG, num_classes=3), seed=0)
steps, cpu = [], []
for _ in range(2):
    t, c = time.perf_counter(), time.process_time()
    model.zero_grad()
    model.forward_train(images, targets, np.random.default_rng(0))
    model.backward()
    steps.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"import_s": t1 - t0, "first_step_s": steps[0], "second_step_s": steps[1],
                  "import_cpu_s": c1 - c0, "first_step_cpu_s": cpu[0], "second_step_cpu_s": cpu[1]}))
"""


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(here, "..")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=root)
        for label in ("empty cache", "warm cache"):
            r = subprocess.run([sys.executable, "-c", CHILD, here], capture_output=True, text=True,
                               env=env, check=True)
            out[label] = json.loads(r.stdout.strip().splitlines()[-1])
            v = out[label]
            print(f"{label:>12}: import + set_backend {v['import_s']:.2f} s, first step "
                  f"{v['first_step_s']:.2f} s, second step {v['second_step_s']:.3f} s (CPU time: "
                  f"{v['import_cpu_s']:.2f} / {v['first_step_cpu_s']:.2f} / {v['second_step_cpu_s']:.3f} s)")
    return out


if __name__ == "__main__":
    main()
