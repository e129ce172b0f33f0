"""Every notebook runs top to bottom with the project's own code (its asserts are its checks), in fast mode
(``MRCNN_FAST=1``: small data, short runs, the committed ablation results instead of training), and shows
at least one picture inline."""
import json
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
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")   # committed clean


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_FAST", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()     # raises CellExecutionError, with the failing cell, on any error
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no picture"
