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

    def forward_train(self, images, targets, rng, host=True):
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
    """The loader protocol: ``len()`` batches per epoch, ``epoch(e, start_batch)`` shuffled by
    ``(seed, e)``; ``loaded`` counts the batches it has produced."""

    def __init__(self, n=12, batch_size=4, seed=0):
        data = np.random.default_rng(99)
        self.images = data.uniform(-1, 1, (n, 3, 1, 1)) + 0.1 * data.standard_normal((n, 3, 4, 4))
        self.batch_size, self.seed, self.loaded = batch_size, seed, 0

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def epoch(self, e, start_batch=0):
        order = np.random.default_rng([self.seed, e]).permutation(len(self.images))
        for s in range(start_batch * self.batch_size, len(order), self.batch_size):
            self.loaded += 1
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
    assert set(records[0]) == {"step", "epoch", "lr", "total_steps", *TERMS, "loss", "grad_norm",
                               "sec_per_step", "data_sec"}
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


# --- resume anywhere -----------------------------------------------------------------------------------

def test_resume_asks_the_loader_for_the_remaining_batches_only(tmp_path):
    kwargs = dict(steps=10, checkpoint_every=4, **FAST)
    with pytest.raises(RuntimeError, match="simulated crash"):      # dies in step 6: checkpoint at 4
        train(FakeModel(crash_at=5), FakeLoader(), tmp_path, **kwargs)
    loader = FakeLoader()                                        # 3 batches per epoch
    summary = train(FakeModel(), loader, tmp_path, resume=True, **kwargs)
    # steps 5..10 are batches 1, 2 of epoch 1 and epochs 2, 3: batch 0 of epoch 1 is not produced
    assert summary["steps_done"] == 6 and loader.loaded == 6


def test_resume_loads_no_image_of_the_skipped_batches(tmp_path):
    generate_shapes(tmp_path / "shapes", 5, 0, seed=0, image_size=32, max_instances=2)
    ds = CocoDataset(tmp_path / "shapes/train/images", tmp_path / "shapes/train/annotations.json")

    class Counting:                                              # a dataset that counts its reads
        def __init__(self):
            self.reads = 0

        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            self.reads += 1
            return ds[i]

    kwargs = dict(steps=5, checkpoint_every=2, batch_size=2, **FAST)   # 3 batches: 2 + 2 + 1 images
    train(FakeModel(), Counting(), tmp_path / "run", max_minutes=0, **kwargs)     # stops at step 1
    train(FakeModel(), Counting(), tmp_path / "run", max_minutes=0, resume=True, **kwargs)  # step 2
    counting = Counting()
    summary = train(FakeModel(), counting, tmp_path / "run", resume=True, **kwargs)
    assert summary["steps_done"] == 3
    assert counting.reads == 1 + 2 + 2      # batch 2 of epoch 0, batches 0 and 1 of epoch 1


def test_resume_with_more_steps_extends_the_schedule_and_says_so(tmp_path, capsys):
    train(FakeModel(), FakeLoader(), tmp_path, steps=6, **FAST)
    summary = train(FakeModel(), FakeLoader(), tmp_path, steps=10, resume=True, **FAST)
    assert summary["steps_done"] == 4 and summary["step"] == 10 and summary["total_steps"] == 10
    err = capsys.readouterr().err
    new, old = LRSchedule(0.1, 10, 2)(6), LRSchedule(0.1, 6, 2)(6)
    assert f"planned for 6 steps" in err and f"lr of step 7 is {new:.3g} instead of {old:.3g}" in err
    records = read_jsonl(tmp_path / "log.jsonl")
    assert [r["total_steps"] for r in records] == [6] * 6 + [10] * 4
    assert [r["lr"] for r in records[6:]] == [LRSchedule(0.1, 10, 2)(t) for t in range(6, 10)]
    meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["extra"]["planned_steps"] == 10 and meta["extra"]["total_steps"] == 10
    # fewer steps than are done: refused, nothing changed
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(ValueError, match="has done 10 steps already.*can only extend"):
        train(FakeModel(), FakeLoader(), tmp_path, steps=8, resume=True, **FAST)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_fresh_run_removes_the_old_checkpoint_before_emptying_the_log(tmp_path):
    train(FakeModel(), FakeLoader(), tmp_path, steps=4, **FAST)
    # a fresh run killed before its first checkpoint: no checkpoint of the old run is left to resume
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(FakeModel(crash_at=2), FakeLoader(), tmp_path, steps=10, checkpoint_every=5, **FAST)
    assert not (tmp_path / "checkpoint.npz").exists()
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == [1, 2]
    summary = train(FakeModel(), FakeLoader(), tmp_path, steps=10, resume=True, **FAST)
    assert summary["steps_done"] == 10
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == list(range(1, 11))


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import mrcnn_np.atomic, mrcnn_np.train as T
from test_train import FAST, FakeLoader, FakeModel

