"""benchmarks/ablations.py end to end on a tiny model: child processes, thread variables, the JSON's fields.
(The accuracy numbers of such a run mean nothing; the real experiment is `make experiments`.)"""
import importlib.util
import json
import pathlib

import pytest

from conftest_data import shapes_dir  # noqa: F401

SCRIPT = pathlib.Path(__file__).parent.parent / "benchmarks" / "ablations.py"


def _load():
    spec = importlib.util.spec_from_file_location("ablations", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ablations_script_writes_per_seed_and_mean_results(shapes_dir, tmp_path):
    ablations = _load()
    out = tmp_path / "ablations.json"
    rc = ablations.main(["--variants", "p5_roi_pool", "--seeds", "0", "1", "--steps", "2",
                         "--config", "tiny", "--jobs", "2", "--threads", "1", "--data", str(shapes_dir),
                         "--runs", str(tmp_path / "runs"), "--out", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0, report
    assert {"command", "date", "machine", "steps", "seeds", "threads_per_job", "variants"} <= set(report)
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert report["steps"] == 2 and report["threads_per_job"] == 1
    assert set(report["variants"]) == {"p5_roi_pool"}
    for name in ("p5_roi_pool",):
        v = report["variants"][name]
        assert v["overrides"] == ablations.VARIANTS[name]
        assert [r["seed"] for r in v["runs"]] == [0, 1]
        for r in v["runs"]:
            assert r["steps_done"] == 2 and set(r["segm"]) == {"AP", "AP50", "AP75"}
        mean = sum(r["segm"]["AP"] for r in v["runs"]) / 2
        assert v["mean"]["segm"]["AP"] == pytest.approx(mean)
    # each run really was trained with its variant's options and its own seed
    log = (tmp_path / "runs" / "p5_roi_pool_seed1" / "stdout.txt").read_text()
    assert "--set pool_level=5 --set pooler=roi_pool" in log and "--seed 1" in log
