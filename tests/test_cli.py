"""The mrcnn-np command: sub-commands run in-process through cli.main."""
import json
import re
from pathlib import Path

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
    from mrcnn_np.evaluate import load_coco_gt
    data, run = tiny_run
    out = tmp_path / "pred"
    assert main(["predict", str(data / "val" / "images"), "--checkpoint", str(run / "checkpoint.npz"),
                 "--out", str(out), "--score-thresh", "0"]) == 0
    images = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in images["images"]] == ["000001.png", "000002.png", "000003.png"]
    assert images["skipped"] == [] and len(list(out.glob("*_pred.png"))) == 3
    # results.json is COCO's result format as it is: pycocotools reads it (the val split's image ids
    # are 1..3 in file order, the same numbering predict uses)
    results = json.loads((out / "results.json").read_text())
    assert isinstance(results, list) and results
    assert set(results[0]) == {"image_id", "category_id", "score", "bbox", "segmentation"}
    dt = load_coco_gt(data / "val" / "annotations.json").loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == len(results)
    assert all(r["segmentation"]["size"] == [64, 64] for r in results)


def test_predict_skips_unreadable_files_lists_them_and_exits_2(tiny_run, tmp_path, capsys):
    import shutil
    data, run = tiny_run
    folder = tmp_path / "mixed"
    shutil.copytree(data / "val" / "images", folder)
    good = sorted(p.name for p in folder.iterdir())
    (folder / "broken.png").write_bytes((folder / good[0]).read_bytes()[:60])      # truncated PNG
    (folder / "notes.jpg").write_text("not an image")
    out = tmp_path / "pred"
    assert main(["predict", str(folder), "--checkpoint", str(run / "checkpoint.npz"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err and "notes.jpg" in err
    images = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in images["images"]] == good                # every readable one
    assert sorted(s["file_name"] for s in images["skipped"]) == ["broken.png", "notes.jpg"]
    assert all(s["reason"] for s in images["skipped"])
    assert len(list(out.glob("*_pred.png"))) == len(good)
    assert isinstance(json.loads((out / "results.json").read_text()), list)


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


# --- clean stops: one line on stderr, exit status 2 ---------------------------------------------------

def _one_error_line(err, command="train"):
    """The error line of ``err`` (tqdm's bar may have drawn lines before it); there is exactly one."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines()
             if line.startswith((f"mrcnn-np {command}: error: ", "mrcnn-np: error: "))]
    assert len(lines) == 1, err
    assert err.rstrip("\n").endswith(lines[0])
    return lines[0]


def test_a_diverging_run_stops_with_one_line_naming_term_step_checkpoint_and_lr(tiny_run, tmp_path,
                                                                                capsys):
    import shutil
    data, run = tiny_run
    shutil.copytree(run, tmp_path / "run")                 # the fixture's run: 3 steps, checkpoint at 3
    good = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    argv = ["train", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "run"),
            "--batch-size", "2", "--steps", "40", "--resume", "--lr", "1e6"]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert re.search(r"error: loss_\w+ = (nan|inf|-inf) at step \d+: training stopped before the "
                     r"update; the last good checkpoint is .*checkpoint\.npz \(step 3\); try a lower "
                     r"--lr than 1e\+06 \(e\.g\. --lr 250000\) with mrcnn-np train and --resume", line), line
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == good


def test_resume_of_a_finished_run_says_it_is_complete(tiny_run, tmp_path, capsys):
    import shutil
    data, run = tiny_run
    shutil.copytree(run, tmp_path / "run")
    good = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--batch-size", "2", "--resume"]) == 0     # no --steps: the run's own 3
    out, err = capsys.readouterr()
    assert f"the run in {tmp_path / 'run'} is complete: step 3 of 3; nothing to do" in out
    assert "Traceback" not in err
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == good


def _bad_inputs(data, run, tmp):
    """(argv, the error line's expected text) for each kind of bad input."""
    ck = str(run / "checkpoint.npz")
    train = ["train", "--config", "tiny", "--data", str(data), "--out", str(tmp / "r")]
    return [
        (train + ["--steps", "-5"], "argument --steps: expected a positive integer, got '-5'"),
        (train + ["--steps", "0"], "argument --steps: expected a positive integer, got '0'"),
        (train + ["--steps", "many"], "argument --steps: expected a positive integer, got 'many'"),
        (train + ["--batch-size", "0"], "argument --batch-size: expected a positive integer"),
        (train + ["--lr", "-0.1"], "argument --lr: expected a positive number, got '-0.1'"),
        (train + ["--lr", "nan"], "argument --lr: expected a positive number, got 'nan'"),
        (train + ["--max-minutes", "-1"], "argument --max-minutes: expected a non-negative number"),
        (train + ["--seed", "-1"], "argument --seed: expected a non-negative integer"),
        (train + ["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["train", "--data", str(data)], "the following arguments are required: --out"),
        (train[:2] + ["huge"] + train[3:], "config: unknown preset 'huge'"),
        (train[:4] + [str(tmp / "nowhere")] + train[5:], "no annotations found"),
        (train[:6] + [str(tmp / "a_file")], "is a file; expected a folder"),
        (train[:4] + [str(tmp / "bad_json")] + train[5:], "malformed JSON"),
        (train[:4] + [str(tmp / "missing_image")] + train[5:], "not found"),
        (train[:6] + [str(tmp / "corrupt_run"), "--resume"], "corrupt or not an mrcnn-np checkpoint"),
        (train[:6] + [str(tmp / "done_run"), "--batch-size", "2", "--steps", "2", "--resume"],
         "has done 3 steps already; a resume with steps=2 can only extend it"),
        (train[:6] + [str(tmp / "done_run"), "--batch-size", "3", "--steps", "9", "--resume"],
         "was trained with steps_per_epoch=3, this run has 2"),
        (["eval", "--checkpoint", str(tmp / "none.npz"), "--data", str(data), "--out", str(tmp / "m.json")],
         "checkpoint not found"),
        (["eval", "--checkpoint", ck, "--data", str(data), "--out", str(tmp)], "is a folder; expected the path"),
        (["eval", "--checkpoint", str(data / "val" / "annotations.json"), "--data", str(data),
          "--out", str(tmp / "m.json")], "corrupt or not an mrcnn-np checkpoint"),
        (["predict", str(tmp / "no_such.png"), "--checkpoint", ck, "--out", str(tmp / "p")],
         "no such image or folder"),
        (["predict", str(data / "val" / "images"), "--checkpoint", ck, "--out", str(tmp / "a_file")],
         "File exists"),
    ]


def test_every_bad_input_is_one_line_and_exit_status_2(tiny_run, tmp_path, capsys):
    import shutil
    data, run = tiny_run
    (tmp_path / "a_file").write_text("not an image, not a folder")
    (tmp_path / "bad_json" / "images").mkdir(parents=True)
    (tmp_path / "bad_json" / "annotations.json").write_text('{"images": [')
    shutil.copytree(data / "train", tmp_path / "missing_image")
    next((tmp_path / "missing_image" / "images").iterdir()).unlink()
    (tmp_path / "corrupt_run").mkdir()
    (tmp_path / "corrupt_run" / "checkpoint.npz").write_bytes((run / "checkpoint.npz").read_bytes()[:300])
    shutil.copytree(run, tmp_path / "done_run")
    for argv, expected in _bad_inputs(data, run, tmp_path):
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err, argv[0])
        assert expected in line, (argv, line)
    assert not (tmp_path / "r").exists()                     # nothing was started
    # predict goes on past an unreadable image (issue 13): it names it, and exits 2 at the end
    assert main(["predict", str(tmp_path / "a_file"), "--checkpoint", str(run / "checkpoint.npz"),
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a_file: not a readable image" in err


def test_demo_command_end_to_end_says_where_its_pictures_are(tmp_path, capsys):
    """``mrcnn-np demo`` on a small existing dataset, a few steps: every file it promises exists and
    the last lines say where the two pictures are."""
    from mrcnn_np.data.shapes import generate_shapes
    generate_shapes(tmp_path / "s", 8, 3, seed=0)
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tmp_path / "s"), "--out", str(out), "--steps", "3"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_steps"] == 3
    for name, path in summary["files"].items():
        assert Path(path).is_file(), name
    assert f"pictures: {out / 'predictions.png'}" in printed and str(out / "loss_curve.png") in printed
