"""Everything runs under cupy (issue 21): the functions behind ``mrcnn-np train``, ``eval`` and ``predict``
(:mod:`mrcnn_np.commands`) and checkpoint save/load, on a tiny shapes dataset, under the strict CuPy
stand-in (``tests/cupy_strict.py``: device arrays are their own type, and a host array handed to device
code, or read back implicitly, is a ``TypeError`` as on a GPU), compared with the same calls on numpy.

No GPU is needed: the ``cupy`` backend's launchers run their CUDA C compiled by g++ on the CPU.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

import cupy_on_cpu
import cupy_strict
import mrcnn_np
from mrcnn_np.checkpoint import read_weights, save_checkpoint
from mrcnn_np.commands import load_model, predict_dataset, open_split, run_eval, run_predict, run_train
from mrcnn_np.data import generate_shapes

pytest.importorskip("pycocotools")
pytestmark = pytest.mark.skipif(
    cupy_on_cpu.GXX is None, reason="g++ not found: the CuPy stand-in runs the CUDA kernels compiled by it")

BACKENDS = ("numpy", "cupy")
LOSSES = ("loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")


@contextlib.contextmanager
def on(backend: str):
    """The block on ``numpy`` or on ``cupy`` (the stand-in); the previous backend afterwards."""
    if backend == "cupy":
        with cupy_strict.activate():
            yield
        return
    previous = mrcnn_np.get_backend().name
    mrcnn_np.set_backend("numpy")
    try:
        yield
    finally:
        mrcnn_np.set_backend(previous)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, 4, 2, seed=3, image_size=64, min_instances=1, max_instances=2)
    return root


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """3 training steps of ``tiny`` on each backend, same seed, a learning rate large enough for the
    updates to show (no warm-up): {backend: (folder, summary)}."""
    out = {}
    for b in BACKENDS:
        folder = tmp_path_factory.mktemp(f"run_{b}")
        with on(b), cupy_strict.counting() as log:
            assert mrcnn_np.get_backend().name == b
            summary = run_train("tiny", data, folder, steps=3, batch_size=2, lr=0.05, warmup_steps=1, seed=0,
                                progress=False)
        assert (log.calls > 1000) == (b == "cupy")          # the stand-in's device really did the work
        out[b] = folder, summary
    return out


def _log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]


def test_train_gives_the_same_losses_and_parameters_as_numpy(runs):
    logs = {b: _log(runs[b][0]) for b in BACKENDS}
    assert [r["step"] for r in logs["cupy"]] == [r["step"] for r in logs["numpy"]] and logs["numpy"]
    assert logs["numpy"][-1]["step"] == 3 and runs["cupy"][1]["step"] == 3
    for rn, rc in zip(logs["numpy"], logs["cupy"]):
        for k in LOSSES:
            assert rc[k] == pytest.approx(rn[k], rel=1e-4, abs=1e-6), (rn["step"], k)
    # the checkpoint written under cupy holds host arrays; after 3 steps the parameters agree
    params = {b: read_weights(runs[b][0] / "checkpoint.npz")[1] for b in BACKENDS}
    assert params["cupy"].keys() == params["numpy"].keys()
    for name, p in params["numpy"].items():
        assert type(params["cupy"][name]) is np.ndarray
        np.testing.assert_allclose(params["cupy"][name], p, rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("saved_on, loaded_on", [("cupy", "numpy"), ("numpy", "cupy")])
def test_checkpoints_cross_between_backends_bit_for_bit(runs, tmp_path, saved_on, loaded_on):
    source = runs[saved_on][0] / "checkpoint.npz"
    _, stored = read_weights(source)
    with on(loaded_on):
        model, meta = load_model(source)
        got = {n: mrcnn_np.backend.to_numpy(p.data) for n, p in model.named_parameters().items()}
        xp = mrcnn_np.xp()
        assert all(type(p.data) is xp.ndarray for p in model.named_parameters().values())
        # ... and saved again from there, read back on the other side: the same bits
        again = save_checkpoint(tmp_path / "again.npz", model, step=meta["step"], extra=meta.get("extra"))
    assert got.keys() <= stored.keys()
    for name, v in got.items():
        assert v.dtype == stored[name].dtype and np.array_equal(v, stored[name]), name
    with on(saved_on):
        model2, _ = load_model(again)
        for name, p in model2.named_parameters().items():
            assert np.array_equal(mrcnn_np.backend.to_numpy(p.data), stored[name]), name


def test_a_run_resumes_on_the_other_backend(runs, data, tmp_path):
    """A checkpoint with its optimizer state (momentum), written under one backend, resumed under the
    other for one more step: the same step as resuming on numpy."""
    import shutil
    logs, params = {}, {}
    for saved_on, resumed_on in (("numpy", "numpy"), ("numpy", "cupy"), ("cupy", "numpy")):
        folder = tmp_path / f"{saved_on}_then_{resumed_on}"
        shutil.copytree(runs[saved_on][0], folder)
        with on(resumed_on):
            summary = run_train("tiny", data, folder, steps=4, batch_size=2, lr=0.05, warmup_steps=1, seed=0,
                                resume=True, progress=False)
        assert summary["step"] == 4
        logs[saved_on, resumed_on] = _log(folder)[-1]
        params[saved_on, resumed_on] = read_weights(folder / "checkpoint.npz")[1]
    ref = ("numpy", "numpy")
    for key in logs:
        assert logs[key]["step"] == 4
        for k in LOSSES:
            assert logs[key][k] == pytest.approx(logs[ref][k], rel=1e-4, abs=1e-6), (key, k)
        for name, p in params[ref].items():
            np.testing.assert_allclose(params[key][name], p, rtol=1e-3, atol=1e-5, err_msg=f"{key} {name}")


def test_eval_and_predict_dataset_match_numpy_and_are_host_data(runs, data, tmp_path):
    ckpt = runs["numpy"][0] / "checkpoint.npz"
    metrics, preds = {}, {}
    for b in BACKENDS:
        with on(b):
            metrics[b] = run_eval(ckpt, data, tmp_path / f"metrics_{b}.json")
            model, _ = load_model(ckpt)
            preds[b] = predict_dataset(model, open_split(data, "val"))
        json.dumps(metrics[b])                                      # JSON-able as it is
        assert json.loads((tmp_path / f"metrics_{b}.json").read_text()) == json.loads(json.dumps(metrics[b]))
    for kind in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75"):
            assert metrics["cupy"][kind][k] == pytest.approx(metrics["numpy"][kind][k], abs=1e-3), (kind, k)
    assert preds["cupy"].keys() == preds["numpy"].keys()
    for image_id, pn in preds["numpy"].items():
        pc = preds["cupy"][image_id]
        for k in ("boxes", "scores", "labels"):
            assert type(pc[k]) is np.ndarray, k                       # host arrays, not device ones
        assert len(pc["boxes"]) == len(pn["boxes"])
        np.testing.assert_allclose(pc["scores"], pn["scores"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pc["boxes"], pn["boxes"], rtol=1e-4, atol=1e-2)
        assert np.array_equal(pc["labels"], pn["labels"])
        assert all(isinstance(r["counts"], str) for r in pc["segmentation"])


def test_predict_writes_the_same_results_as_numpy(runs, data, tmp_path):
    ckpt = runs["numpy"][0] / "checkpoint.npz"
    written = {}
    for b in BACKENDS:
        with on(b):
            r = run_predict([data / "val" / "images"], ckpt, tmp_path / b, score_thresh=0.0)
        assert r["predicted"] == 2 and r["skipped"] == []
        assert len(list((tmp_path / b).glob("*_pred.png"))) == 2
        written[b] = json.loads((tmp_path / b / "results.json").read_text())
    assert len(written["cupy"]) == len(written["numpy"])
    for rc, rn in zip(written["cupy"], written["numpy"]):
        assert (rc["image_id"], rc["category_id"]) == (rn["image_id"], rn["category_id"])
        assert rc["score"] == pytest.approx(rn["score"], rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(rc["bbox"], rn["bbox"], atol=1e-2)


def test_the_command_line_runs_under_cupy(runs, data, tmp_path, capsys):
    """``mrcnn-np ... --backend cupy`` through :func:`mrcnn_np.cli.main` (exit status 0, files written)."""
    from mrcnn_np.cli import main
    ckpt = runs["cupy"][0] / "checkpoint.npz"
    with cupy_strict.activate():
        assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--out",
                     str(tmp_path / "metrics.json"), "--backend", "cupy"]) == 0
        assert main(["predict", str(data / "val" / "images"), "--checkpoint", str(ckpt), "--out",
                     str(tmp_path / "pred"), "--backend", "cupy"]) == 0
        assert main(["backends"]) == 0
        assert mrcnn_np.get_backend().name == "cupy"
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"bbox", "segm"}
    assert isinstance(json.loads((tmp_path / "pred" / "results.json").read_text()), list)
    assert "cupy" in capsys.readouterr().out


def test_the_course_helpers_move_arrays_to_the_device_and_back():
    """``course.to_device`` / ``to_host`` (what the notebooks use) and ``course.on_numpy``."""
    from mrcnn_np import course
    target = {"boxes": np.ones((2, 4), np.float32), "labels": np.array([1, 2]), "resized_size": (64, 48),
              "scale": np.float64(0.5), "name": "a.png"}
    with on("numpy"):
        assert course.to_device(target)["boxes"] is target["boxes"]           # nothing moves on the CPU
        assert course.to_host(target)["boxes"] is target["boxes"]
    with cupy_strict.activate() as cp:
        on_device = course.to_device(target)
        assert type(on_device["boxes"]) is cp.ndarray and type(on_device["labels"]) is cp.ndarray
        assert on_device["resized_size"] == (64, 48) and on_device["scale"] is target["scale"]
        pair = course.to_host((on_device["boxes"], [on_device["labels"]]))
        assert type(pair) is tuple and type(pair[0]) is np.ndarray and type(pair[1][0]) is np.ndarray
        assert np.array_equal(pair[0], target["boxes"]) and np.array_equal(pair[1][0], target["labels"])
        with course.on_numpy():
            assert mrcnn_np.get_backend().name == "numpy"
        assert mrcnn_np.get_backend().name == "cupy"
