"""Executing the course's notebooks into the repository (``make course``), and the check that the
committed outputs come from the committed code.

    python -m mrcnn_np.course_build [NOTEBOOK ...] [--fast] [--backend numba] [--timeout 1800]

runs each notebook top to bottom in a fresh kernel (full mode unless ``--fast``), then writes it back
in place with its outputs, so that a learner sees every figure and checked number on the repository
page without running anything. What is written is kept reviewable:

* execution counts are cleared, nbclient's per-cell timing metadata is not recorded, and the kernel's
  temporary file names in warnings become ``<cell>``;
* the notebook's metadata gets ``mrcnn_np = {"code_sha256", "mode", "backend"}``: the SHA-256 of its
  code cells' sources (:func:`code_hash`), so that ``tests/test_notebooks.py`` fails when a code cell
  changes without the notebook being executed again;
* the file is replaced atomically, and only after the whole notebook ran (a failing cell leaves the
  committed file as it was and names the cell).

Figures are the PNGs the notebooks display (at matplotlib's inline resolution); each notebook stays
under :data:`MAX_BYTES`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from .atomic import atomic_write_bytes

__all__ = ["code_hash", "execute", "main", "MAX_BYTES", "NOTEBOOKS_DIR"]

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
MAX_BYTES = 3 * 2 ** 20                 # a notebook with its figures: at most 3 MiB
_KERNEL_FILE = re.compile(r"\S*ipykernel_\d+[/\\]\d+\.py")   # e.g. /tmp/ipykernel_15914/1663477661.py


def code_hash(nb) -> str:
    """SHA-256 over the code cells' sources, in order (Markdown and outputs left out)."""
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in nb["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources).encode("utf-8")).hexdigest()


def execute(path, fast: bool = False, backend: str = "numba", timeout: int = 1800) -> dict:
    """Run notebook ``path`` and write it back with its outputs (module docstring). Returns
    ``{"path", "seconds", "bytes"}``."""
    import nbclient
    import nbformat
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    env = {"MRCNN_BACKEND": backend, "MRCNN_FAST": "1" if fast else "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                       # the kernel inherits them
    try:
        with tempfile.TemporaryDirectory() as cwd:   # whatever a notebook writes stays out of the repo
            client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                             record_timing=False, resources={"metadata": {"path": cwd}})
            t0 = time.perf_counter()
            client.execute()
            seconds = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
            for out in cell.get("outputs", []):
                if "execution_count" in out:
                    out["execution_count"] = None
                if out.get("output_type") == "stream":    # a warning names the kernel's temp file
                    out["text"] = _KERNEL_FILE.sub("<cell>", out["text"])
            cell.metadata.pop("execution", None)
    nb.metadata["mrcnn_np"] = {"code_sha256": code_hash(nb), "mode": "fast" if fast else "full",
                               "backend": backend}
    data = (nbformat.writes(nb) + "\n").encode("utf-8")
    if len(data) > MAX_BYTES:
        raise ValueError(f"{path}: {len(data) / 2 ** 20:.1f} MiB with its outputs, over the "
                         f"{MAX_BYTES / 2 ** 20:.0f} MiB a committed notebook may take; lower its "
                         f"figures' size or dpi")
    atomic_write_bytes(path, data)
    return {"path": str(path), "seconds": seconds, "bytes": len(data)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mrcnn_np.course_build", description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")
    ap.add_argument("--fast", action="store_true", help="fast mode (MRCNN_FAST=1), as the tests run them")
    ap.add_argument("--backend", default="numba", help="MRCNN_BACKEND for the kernel (default numba)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    for path in paths:
        r = execute(path, fast=args.fast, backend=args.backend, timeout=args.timeout)
        print(f"{path.name}: {r['seconds']:.0f} s, {r['bytes'] / 2 ** 10:.0f} KiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
