"""The training loop with a fake model that has the real model's interface (a linear regression
with five named loss terms): learning, the log, non-finite losses, resume, the time limit."""
import dataclasses
import json

import numpy as np
import pytest

from mrcnn_np import nn
from mrcnn_np.checkpoint import load_checkpoint
from mrcnn_np.data import BatchLoader, CocoDataset, generate_shapes
from mrcnn_np.optim import LRSchedule
from mrcnn_np.train import NonFiniteLossError, train
from mrcnn_np.visualize import read_jsonl

TERMS = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")


@dataclasses.dataclass
class FakeConfig:
    name: str = "fake"
    image_size: int = 16

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


class FakeModel(nn.Module):
    """pred = Linear(per-channel means of the image) (N, 5); term k = weighted mean of
    (pred[:, k] - y[:, k])^2 with y a fixed linear function of the same means. The per-image weights
    are drawn from ``rng``, so the result depends on the sampling generator, like the real model's.
    ``nan_at`` / ``crash_at``: the forward call (0-based) that returns NaN in loss_mask / raises."""

    def __init__(self, config=None, seed=0, nan_at=None, crash_at=None):
        super().__init__()
        self.config = config or FakeConfig()
        self.head = nn.Linear(3, 5, rng=np.random.default_rng(seed))
        truth = np.random.default_rng(1234)
        self.A, self.c = truth.standard_normal((5, 3)), truth.standard_normal(5)
        self.calls, self.nan_at, self.crash_at = 0, nan_at, crash_at

    def forward_train(self, images, targets, rng):
        assert len(targets) == len(images)
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash")
        x = images.mean(axis=(2, 3))                               # (N, 3, H, W) -> (N, 3)
        y = x @ self.A.T + self.c                                  # (N, 5)
        w = rng.uniform(0.5, 1.5, len(x))                          # (N,) per-image weights
        diff = self.head(x.astype(np.float32)) - y
        self._grad = (2 * w[:, None] * diff / len(x)).astype(np.float32)   # d term_k / d pred[:, k]
        losses = dict(zip(TERMS, (w[:, None] * diff ** 2).mean(axis=0)))
        if self.calls == self.nan_at:
            losses["loss_mask"] = float("nan")
        self.calls += 1
        return losses

    def backward(self):
        self.head.backward(self._grad)


class FakeLoader:
    """The loader protocol: ``len()`` batches per epoch, ``epoch(e)`` shuffled by ``(seed, e)``."""

    def __init__(self, n=12, batch_size=4, seed=0):
        data = np.random.default_rng(99)
        self.images = data.uniform(-1, 1, (n, 3, 1, 1)) + 0.1 * data.standard_normal((n, 3, 4, 4))
        self.batch_size, self.seed = batch_size, seed

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def epoch(self, e):
        order = np.random.default_rng([self.seed, e]).permutation(len(self.images))
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            yield self.images[idx].astype(np.float32), [{"index": int(i)} for i in idx]


FAST = dict(lr=0.1, warmup_steps=2, progress=False)


def _params(model):
    return {k: p.data.copy() for k, p in model.named_parameters().items()}


def test_losses_decrease_and_log_has_the_right_records(tmp_path):
    model = FakeModel()
    summary = train(model, FakeLoader(), tmp_path, steps=60, log_every=5, checkpoint_every=30, **FAST)
    records = read_jsonl(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == list(range(5, 61, 5))
    assert set(records[0]) == {"step", "epoch", "lr", *TERMS, "loss", "grad_norm", "sec_per_step",
                               "data_sec"}
    assert records[-1]["epoch"] == 59 // 3
    for r in records:
        assert r["loss"] == pytest.approx(sum(r[k] for k in TERMS))
    first, last = records[0], records[-1]
    assert last["loss"] < 0.2 * first["loss"]
    for k in TERMS:
        assert last[k] < first[k]
    assert summary["steps_done"] == 60 and summary["step"] == 60 and summary["stopped"] == "finished"
    assert summary["final_losses"]["loss"] == pytest.approx(last["loss"])
    assert summary["sec_per_step_median"] > 0 and summary["peak_rss_mib"] > 10
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert load_checkpoint(tmp_path / "checkpoint.npz")["step"] == 60


def test_non_finite_loss_stops_before_the_update_and_keeps_the_checkpoint(tmp_path):
    model = FakeModel()
    train(model, FakeLoader(), tmp_path, steps=4, **FAST)
    good = (tmp_path / "checkpoint.npz").read_bytes()
    n_records = len(read_jsonl(tmp_path / "log.jsonl"))
    nan_model = FakeModel(nan_at=1)                   # the second step of the resumed run: step 6
    with pytest.raises(NonFiniteLossError, match=r"loss_mask = nan at step 6") as info:
        train(nan_model, FakeLoader(), tmp_path, steps=8, resume=True, checkpoint_every=1, **FAST)
    assert info.value.term == "loss_mask" and info.value.step == 6
    assert (tmp_path / "checkpoint.npz").read_bytes() != good   # step 5 was saved ...
    assert load_checkpoint(tmp_path / "checkpoint.npz")["step"] == 5
    before_nan = (tmp_path / "checkpoint.npz").read_bytes()

    # ... and with checkpoint_every larger, the last good checkpoint stays byte-identical.
    with pytest.raises(NonFiniteLossError, match="loss_mask"):
        train(FakeModel(nan_at=0), FakeLoader(), tmp_path, steps=8, resume=True, checkpoint_every=4,
              **FAST)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before_nan
    assert len(read_jsonl(tmp_path / "log.jsonl")) == n_records + 1    # step 5 only


def test_resume_after_a_crash_gives_bitwise_the_same_parameters(tmp_path):
    kwargs = dict(steps=10, checkpoint_every=4, schedule="cosine", **FAST)
    straight = FakeModel()
    train(straight, FakeLoader(), tmp_path / "a", **kwargs)

    with pytest.raises(RuntimeError, match="simulated crash"):      # dies in step 7: checkpoint at 4
        train(FakeModel(crash_at=6), FakeLoader(), tmp_path / "b", **kwargs)
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "log.jsonl")] == list(range(1, 7))
    resumed = FakeModel(seed=5)                                  # other initial values: all loaded
    summary = train(resumed, FakeLoader(), tmp_path / "b", resume=True, **kwargs)
    assert summary["steps_done"] == 6 and summary["step"] == 10     # from step 4, mid-epoch 1
    a, b = _params(straight), _params(resumed)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # the log continues without duplicates (records 5, 6 of the crashed run were dropped)
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "log.jsonl")] == list(range(1, 11))

    again = train(FakeModel(), FakeLoader(), tmp_path / "b", resume=True, **kwargs)
    assert again["stopped"] == "already finished" and again["steps_done"] == 0


