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
