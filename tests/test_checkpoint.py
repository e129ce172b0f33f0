"""Checkpoints: round trip, clear errors for damaged or mismatched files, atomic writes."""
import dataclasses
import json
import os

import numpy as np
import pytest

import mrcnn_np.atomic
from mrcnn_np import nn
from mrcnn_np.checkpoint import (CheckpointError, load_checkpoint, read_config, read_metadata,
                                 save_checkpoint)
from mrcnn_np.optim import SGD


@dataclasses.dataclass
class TinyConfig:
    name: str = "tiny"
    width: int = 4
    sizes: tuple = (8, 16)

    @classmethod
    def from_dict(cls, d):
        return cls(**{**d, "sizes": tuple(d["sizes"])})


class TinyModel(nn.Module):
    """The parameter-holding part of a model: a conv, a GroupNorm and a linear layer."""

    def __init__(self, config=None, seed=0):
        super().__init__()
        self.config = config or TinyConfig()
        rng = np.random.default_rng(seed)
        w = self.config.width
        self.conv = nn.Conv2d(3, w, 3, padding=1, rng=rng)
        self.norm = nn.GroupNorm(2, w)
        self.head = nn.Linear(w, 2, rng=rng)


def _trained_pair(seed=0):
    model = TinyModel(seed=seed)
    opt = SGD(model.named_parameters(), lr=0.1)
    rng = np.random.default_rng(seed + 100)
    for p in model.named_parameters().values():
        p.grad[...] = rng.standard_normal(p.shape)
    opt.step()
    return model, opt


def test_round_trip_restores_parameters_buffers_and_metadata(tmp_path):
    model, opt = _trained_pair(seed=0)
    path = save_checkpoint(tmp_path / "ck.npz", model, opt, step=7, extra={"epoch": 1, "note": "é"})
    other = TinyModel(seed=1)
    other_opt = SGD(other.named_parameters(), lr=0.1)
    meta = load_checkpoint(path, other, other_opt)
    assert meta["step"] == 7 and meta["extra"] == {"epoch": 1, "note": "é"}
    assert meta["format"] == "mrcnn-np checkpoint" and meta["version"] == 1
    assert meta["config_class"].endswith("TinyConfig")
    for name, p in model.named_parameters().items():
        q = other.named_parameters()[name]
        assert np.array_equal(p.data, q.data) and q.data.dtype == p.data.dtype
    for name, v in opt.state_dict().items():
        assert np.array_equal(v, other_opt.state_dict()[name])
    assert TinyConfig.from_dict(read_config(path)) == model.config
    assert read_metadata(path)["step"] == 7


def test_file_layout_is_plain_npz(tmp_path):
    model, opt = _trained_pair()
    path = save_checkpoint(tmp_path / "ck.npz", model, opt, step=3)
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        meta = json.loads(str(z["meta"][()]))
    assert {"param/conv.weight", "param/norm.bias", "optim/head.weight", "meta"} <= names
    assert meta["config"] == {"name": "tiny", "width": 4, "sizes": [8, 16]}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nothere.npz"):
        load_checkpoint(tmp_path / "nothere.npz")


@pytest.mark.parametrize("damage", ["truncate", "random", "empty", "npy", "no-meta"])
def test_damaged_or_foreign_files(tmp_path, damage):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, *_trained_pair(), step=1)
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[: len(good) * 2 // 3])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(good)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        np.save(path.with_suffix(""), np.zeros(3))            # writes ck.npy
        os.replace(path.with_suffix(".npy"), path)
    else:
        np.savez(path, x=np.zeros(3))
    match = "no metadata" if damage == "no-meta" else "corrupt or not an mrcnn-np checkpoint: .*ck.npz"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, TinyModel())
    with pytest.raises(CheckpointError):
        read_config(path)


def test_other_config_names_the_first_differing_field(tmp_path):
    path = save_checkpoint(tmp_path / "ck.npz", TinyModel(), step=0)
    other = TinyModel(TinyConfig(sizes=(8, 32)))
    with pytest.raises(CheckpointError, match=r"field 'sizes' is \[8, 16\] in the checkpoint, \[8, 32\]"):
        load_checkpoint(path, other)


def test_shape_mismatch_and_missing_or_extra_parameter_named(tmp_path):
    model = TinyModel()
    path = save_checkpoint(tmp_path / "ck.npz", model, step=0)
    before = {k: p.data.copy() for k, p in model.named_parameters().items()}

    wrong_shape = TinyModel(seed=1)
    wrong_shape.head = nn.Linear(4, 3)                         # same config, different head
    conv_before = wrong_shape.conv.weight.data.copy()
    with pytest.raises(CheckpointError,
                       match=r"'head.weight' has shape \(2, 4\) in the checkpoint, \(3, 4\)"):
        load_checkpoint(path, wrong_shape)
    # nothing was loaded: the conv, whose shape fits, still has its own values
    assert np.array_equal(wrong_shape.conv.weight.data, conv_before)

    extra = TinyModel()
    extra.more = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="'more.weight' of the model is missing"):
        load_checkpoint(path, extra)
    fewer = TinyModel()
    del fewer.norm
    with pytest.raises(CheckpointError, match="parameter 'norm.weight' that the model lacks"):
        load_checkpoint(path, fewer)
    for k, p in model.named_parameters().items():
        assert np.array_equal(p.data, before[k])


def test_failed_load_changes_nothing(tmp_path):
    saved = TinyModel(seed=0)
    path = save_checkpoint(tmp_path / "ck.npz", saved, step=0)      # saved without an optimizer
    target = TinyModel(seed=1)
    before = {k: p.data.copy() for k, p in target.named_parameters().items()}
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, target, SGD(target.named_parameters(), lr=0.1))
    for k, p in target.named_parameters().items():
        assert np.array_equal(p.data, before[k])


def test_extra_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="not JSON-able"):
        save_checkpoint(tmp_path / "ck.npz", TinyModel(), step=0, extra={"x": object()})
    assert not (tmp_path / "ck.npz").exists()


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, *_trained_pair(seed=0), step=1)
    good = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(mrcnn_np.atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, *_trained_pair(seed=1), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]      # no temporary file left
    assert load_checkpoint(path)["step"] == 1

    class Exploding(TinyModel):
        def named_parameters(self, prefix=""):
            raise RuntimeError("failed while collecting parameters")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, Exploding(), step=3)
    assert path.read_bytes() == good


def test_two_saves_of_the_same_state_are_byte_identical(tmp_path, monkeypatch):
    import time
    import zipfile
    model, opt = _trained_pair()
    a = save_checkpoint(tmp_path / "a.npz", model, opt, step=3, extra={"k": 1}).read_bytes()
    # another wall-clock time (zip entries would carry it): 2001-09-09 instead of now
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    b = save_checkpoint(tmp_path / "b.npz", model, opt, step=3, extra={"k": 1}).read_bytes()
    assert a == b
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    # and it is still what np.savez would write, apart from the dates
    import io
    buf = io.BytesIO()
    with np.load(tmp_path / "a.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(buf, **arrays)
    with zipfile.ZipFile(buf) as zs, zipfile.ZipFile(tmp_path / "a.npz") as zo:
        assert [i.filename for i in zs.infolist()] == [i.filename for i in zo.infolist()]
        assert all(zs.read(n) == zo.read(n) for n in zs.namelist())
    other = save_checkpoint(tmp_path / "c.npz", model, opt, step=4, extra={"k": 1}).read_bytes()
    assert other != a