def test_resume_with_the_real_batch_loader_sees_the_same_batches(tmp_path):
    generate_shapes(tmp_path / "shapes", 5, 0, seed=0, image_size=32, max_instances=2)
    ds = CocoDataset(tmp_path / "shapes/train/images", tmp_path / "shapes/train/annotations.json")
    kwargs = dict(steps=7, checkpoint_every=2, batch_size=2, hflip_prob=0.5, seed=3, **FAST)
    straight = FakeModel()
    train(straight, ds, tmp_path / "a", **kwargs)                # a dataset: wrapped in a BatchLoader
    train(FakeModel(), ds, tmp_path / "b", max_minutes=0, **kwargs)
    for _ in range(7):                                          # one step per call, as if killed
        summary = train(FakeModel(), BatchLoader(ds, 2, 16, seed=3, hflip_prob=0.5), tmp_path / "b",
                        resume=True, max_minutes=0, **kwargs)
    assert summary["step"] == 7
    resumed = FakeModel()
    load_checkpoint(tmp_path / "b" / "checkpoint.npz", resumed)
    a, b = _params(straight), _params(resumed)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_max_minutes_stops_after_the_first_step_with_a_checkpoint(tmp_path):
    summary = train(FakeModel(), FakeLoader(), tmp_path, steps=50, max_minutes=1e-9, **FAST)
    assert summary["stopped"] == "max_minutes" and summary["steps_done"] == 1
    meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["step"] == 1 and meta["extra"]["batch_in_epoch"] == 1
    assert (tmp_path / "loss_curve.png").exists()


def test_resume_refuses_other_data_or_config(tmp_path):
    train(FakeModel(), FakeLoader(), tmp_path, steps=2, **FAST)
    with pytest.raises(ValueError, match="steps_per_epoch=3.*has 2"):
        train(FakeModel(), FakeLoader(n=8), tmp_path, steps=4, resume=True, **FAST)
    with pytest.raises(ValueError, match="field 'image_size'"):
        train(FakeModel(FakeConfig(image_size=32)), FakeLoader(), tmp_path, steps=4, resume=True, **FAST)


def test_fresh_run_empties_the_log_and_progress_bar_goes_to_stderr(tmp_path, capsys):
    train(FakeModel(), FakeLoader(), tmp_path, steps=3, **FAST)
    train(FakeModel(), FakeLoader(), tmp_path, steps=2, lr=0.1, progress=True)
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == [1, 2]
    out, err = capsys.readouterr()
    assert out == "" and "2/2" in err


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one"), (dict(steps=3, epochs=1), "exactly one"), (dict(steps=0), "steps"),
    (dict(steps=3, log_every=0), "log_every"), (dict(steps=3, max_minutes=-1), "max_minutes"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(FakeModel(), FakeLoader(), tmp_path, progress=False, **kwargs)


def test_log_lines_are_json_with_the_scheduled_lr(tmp_path):
    train(FakeModel(), FakeLoader(), tmp_path, steps=4, **FAST)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    schedule = LRSchedule(0.1, total_steps=4, warmup_steps=2)
    assert [json.loads(line)["lr"] for line in lines] == [schedule(t) for t in range(4)]
    assert json.loads(lines[0])["lr"] == pytest.approx(0.1 * 0.001)     # update t = 0 is step 1
