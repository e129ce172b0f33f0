"""The default training recipe (docs/training.md, "Training recipe") on the real model, tiny config: the
shortest schedules and the smallest data train to the end with finite losses."""
import math

import pytest

from mrcnn_np.checkpoint import read_metadata
from mrcnn_np.commands import run_train
from mrcnn_np.data import generate_shapes
from mrcnn_np.optim import LRSchedule
from mrcnn_np.train import CLIP_NORM, WARMUP_STEPS, scaled_lr
from mrcnn_np.visualize import read_jsonl


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    generate_shapes(out, 1, 0, seed=0, image_size=64)
    return out


def test_the_recipe_scales_the_lr_to_the_batch():
    assert [scaled_lr(b) for b in (1, 2, 4, 8, 16)] == [0.005, 0.01, 0.02, 0.02, 0.02]


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("batch_size", [1, 3])              # 3: larger than the dataset
def test_shortest_schedules_on_one_image_train_to_the_end(one_image, tmp_path, steps, batch_size):
    # train() checks every step's loss terms and gradient norm: finishing means all were finite
    s = run_train("tiny", one_image, tmp_path, steps=steps, batch_size=batch_size, progress=False)
    assert s["stopped"] == "finished" and s["step"] == steps
    assert all(math.isfinite(v) for v in s["final_losses"].values())
    extra = read_metadata(tmp_path / "checkpoint.npz")["extra"]
    # one image per step, whatever the batch size asked for: the rate of a batch of 1
    assert extra["schedule"]["base_lr"] == scaled_lr(1)
    assert extra["schedule"]["warmup_steps"] == WARMUP_STEPS and extra["clip_norm"] == CLIP_NORM
    last = read_jsonl(tmp_path / "log.jsonl")[-1]
    assert last["step"] == steps and last["lr"] == LRSchedule(scaled_lr(1), steps, WARMUP_STEPS)(steps - 1)


def test_a_hundred_steps_on_one_image_stay_finite(one_image, tmp_path):
    # The recipe before issue 11 (lr 0.02 at any batch size, warm-up steps // 4, no clipping) gave
    # loss_cls = nan at step 53 here.
    s = run_train("tiny", one_image, tmp_path, steps=100, batch_size=4, progress=False)
    assert s["stopped"] == "finished" and s["step"] == 100
    losses = [r["loss"] for r in read_jsonl(tmp_path / "log.jsonl")]
    assert len(losses) == 10 and all(math.isfinite(v) and v < 10 for v in losses)
