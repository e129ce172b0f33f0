"""The mrcnn-np command: sub-commands run in-process through cli.main."""
import json

from mrcnn_np.cli import main


def test_shapes_command_writes_coco_splits(tmp_path, capsys):
    assert main(["shapes", "--out", str(tmp_path), "--train", "3", "--val", "2", "--seed", "4",
                 "--backend", "numpy"]) == 0
    for split, n in (("train", 3), ("val", 2)):
        data = json.loads((tmp_path / split / "annotations.json").read_text())
        assert len(data["images"]) == n
        assert all((tmp_path / split / "images" / im["file_name"]).exists() for im in data["images"])
    assert "train: 3 images" in capsys.readouterr().out


def test_shapes_command_rejects_bad_counts(tmp_path, capsys):
    assert main(["shapes", "--out", str(tmp_path), "--train", "-1"]) == 2
    assert "n_train" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                   # nothing half-written


# --- train / eval / predict on a tiny model (the pipeline's plumbing, not its accuracy) -------------

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data, run = root / "shapes", root / "run"
    assert main(["shapes", "--out", str(data), "--train", "6", "--val", "3", "--image-size", "64"]) == 0
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(run), "--steps", "3",
                 "--batch-size", "2"]) == 0
    return data, run


def test_train_writes_checkpoint_log_and_curve(tiny_run):
    _, run = tiny_run
    assert (run / "checkpoint.npz").is_file() and (run / "loss_curve.png").is_file()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3 and "loss_mask" in records[-1]


def test_eval_writes_metrics_json(tiny_run, tmp_path):
    data, run = tiny_run
    out = tmp_path / "metrics.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.npz"), "--data", str(data),
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    keys = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}
    assert set(metrics) == {"bbox", "segm"} and all(set(m) == keys | {"per_class"} for m in metrics.values())
    assert all(set(pc) == {"AP", "AP50", "AP75"} for m in metrics.values() for pc in m["per_class"].values())


def test_predict_writes_overlays_and_results(tiny_run, tmp_path):
    data, run = tiny_run
    out = tmp_path / "pred"
    assert main(["predict", str(data / "val" / "images"), "--checkpoint", str(run / "checkpoint.npz"),
                 "--out", str(out), "--score-thresh", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["images"]) == 3 and len(list(out.glob("*_pred.png"))) == 3


def test_predict_resizes_an_image_of_another_size(tiny_run, tmp_path):
    from PIL import Image
    _, run = tiny_run
    Image.new("RGB", (100, 70), (30, 60, 90)).save(tmp_path / "odd.png")
    assert main(["predict", str(tmp_path / "odd.png"), "--checkpoint", str(run / "checkpoint.npz"),
                 "--out", str(tmp_path / "o")]) == 0


def test_bad_inputs_are_clear_errors(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--checkpoint", str(run / "checkpoint.npz"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes((run / "checkpoint.npz").read_bytes()[:200])        # truncated
    assert main(["eval", "--checkpoint", str(bad), "--data", str(data), "--out", str(tmp_path / "m.json")]) == 2
    assert "corrupt or not an mrcnn-np checkpoint" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no annotations found" in capsys.readouterr().err
    # resuming a run with another config: the checkpoint names the first differing field
    assert main(["train", "--config", "demo", "--data", str(data), "--out", str(run), "--steps", "4",
                 "--resume"]) == 2
    assert "config" in capsys.readouterr().err
