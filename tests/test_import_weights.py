"""``mrcnn-np import-weights``: the key table, both spellings of torchvision's keys, errors that name
the key, ``--download`` against a local HTTP server, and ``eval`` with the imported model."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from mrcnn_np.cli import main
from mrcnn_np.import_weights import (COCO_CATEGORIES, KEY_TABLE, download_weights, ours_to_torchvision,
                                     state_dict_to_model, torchvision_to_ours)
from mrcnn_np.model import build_model, get_config
from mrcnn_np.pth import WeightFileError, save_state_dict

GOLDEN = Path(__file__).parent / "golden"
META = json.loads((GOLDEN / "r50" / "golden.json").read_text())
SHAPES = {k: tuple(v) for k, v in META["state_dict_shapes"]}     # torchvision 0.29.1's 307 keys


@pytest.fixture(scope="module")
def r50():
    return build_model(get_config("r50_fpn"))


def test_the_table_maps_every_torchvision_key_to_a_model_entry_of_its_shape(r50):
    entries = {**r50.named_parameters(), **r50.named_buffers()}
    assert len(SHAPES) == len(entries) == 307
    mapped = {}
    for key, shape in SHAPES.items():
        ours = torchvision_to_ours(key)
        assert ours in entries, key
        assert tuple(entries[ours].data.shape) == shape, key
        assert ours_to_torchvision(ours) == key
        mapped[ours] = key
    assert len(mapped) == 307                     # one to one
    n_params = sum(p.data.size for p in r50.named_parameters().values())
    n_buffers = sum(b.data.size for b in r50.named_buffers().values())
    assert (n_params, n_buffers) == (44_401_393, 106_240)      # torchvision's count (r50-notes, s. 8)
    assert len(KEY_TABLE) < 20                     # the table is patterns, not 307 lines


@pytest.mark.parametrize("old, new", [
    ("backbone.fpn.inner_blocks.3.weight", "backbone.fpn.inner_blocks.3.0.weight"),
    ("backbone.fpn.layer_blocks.0.bias", "backbone.fpn.layer_blocks.0.0.bias"),
    ("rpn.head.conv.weight", "rpn.head.conv.0.0.weight"),
    ("roi_heads.mask_head.mask_fcn1.weight", "roi_heads.mask_head.0.0.weight"),
    ("roi_heads.mask_head.mask_fcn4.bias", "roi_heads.mask_head.3.0.bias"),
])
def test_the_2019_spellings_map_like_todays(old, new):
    assert torchvision_to_ours(old) == torchvision_to_ours(new) is not None


def _zeros_state():
    return {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}


def test_errors_name_the_key(r50):
    state = _zeros_state()
    del state["roi_heads.box_head.fc7.bias"]
    with pytest.raises(WeightFileError, match=r"src.pth: missing key 'roi_heads.box_head.fc7.bias'"):
        state_dict_to_model(state, r50, source="src.pth")
    state = {**_zeros_state(), "roi_heads.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightFileError, match=r"unexpected key 'roi_heads.extra.weight'"):
        state_dict_to_model(state, r50, source="src.pth")
    state = {**_zeros_state(), "roi_heads.box_predictor.cls_score.weight": np.zeros((3, 1024), np.float32)}
    with pytest.raises(WeightFileError, match=r"key 'roi_heads.box_predictor.cls_score.weight' has shape "
                                              r"\(3, 1024\), the r50_fpn model's .* has \(91, 1024\)"):
        state_dict_to_model(state, r50, source="src.pth")
    state = {**_zeros_state(), "rpn.head.conv.weight": np.zeros((256, 256, 3, 3), np.float32)}
    with pytest.raises(WeightFileError, match=r"old and new spellings both present"):
        state_dict_to_model(state, r50, source="src.pth")


def test_an_import_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    state = _zeros_state()
    state["backbone.body.layer3.2.bn2.running_var"] = np.zeros(7, np.float32)
    src = save_state_dict(tmp_path / "bad.pth", state, "zip")
    out = tmp_path / "r50.npz"
    assert main(["import-weights", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "backbone.body.layer3.2.bn2.running_var" in err[0] and "(7,)" in err[0]
    assert not out.exists()
    assert main(["import-weights", "--out", str(out)]) == 2           # neither SRC nor --download
    assert "expected either SRC" in capsys.readouterr().err


def test_num_batches_tracked_is_ignored_and_the_checkpoint_carries_coco(tmp_path, capsys):
    from mrcnn_np.checkpoint import read_metadata
    state = {**_zeros_state(), "backbone.body.bn1.num_batches_tracked": np.zeros((), np.int64)}
    src = save_state_dict(tmp_path / "w.pth", state, "zip")
    out = tmp_path / "r50.npz"
    assert main(["import-weights", str(src), "--out", str(out)]) == 0
    assert "1 num_batches_tracked ignored" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["config"]["name"] == "r50_fpn"
    names = meta["extra"]["class_names"]
    assert len(names) == 91 and names[0] == "__background__" and names[1] == "person"
    assert [i for i, n in enumerate(names) if n == "N/A"] == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert meta["extra"]["label_to_cat_id"] == {str(k): k for k in range(1, 91)}
    assert tuple(names) == COCO_CATEGORIES


# ----------------------------------------------------------------------------------------------------
# --download, against a local server
# ----------------------------------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    """An HTTP server on localhost serving ``tmp_path / "www"``; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_checks_the_hash_in_the_name_and_caches(server, tmp_path):
    root, base = server
    payload = b"weights" * 1000
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    (root / f"model-{prefix}.pth").write_bytes(payload)
    cache = tmp_path / "cache"
    path = download_weights(f"{base}/model-{prefix}.pth", cache, progress=False)
    assert path == cache / f"model-{prefix}.pth" and path.read_bytes() == payload
    (root / f"model-{prefix}.pth").unlink()                           # cached: no second fetch
    assert download_weights(f"{base}/model-{prefix}.pth", cache, progress=False) == path
    # a file whose bytes do not match the name's hash: refused, nothing left in the cache
    (root / "model-deadbeef.pth").write_bytes(payload)
    with pytest.raises(ValueError, match=r"SHA-256 .* does not match the expected deadbeef"):
        download_weights(f"{base}/model-deadbeef.pth", cache, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == [f"model-{prefix}.pth"]
    with pytest.raises(OSError, match="cannot fetch"):
        download_weights(f"{base}/missing-00000000.pth", cache, progress=False)


def test_import_weights_download_end_to_end(server, tmp_path, monkeypatch, capsys):
    root, base = server
    src = save_state_dict(tmp_path / "w.pth", _zeros_state(), "legacy")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    name = f"maskrcnn_resnet50_fpn_coco-{digest[:8]}.pth"
    (root / name).write_bytes(src.read_bytes())
    monkeypatch.setenv("MRCNN_R50_URL", f"{base}/{name}")
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r50.npz"
    assert main(["import-weights", "--download", "--out", str(out)]) == 0
    assert (tmp_path / "cache" / name).is_file() and out.is_file()
    assert "legacy format" in capsys.readouterr().out
