"""Every notebook runs top to bottom with the project's own code (its asserts are its checks), in fast mode
(``MRCNN_FAST=1``: small data, short runs, the committed ablation results instead of training), and shows
at least one picture inline, on the ``numpy`` backend and on ``cupy`` through the strict CuPy stand-in
(``tests/cupy_strict.py``: device arrays of their own type, so a NumPy array handed to the model or an op,
or a device array handed to NumPy or matplotlib, fails as it would on a GPU)."""
import json
import os
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_is_one_notebook_per_section_of_the_notes():
    """01..09 follow the nine sections of the notes (toy model); 10 is the paper's model, r50_fpn, at full scale."""
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{k:02d}" for k in range(1, 11)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_source(path):
    nb = json.loads(path.read_text())
    code = [("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"]
    assert "set_backend(os.environ.get(\"MRCNN_BACKEND\"" in code[0]     # the first cell picks the backend
    assert not any("matplotlib.use(" in c for c in code)                # pictures must show inline


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_come_from_the_committed_code(path):
    """``make course`` executed the notebook in full mode and recorded the hash of its code cells; a
    code cell edited since (outputs now stale) fails here until ``make course`` runs it again."""
    from mrcnn_np.course_build import MAX_BYTES, code_hash
    nb = json.loads(path.read_text())
    record = nb["metadata"].get("mrcnn_np")
    assert record, f"{path.name} was not executed by `make course` (no outputs committed)"
    assert record["code_sha256"] == code_hash(nb), (
        f"{path.name}: a code cell changed after the committed outputs were made; run "
        f"`make course COURSE_ARGS=notebooks/{path.name}`")
    assert record["mode"] == "full"
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") is None for c in cells)          # no volatile counters
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in cells for o in c.get("outputs", [])), f"{path.name}: no figure committed"
    assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))
    assert path.stat().st_size <= MAX_BYTES


#: Numbers the Markdown may state without a cell printing them: the paper's (Table 2 and the text)
#: and the method's constants. Anything else that looks like a measurement (0.xyz) must appear in
#: one of the notebook's own outputs, so that prose cannot drift from what the code measures.
PAPER_AND_CONSTANTS = {
    "0.05", "0.25", "0.001", "0.7", "0.3", "0.5", "0.75", "0.95", "0.9", "0.0", "0.02", "0.005",
    "0.485", "0.456", "0.406", "0.229", "0.224", "0.225",        # ImageNet's normalisation
    "0.0001", "0.1", "0.2", "0.4", "0.6", "0.8",
    "0.50", "0.55",                                              # COCO's IoU thresholds 0.50:0.05:0.95
    # the paper's Table 2 (mask AP / AP50 / AP75) and its text
    "30.3", "24.8", "19.7", "51.2", "44.1", "48.1", "32.0", "31.5", "32.6", "50.2", "50.6", "53.6",
}


def _outputs_text(nb) -> str:
    parts = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            parts.append("".join(o.get("text", "")))
            for kind in ("text/plain", "text/markdown", "text/html"):
                parts.append("".join(o.get("data", {}).get(kind, "")))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_measured_number_is_typed_into_prose(path):
    import re
    nb = json.loads(path.read_text())
    outputs = _outputs_text(nb)
    typed = []
    for c in nb["cells"]:
        if c["cell_type"] != "markdown":
            continue
        text = "".join(c["source"])
        text = re.sub(r"\$[^$]*\$", " ", text)                       # equations are not measurements
        text = re.sub(r"`[^`]*`", " ", text)                           # nor code
        for m in re.finditer(r"(?<![\w.])0\.\d{2,}(?![\d.])", text):
            if m.group() not in PAPER_AND_CONSTANTS and m.group() not in outputs:
                typed.append(m.group())
    assert not typed, f"{path.name}: numbers in Markdown that no cell prints: {typed}"


TESTS_DIR = pathlib.Path(__file__).resolve().parent

#: The notebook kernel is a process of its own: this startup hook, on its PYTHONPATH with tests/, installs
#: the stand-in as ``cupy`` there before the first cell runs (the first cell then selects ``cupy``).
STANDIN_SITECUSTOMIZE = """\
import os
if os.environ.get("MRCNN_CUPY_STANDIN") == "1":
    import cupy_strict
    cupy_strict.install()
"""


@pytest.fixture(scope="module")
def standin_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("cupy_standin_site")
    (site / "sitecustomize.py").write_text(STANDIN_SITECUSTOMIZE)
    return site


def _kernel_backend(backend, monkeypatch, standin_site):
    """Environment for the kernel nbclient starts: MRCNN_BACKEND, and for "cupy-standin" the hook."""
    if backend == "numpy":
        monkeypatch.setenv("MRCNN_BACKEND", "numpy")
        return
    import cupy_on_cpu
    if cupy_on_cpu.GXX is None:
        pytest.skip("g++ not found: the CuPy stand-in runs the CUDA kernels compiled by it")
    monkeypatch.setenv("MRCNN_BACKEND", "cupy")
    monkeypatch.setenv("MRCNN_CUPY_STANDIN", "1")
    paths = [str(standin_site), str(TESTS_DIR)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


@pytest.mark.parametrize("backend", ["numpy", "cupy-standin"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, backend, tmp_path, monkeypatch, standin_site):
    monkeypatch.setenv("MRCNN_FAST", "1")
    _kernel_backend(backend, monkeypatch, standin_site)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()     # raises CellExecutionError, with the failing cell, on any error
    print(f"{path.name} ({backend}): {time.perf_counter() - t0:.1f} s")
    first = "".join(o.get("text", "") for o in next(c for c in nb.cells if c.cell_type == "code").outputs)
    assert f"backend: {backend.removesuffix('-standin')}" in first       # the kernel ran the backend named
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no picture"


#: Notebooks that need no trained model run in full mode in the suite too (a few seconds each), so an
#: assert that only holds on fast mode's small data fails here rather than in a learner's hands;
#: ``make course`` runs all of them in full mode.
FULL_MODE_IN_SUITE = ("03_roi_align.ipynb", "06_decoupled_masks.ipynb", "07_dense_classification.ipynb")


@pytest.mark.parametrize("name", FULL_MODE_IN_SUITE)
def test_cheap_notebooks_run_in_full_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_FAST", "0")
    nb = nbformat.read(NOTEBOOKS[0].parent / name, as_version=4)
    assert "trained_checkpoint" not in "".join(c.source for c in nb.cells)   # cheap: no training
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()
    print(f"{name} (full mode): {time.perf_counter() - t0:.1f} s")
