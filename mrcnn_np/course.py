"""Helpers the notebooks share (``notebooks/01_...`` to ``10_...``): backend, fast mode, data, a
trained checkpoint, the paper's model, showing figures. Nothing here computes anything the notebooks
teach.

* ``MRCNN_BACKEND`` (default ``numpy``) picks the backend, as everywhere in the project. Under a GPU
  backend (``cupy``, ``numba-cuda``) the model's arrays live on the GPU: :func:`to_device` moves the
  NumPy arrays a cell makes there before they meet the model or an op, and :func:`to_host` brings
  results back for NumPy and matplotlib (both are no-ops on the CPU backends).
* ``MRCNN_FAST=1`` (the test suite sets it) makes every notebook small: fewer images, fewer steps.
  Notebooks 06-08 never train the ablations themselves: they read ``benchmarks/results/ablations.json``
  (``make experiments``), or the file ``$MRCNN_ABLATIONS_JSON`` names, and skip their tables without it.
* A trained model: ``runs/demo/checkpoint.npz`` if ``make demo`` was run, else a short run of the
  ``demo`` config trained here once and kept in a cache folder (``$TMPDIR/mrcnn_np_course``), which
  every notebook then reuses.
* The paper's model (notebook 10, preset ``r50_fpn``): torchvision's COCO weights if they are in a cache
  (``mrcnn-np import-weights --download`` fetches them), else the calibrated fixture of the golden tests,
  which computes the same things at the same cost but was never trained (:func:`r50_checkpoint`).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .backend import get_backend, set_backend, to_numpy

__all__ = ["FAST", "setup", "show", "to_device", "to_host", "on_numpy", "repo_root", "cache_dir", "shapes",
           "trained_checkpoint", "r50_checkpoint", "ablations", "ABLATIONS_JSON"]

FAST = os.environ.get("MRCNN_FAST", "0") not in ("", "0")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


ABLATIONS_JSON = Path(os.environ.get("MRCNN_ABLATIONS_JSON",
                                     repo_root() / "benchmarks" / "results" / "ablations.json"))


def setup() -> str:
    """Select the backend named by ``$MRCNN_BACKEND`` (default numpy); returns its name."""
    name = os.environ.get("MRCNN_BACKEND", "numpy")
    set_backend(name)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"backend: {name}   fast mode: {FAST}   (set MRCNN_BACKEND / MRCNN_FAST to change)")
    return name


def show(fig, dpi=None):
    """Display a ``matplotlib.figure.Figure`` (e.g. from :mod:`mrcnn_np.visualize`) inline as PNG,
    whatever matplotlib backend the kernel runs."""
    from IPython.display import Image, display
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    display(Image(data=buf.getvalue()))


def to_device(obj):
    """NumPy arrays -> arrays of the active backend (CuPy arrays on the GPU under ``cupy`` and
    ``numba-cuda``; unchanged on ``numpy`` and ``numba``), also inside dicts, lists and tuples (a
    batch's targets). What the model does to a batch it is given, for cells that call its parts or an
    op directly."""
    if isinstance(obj, dict):
        return {k: to_device(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return get_backend().xp.asarray(obj)
    return obj


def to_host(obj):
    """The reverse of :func:`to_device`: every array -> a NumPy array (a copy from the GPU under a GPU
    backend, :func:`mrcnn_np.backend.to_numpy`), also inside dicts, lists and tuples; for NumPy code
    and matplotlib, which read host memory only."""
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v) for v in obj)
    if type(obj).__module__.split(".")[0] == "cupy":          # a device array (NumPy's stay as they are)
        return to_numpy(obj)
    return obj


@contextlib.contextmanager
def on_numpy():
    """Run the block on the ``numpy`` backend (the reference), then restore the chosen one: for the
    finite-difference gradient checks (:mod:`mrcnn_np.gradcheck`), which perturb host arrays one
    element at a time."""
    previous = get_backend().name
    set_backend("numpy")
    try:
        yield
    finally:
        set_backend(previous)


def cache_dir() -> Path:
    d = Path(os.environ.get("MRCNN_COURSE_CACHE", Path(tempfile.gettempdir()) / "mrcnn_np_course"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def shapes(n_train: int = 1000, n_val: int = 200, seed: int = 0, **options) -> Path:
    """The shapes dataset (``train/`` and ``val/``) with these counts, written once into the cache.
    With the defaults it is the demo's data (``mrcnn-np shapes --train 1000 --val 200 --seed 0``)."""
    from .data import generate_shapes
    tag = "_".join(f"{k}{v}" for k, v in sorted(options.items()))
    root = cache_dir() / f"shapes_{n_train}_{n_val}_{seed}{'_' + tag if tag else ''}"
    if not all((root / s / "annotations.json").is_file() for s, n in (("train", n_train), ("val", n_val)) if n):
        generate_shapes(root, n_train, n_val, seed=seed, **options)
    return root


def trained_checkpoint(steps: int | None = None):
    """``(path, what)``: ``runs/demo/checkpoint.npz`` if it exists, else a short ``demo``-config run
    (``steps``: 20 in fast mode, 600 otherwise; the default recipe with the warm-up cut to a quarter of
    the run) on the demo's data, trained once into the cache (in a child process)."""
    demo = repo_root() / "runs" / "demo" / "checkpoint.npz"
    if demo.is_file():
        return demo, "the demo run (runs/demo, from `make demo`)"
    from .backend import get_backend
    from .checkpoint import read_metadata
    from .train import WARMUP_STEPS
    steps = steps or (20 if FAST else 600)
    # the default recipe (`mrcnn-np train --config demo`: lr 0.02 at batch 4, clipping), except that the
    # warm-up is cut to a quarter of a run shorter than 4 x its 200 steps: a 20-step run would otherwise
    # end (cosine-annealed) before the rate had risen past a tenth of its value, and learn nothing
    warmup = min(WARMUP_STEPS, steps // 4)
    out = cache_dir() / f"short_demo_{steps}_warmup{warmup}"
    ckpt = out / "checkpoint.npz"
    if not (ckpt.is_file() and read_metadata(ckpt)["step"] == steps):
        call = (f"run_train('demo', {str(shapes())!r}, {str(out)!r}, steps={steps}, "
                f"warmup_steps={warmup}, progress=False)")
        cmd = [sys.executable, "-c", f"from mrcnn_np.commands import run_train; {call}"]
        env = dict(os.environ, MRCNN_BACKEND=get_backend().name)
        if FAST:      # NOTE: one BLAS thread: on a busy machine two threads per process can be 5-10x slower
            env.update({v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        print(f"no runs/demo/checkpoint.npz: training a short run once (`make demo` gives the real model):\n  "
              f"mrcnn_np.commands.{call}   (as `mrcnn-np train --config demo`, warm-up {warmup} steps)")
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train_output.txt", "w") as log:
            r = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if r.returncode:
            raise RuntimeError(f"the short training run failed; see {out / 'train_output.txt'}")
    return ckpt, f"a short run of {steps} steps trained here (no runs/demo; `make demo` trains 2,500)"


def r50_checkpoint():
    """``(path, is_real)``: a checkpoint of the paper's model (preset ``r50_fpn``) for ``load_model``.

    Real (``is_real=True``): torchvision's COCO weights, ``cache_dir()/r50_coco.npz``; if it is not
    there but torchvision's file ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` is in
    :func:`mrcnn_np.import_weights.default_cache_dir` (``$MRCNN_CACHE``, else ``~/.cache/mrcnn-np``;
    ``mrcnn-np import-weights --download`` puts it there), its SHA-256 is checked (``ValueError`` if it
    does not match) and it is imported into the course cache once.
    Otherwise (``is_real=False``) the calibrated fixture of the golden tests
    (:func:`mrcnn_np.fixture_weights.fixture_checkpoint`), written once into the course cache: the same
    network, the same shapes and the same cost, but never trained, so its detections and their classes
    mean nothing. Nothing is downloaded here."""
    from .import_weights import R50_COCO_URL, default_cache_dir, download_weights, import_weights
    real = cache_dir() / "r50_coco.npz"
    if real.is_file():
        return real, True
    pth = default_cache_dir() / R50_COCO_URL.rsplit("/", 1)[-1]      # maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth
    if pth.is_file():
        download_weights(progress=False)      # the file is there: this only checks its SHA-256 (raises if bad)
        print(f"importing torchvision's COCO weights once: {pth} -> {real}")
        import_weights(pth, real)
        return real, True
    from .fixture_weights import fixture_checkpoint
    fixture = cache_dir() / "r50_fixture.npz"
    if not fixture.is_file():
        fixture_checkpoint(fixture)           # ~3 s, 178 MB; written atomically (save_checkpoint)
    return fixture, False


def ablations():
    """The ablation results (``benchmarks/results/ablations.json``, or ``$MRCNN_ABLATIONS_JSON`` to read
    another run's), or ``None`` with a message."""
    if not ABLATIONS_JSON.is_file():
        print(f"{ABLATIONS_JSON} is missing: run `make experiments` (benchmarks/ablations.py) to "
              f"train every variant; the table below is skipped.")
        return None
    data = json.loads(ABLATIONS_JSON.read_text())
    print(f"ablations: {data['date']}, {data['machine']['cpu']} ({data['machine']['cores']} cores), "
          f"{data['steps']} steps x seeds {data['seeds']}: `{data['command']}`")
    if data.get("note"):
        print("note:", data["note"])
    return data


from .course_solutions import check as check_exercise  # noqa: E402