point, step = sys.argv[1], 0
def die():
    os.kill(os.getpid(), signal.SIGKILL)

write_record, replace, save = T._write_record, mrcnn_np.atomic.os.replace, T.save_checkpoint
def half_record(log, record):             # dies half-way through the line of step 7
    if record["step"] == 7 and point == "log":
        line = __import__("json").dumps(record)
        log.write(line[: len(line) // 2]); log.flush(); die()
    write_record(log, record)
def replace_then_die(src, dst):           # dies with the new checkpoint written but not yet renamed
    if point == "rename" and str(dst).endswith("checkpoint.npz") and save.calls == 2:
        die()
    replace(src, dst)
def counted_save(*args, **kwargs):
    save.calls += 1
    out = save(*args, **kwargs)
    if point == "after-save" and save.calls == 2:   # dies after the checkpoint, before the curve
        die()
    return out
save.calls = 0
T._write_record, mrcnn_np.atomic.os.replace, T.save_checkpoint = half_record, replace_then_die, counted_save
T.train(FakeModel(), FakeLoader(), sys.argv[2], steps=10, checkpoint_every=4, **FAST)
"""


@pytest.fixture(scope="module")
def straight_10(tmp_path_factory):
    """The parameters after an uninterrupted run of 10 steps (checkpoints every 4)."""
    model = FakeModel()
    train(model, FakeLoader(), tmp_path_factory.mktemp("straight"), steps=10, checkpoint_every=4, **FAST)
    return _params(model)


@pytest.mark.parametrize("point, checkpoint_step, logged", [
    ("log", 4, 6),              # kill -9 while writing the record of step 7
    ("rename", 4, 8),           # kill -9 between writing the step-8 checkpoint and renaming it
    ("after-save", 8, 8),       # kill -9 after the step-8 checkpoint, before the loss curve
])
def test_kill_9_at_any_write_then_resume_gives_the_uninterrupted_run(tmp_path, straight_10, point,
                                                                     checkpoint_step, logged):
    import signal
    import subprocess
    import sys
    from pathlib import Path
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    run = tmp_path / "b"
    proc = subprocess.run([sys.executable, str(script), point, str(run)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(run / "checkpoint.npz")["step"] == checkpoint_step
    text = (run / "log.jsonl").read_text()
    assert text.count("\n") == logged and (point != "log" or not text.endswith("\n"))

    resumed = FakeModel(seed=5)
    summary = train(resumed, FakeLoader(), run, steps=10, checkpoint_every=4, resume=True, **FAST)
    assert summary["steps_done"] == 10 - checkpoint_step                # at most one interval lost
    b = _params(resumed)
    assert all(np.array_equal(straight_10[k], b[k]) for k in straight_10)
    assert [r["step"] for r in read_jsonl(run / "log.jsonl")] == list(range(1, 11))


# --- the time cap and the schedule ---------------------------------------------------------------------

class FakeClock:
    """A clock that only moves when a step is computed: ``cost(step)`` seconds per forward."""

    def __init__(self, cost):
        self.now, self.cost, self.calls = 1000.0, cost, 0

    def __call__(self):
        return self.now


class TimedModel(FakeModel):
    def __init__(self, clock, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock

    def forward_train(self, images, targets, rng, host=True):
        self.clock.calls += 1
        self.clock.now += self.clock.cost(self.clock.calls)
        return super().forward_train(images, targets, rng)


@pytest.mark.parametrize("cost, fitted", [
    (lambda n: 1.0, 10 + int(0.95 * 50)),                    # 1 s a step: 60 fit, at most
    (lambda n: 1.0 if n <= 30 else 2.0, None),               # the machine slows down half-way
])
def test_max_minutes_fits_the_schedule_so_the_run_ends_annealed(tmp_path, monkeypatch, cost, fitted):
    import mrcnn_np.train as T
    clock = FakeClock(cost)
    monkeypatch.setattr(T, "_clock", clock)
    summary = train(TimedModel(clock), FakeLoader(), tmp_path, steps=200, max_minutes=1.0, **FAST)
    assert summary["stopped"] == "finished" and summary["planned_steps"] == 200
    total = summary["total_steps"]
    assert summary["step"] == total and clock.now - 1000.0 <= 60.0      # within the cap
    if fitted is not None:
        assert total == fitted
    records = read_jsonl(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, total + 1))
    assert records[0]["total_steps"] == 200 and records[-1]["total_steps"] == total
    assert records[-1]["lr"] < 0.01 * 0.1                   # annealed: the cosine's end, not its middle
    assert records[-1]["lr"] == LRSchedule(0.1, total, 2)(total - 1)
    meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["extra"]["total_steps"] == total and meta["extra"]["planned_steps"] == 200
    assert meta["extra"]["schedule_fit"]["max_minutes"] == 1.0
    # a resume of the same run repeats the fitted schedule: it is complete
    again = train(FakeModel(), FakeLoader(), tmp_path, steps=200, resume=True, **FAST)
    assert again["stopped"] == "already finished" and again["total_steps"] == total


def test_max_minutes_leaves_a_schedule_that_fits_alone(tmp_path, monkeypatch):
    import mrcnn_np.train as T
    clock = FakeClock(lambda n: 1.0)
    monkeypatch.setattr(T, "_clock", clock)
    summary = train(TimedModel(clock), FakeLoader(), tmp_path, steps=40, max_minutes=1.0, **FAST)
    assert summary["total_steps"] == 40 and summary["step"] == 40
    assert load_checkpoint(tmp_path / "checkpoint.npz")["extra"]["schedule_fit"] is None


def test_max_minutes_ignores_the_first_step_and_regrows_after_a_passing_slowdown(tmp_path, monkeypatch):
    """A first step that compiles (20 s) and a slow patch early on shorten the schedule only for a
    while: during the warm-up it grows back once the steps are fast again, and still ends in time."""
    import mrcnn_np.train as T
    clock = FakeClock(lambda n: 20.0 if n == 1 else (2.0 if n <= 15 else 0.1))
    monkeypatch.setattr(T, "_clock", clock)
    kwargs = {**FAST, "warmup_steps": 100}
    summary = train(TimedModel(clock), FakeLoader(), tmp_path, steps=400, max_minutes=1.0, **kwargs)
    records = read_jsonl(tmp_path / "log.jsonl")
    lengths = [r["total_steps"] for r in records]
    assert min(lengths) < lengths[-1]                        # cut by the slow patch, then grown back
    assert summary["stopped"] == "finished" and summary["step"] == summary["total_steps"]
    # 48 s went to the first 15 steps; the 12 s left hold about 110 steps of 0.1 s, not the 5 more
    # that the slow patch's speed promised
    assert summary["total_steps"] > 100 and clock.now - 1000.0 <= 60.0
    assert records[-1]["lr"] < 1e-3                          # annealed
