"""The training loop: batches in, SGD steps out, with a log, a loss curve and resumable checkpoints.

One step, for the update with index ``t = 0, 1, ..., T-1`` (the log calls it ``step = t + 1``, the
number of updates done)::

    optimizer.zero_grad()
    losses = model.forward_train(images, targets, rng_t)     rng_t = default_rng([seed, t])
    model.backward()                                         grad of L = sum of the terms
    ||grad|| (clipped to clip_norm if given)                 global norm, see mrcnn_np.optim
    every term and ||grad|| finite?  else NonFiniteLossError (before the parameters change)
    optimizer.step(lr(t))                                    SGD + momentum + weight decay

(:func:`train_step`; the losses and the norm are read back to the host once, together.)

Reproducibility. The data order of epoch ``e`` depends only on the loader's seed and ``e`` (see
:mod:`mrcnn_np.data.loader`) and the sampling generator of update ``t`` only on ``(seed, t)``, so
update ``t`` always sees the same batch and the same random draws: a run resumed from a checkpoint
at step ``k`` asks the loader for epoch ``k // len(loader)`` from batch ``k % len(loader)`` on (by
index: the batches already done are not loaded again) and ends with exactly the parameters of an
uninterrupted run.

Resuming (``resume=True``). A ``kill -9`` at any moment loses at most the steps since the last
checkpoint: the checkpoint is replaced atomically, the log is appended and flushed line by line, and a
resume first cuts the log back to the checkpoint's step (a line half-written by the kill included). A
fresh run (``resume=False``) removes an earlier run's checkpoint before it empties the log, so the
folder never pairs one run's checkpoint with another's log. A resume asking for the same number of
steps as the run was started with repeats that run's schedule (also its time-fitted length, below); one
asking for more extends the schedule from the checkpoint on and says what that does to the learning
rate; one asking for fewer steps than are done is refused.

The time cap (``max_minutes``). The cosine schedule must reach 0 at the step where training stops, or
the last weights are those of a high learning rate. So once ``FIT_AFTER`` steps of this call have been
timed, and at every step after that, the loop projects the finish from the median time of the recent
steps (data loading included) plus the checkpoint saves still due; if that is past the deadline, the
schedule's length ``T`` is cut to the steps that fit in ``FIT_MARGIN`` of the time left, and the
cosine anneals to 0 there. After the warm-up ``T`` only ever shrinks (a fast machine trains the
planned schedule) and the lr only jumps down; during the warm-up, where the lr is still rising, ``T``
may also grow back towards the plan once a slowdown has passed (the call's first step, which compiles
Numba's kernels, is never timed). Each change is printed and recorded (``total_steps`` in the log's records and the
checkpoint, ``planned_steps`` the number asked for), so a resume repeats it. Should the machine slow
down so much that even that is missed, training stops at the deadline with a checkpoint.

Files in ``out_dir``:

* ``log.jsonl``       one JSON object per logged step: ``step, epoch, lr, total_steps`` (the schedule's
                      length then), ``loss_rpn_cls, loss_rpn_box, loss_cls, loss_box, loss_mask`` (the
                      model's terms), ``loss`` (their sum), ``grad_norm`` (before clipping),
                      ``sec_per_step`` (forward + backward + update), ``data_sec`` (waiting for the
                      batch). Appended and flushed line by line.
* ``checkpoint.npz``  the latest checkpoint (:mod:`mrcnn_np.checkpoint`), every ``checkpoint_every``
                      steps, at the end, and when ``max_minutes`` is up; written atomically.
* ``loss_curve.png``  the log drawn by :func:`mrcnn_np.visualize.plot_losses`, at each checkpoint.
"""
from __future__ import annotations

import inspect
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import atomic_write_bytes
from .backend import get_array_module, to_numpy
from .checkpoint import load_checkpoint, read_metadata, save_checkpoint
from .data.loader import BatchLoader
from .optim import SGD, LRSchedule
from .visualize import plot_losses

__all__ = ["train", "NonFiniteLossError", "peak_rss_mib", "scaled_lr", "LOG_NAME", "CHECKPOINT_NAME",
           "CURVE_NAME", "BASE_LR", "BASE_BATCH", "WARMUP_STEPS", "CLIP_NORM", "FIT_AFTER", "FIT_MARGIN"]

LOG_NAME, CHECKPOINT_NAME, CURVE_NAME = "log.jsonl", "checkpoint.npz", "loss_curve.png"
FIT_AFTER = 10          # steps of a call timed before the schedule is fitted to max_minutes
FIT_WINDOW = 50         # the fit uses the median time of (at most) this many recent steps, or of the
FIT_RECENT = 10         # ... last 10 if that is longer (a machine that slows down is noticed in 5 steps)
FIT_MARGIN = 0.95       # ... and plans to finish within this fraction of the time left

# The default recipe of ``mrcnn-np train`` (docs/training.md, "Training recipe"; the numbers are measured there).
BASE_LR, BASE_BATCH = 0.02, 4    # the demo's measured rate at 4 images per step; never above 0.02,
                                 # Mask R-CNN's rate for 16 (Detectron, torchvision)
WARMUP_STEPS = 200               # linear warm-up, in steps whatever the run's length (not a fraction)
CLIP_NORM = 10.0                 # global gradient-norm clip: twice the norm of steady training


def scaled_lr(batch_size: int) -> float:
    """The linear scaling rule (Goyal et al. 2017) below ``BASE_BATCH`` images per step, capped
    above: ``BASE_LR * min(batch_size, BASE_BATCH) / BASE_BATCH``. A smaller batch is a noisier
    gradient, so each image keeps the demo's measured share of the rate; a larger one does not raise
    it past 0.02."""
    return BASE_LR * min(batch_size, BASE_BATCH) / BASE_BATCH


_clock = time.perf_counter   # every time measurement of the loop (tests replace it with a fake clock)


class NonFiniteLossError(FloatingPointError):
    """A loss term (or the gradient norm) became NaN or infinite; training stopped before the update.

    ``term``, ``value``, ``step`` say what and where; ``checkpoint`` is the last good checkpoint's path
    and ``checkpoint_step`` its step (both None if none had been written); ``lr`` the run's base rate."""

    def __init__(self, term: str, value: float, step: int, checkpoint=None, checkpoint_step=None,
                 lr=None):
        self.term, self.value, self.step, self.lr = term, value, step, lr
        self.checkpoint, self.checkpoint_step = checkpoint, checkpoint_step
        kept = (f"the last good checkpoint is {checkpoint} (step {checkpoint_step})" if checkpoint
                else "no checkpoint had been written yet")
        super().__init__(f"{term} = {value} at step {step}: training stopped before the update; {kept}")


def train(model, data, out_dir, *, steps: int | None = None, epochs: int | None = None,
          batch_size: int = 2, input_size=None, hflip_prob: float = 0.5,
          lr: float | None = None, momentum: float = 0.9, weight_decay: float = 1e-4,
          schedule: str = "cosine", milestones=(), gamma: float = 0.1,
          warmup_steps: int = WARMUP_STEPS, warmup_factor: float = 0.001,
          clip_norm: float | None = CLIP_NORM,
          checkpoint_every: int | None = None, log_every: int = 1, max_minutes: float | None = None,
          resume: bool = False, seed: int = 0, progress: bool = True, extra: dict | None = None) -> dict:
    """Train ``model`` for ``steps`` updates (or ``epochs`` passes over the data); returns a summary.

    ``data``: a :class:`~mrcnn_np.data.BatchLoader` (or anything with ``len()`` = batches per epoch
    and ``epoch(e, start_batch=0)`` -> iterator of ``(images, targets)``), or a dataset, which is
    wrapped in a shuffled ``BatchLoader(data, batch_size, input_size, seed=seed, hflip_prob=hflip_prob)``
    (``input_size`` defaults to ``model.config.image_size``, or to the model's own transform for
    ``resize="min_max"`` presets such as ``r50_fpn``: short side 800, normalised). The learning rate follows
    ``LRSchedule(lr, T, warmup_steps, warmup_factor, schedule, milestones, gamma)``; the defaults are
    the recipe of ``mrcnn-np train`` (``lr = scaled_lr(images per step)``, ``WARMUP_STEPS``,
    gradients clipped to ``CLIP_NORM``; ``clip_norm=None`` turns clipping off). ``resume=True``
    continues from ``out_dir/checkpoint.npz`` (if there is one); see the module docstring for what a
    different ``steps`` does then. ``max_minutes`` fits the schedule's length ``T`` to the time
    (module docstring) and, as a last resort, stops at the first step boundary after that much time,
    with a checkpoint. ``extra`` (JSON-able) is stored in every checkpoint beside the run's own record
    (e.g. the dataset's class names, which ``eval`` and ``predict`` read back).

    Summary: ``steps_done`` (this call), ``step`` (in all), ``total_steps`` (the schedule's length,
    fitted to ``max_minutes`` if that cut it), ``planned_steps`` (as asked), ``stopped``
    (``"finished"``, ``"max_minutes"`` or ``"already finished"``), ``sec_per_step_median``
    (None if no step was made), ``final_losses``, ``peak_rss_mib`` and the paths of the three files.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} is a file; expected a folder for the run's files")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"checkpoint": out / CHECKPOINT_NAME, "log": out / LOG_NAME, "loss_curve": out / CURVE_NAME}
    loader = _as_loader(data, model, batch_size, input_size, hflip_prob, seed)
    planned = _total_steps(steps, epochs, len(loader))
    _check_intervals(log_every, checkpoint_every, max_minutes, clip_norm)
    lr = scaled_lr(_images_per_step(loader)) if lr is None else lr
    # a frozen backbone piece (config.trainable_backbone_layers) is not the optimizer's: no decay, no
    # momentum, no share of the clipped norm
    params = (model.trainable_parameters() if hasattr(model, "trainable_parameters")
              else model.named_parameters())
    optimizer = SGD(params, lr, momentum=momentum, weight_decay=weight_decay)

    def schedule_of(total):
        return LRSchedule(lr, total, warmup_steps, warmup_factor, schedule, milestones, gamma)

    lr_at = schedule_of(planned)
    # What a checkpoint records about the run; a resume checks the first three.
    record = {"steps_per_epoch": len(loader), "data_seed": _plain(getattr(loader, "seed", None)),
              "seed": _plain(seed), "total_steps": planned, "planned_steps": planned,
              "schedule": lr_at.as_dict(), "schedule_fit": None,
              "clip_norm": clip_norm, "optimizer": {"momentum": momentum, "weight_decay": weight_decay},
              **(extra or {})}
    if resume:
        start, lr_at = _restore(paths["checkpoint"], model, optimizer, record, schedule_of)
    else:
        start = _start_fresh(paths)
    _trim_log(paths["log"], start)
    total = record["total_steps"]
    if start >= total:
        _say(f"{paths['checkpoint']}: the run is complete (step {start} of {total}); nothing to do")
        return _summary(0, start, record, "already finished", [], {}, paths)

    t_begin = _clock()
    deadline = None if max_minutes is None else t_begin + 60.0 * max_minutes
    times, wall, losses, stopped = [], [], {}, "finished"
    saved_step = start if paths["checkpoint"].exists() else None
    save_sec = 0.0
    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)   # a log file: a line per 10 s
    with open(paths["log"], "a", encoding="utf-8") as log, bar:
        t_ready = _clock()
        t = start
        batches = _batches(loader, start)
        while t < total:
            epoch, (images, targets) = next(batches)
            t0 = _clock()
            where = (paths["checkpoint"] if saved_step is not None else None, saved_step, lr)
            # NOTE: a diverging step overflows somewhere before its loss is inf or NaN; the checks
            # below stop it with one message naming the term, so NumPy's warnings would only be noise.
            lr_t = lr_at(t)
            losses, grad_norm = train_step(model, optimizer, images, targets,
                                           np.random.default_rng([seed, t]), lr_t, clip_norm,
                                           step=t + 1, where=where)
            t_done = _clock()
            times.append(t_done - t0)
            wall.append(t_done - t_ready)            # what the time cap pays per step: data included

            t = step = t + 1
            if step % log_every == 0 or step == total:
                _write_record(log, {"step": step, "epoch": epoch, "lr": lr_t, "total_steps": total,
                                    **losses, "grad_norm": grad_norm, "sec_per_step": times[-1],
                                    "data_sec": t0 - t_ready})
            bar.set_postfix({k.removeprefix("loss_"): f"{v:.4g}" for k, v in losses.items()},
                            refresh=False)
            bar.update(1)
            if deadline is not None and step < total and len(wall) > FIT_AFTER:
                # NOTE: the call's first step is left out (Numba compiles, caches fill: it can take
                # 20 s); during the warm-up the length may also grow back towards the plan, so a
                # passing slowdown (another job on the machine) does not cut the run for good.
                ceiling = record["planned_steps"] if step < warmup_steps else total
                fitted = _fit_to_deadline(step, ceiling, wall[1:], deadline - _clock(), save_sec,
                                          checkpoint_every)
                if fitted < total or fitted > 1.1 * total:      # grow only by a real margin
                    sec = _sec_per_step(wall)
                    _say(f"max_minutes={max_minutes:g}: at {sec:.3f} s/step, {fitted - step} more steps "
                         f"fit; the schedule now ends at step {fitted} instead of {total} "
                         f"(planned: {record['planned_steps']}), the cosine reaching 0 there")
                    total = record["total_steps"] = fitted
                    record["schedule_fit"] = {"step": step, "sec_per_step": sec,
                                              "max_minutes": max_minutes}
                    lr_at = schedule_of(total)
                    record["schedule"] = lr_at.as_dict()
                    bar.total = total
            out_of_time = deadline is not None and _clock() >= deadline
            if step == total or out_of_time or (checkpoint_every and step % checkpoint_every == 0):
                t_save = _clock()
                _save(paths, model, optimizer, step, record)
                save_sec, saved_step = _clock() - t_save, step
            if out_of_time and step < total:
                stopped = "max_minutes"
                _say(f"max_minutes={max_minutes:g} reached: stopped after step {step} of {total}, before "
                     f"the schedule ended; resume=True continues from {paths['checkpoint']}")
                break
            t_ready = _clock()
    return _summary(len(times), start + len(times), record, stopped, times, losses, paths)


def train_step(model, optimizer, images, targets, rng, lr: float, clip_norm: float | None,
               step: int = 0, where=(None, None, None)) -> tuple[dict, float]:
    """One update (the module docstring's five lines); returns ``(losses, grad_norm)`` as Python
    floats, ``losses`` with their sum ``loss``. Stops with :class:`NonFiniteLossError` (naming the
    term, ``step`` and ``where``) before the parameters change.

    The loss terms and the gradient norm stay where the model computes them until one read brings
    all six back together: on a GPU that is the step's single wait for the device."""
    # NOTE: a diverging step overflows somewhere before its loss is inf or NaN; the checks below stop
    # it with one message naming the term, so NumPy's warnings would only be noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        optimizer.zero_grad()
        raw = model.forward_train(images, targets, rng, host=False)
        model.backward()
        norm = optimizer.clip_grad_norm(clip_norm) if clip_norm else optimizer.grad_norm()
        xp = get_array_module(norm)
        values = to_numpy(xp.stack([xp.asarray(v, dtype=xp.float64).reshape(()) for v in raw.values()]
                                   + [norm]))                   # the one device -> host read
        losses = _finite_losses(dict(zip(raw, values[:-1])), step, where)
        grad_norm = float(values[-1])
        _check_finite("grad_norm", grad_norm, step, where)
        optimizer.step(lr)
    return losses, grad_norm


def _sec_per_step(wall: list) -> float:
    """The time a step takes now: the median over the recent steps, the last few if they are slower."""
    return max(statistics.median(wall[-FIT_WINDOW:]), statistics.median(wall[-FIT_RECENT:]))


def _fit_to_deadline(step: int, total: int, wall: list, time_left: float, save_sec: float,
                     checkpoint_every) -> int:
    """The schedule's length that fits the time left: ``total`` if the projected finish is in time,
    else ``step + n`` with ``n`` the steps that fit in ``FIT_MARGIN`` of the time left (after the
    checkpoint saves still due), at least 1: the last step then has the schedule's smallest lr."""
    sec = _sec_per_step(wall)
    saves_left = 1 + ((total - step) // checkpoint_every if checkpoint_every else 0)
    if (total - step) * sec + saves_left * save_sec <= time_left:
        return total
    budget = FIT_MARGIN * time_left - saves_left * save_sec
    return step + max(1, min(total - step, int(budget // sec)))


# ----------------------------------------------------------------------------------------------------
# Helpers: data, checks, files.
# ----------------------------------------------------------------------------------------------------

def _say(message: str) -> None:
    """Lifecycle messages (resume, out of time) go to stderr, where tqdm draws its bar."""
    tqdm.write(f"[mrcnn-np train] {message}", file=sys.stderr)


def _as_loader(data, model, batch_size, input_size, hflip_prob, seed):
    if hasattr(data, "epoch") and hasattr(data, "__len__"):
        return data                                          # already a loader
    config = getattr(model, "config", None)
    if input_size is None and getattr(config, "resize", None) == "min_max":
        input_size = model.transform                       # torchvision's rule, as at inference
    if input_size is None:
        input_size = getattr(config, "image_size", None)
    if input_size is None:
        raise ValueError("input_size: a dataset was given and model.config has no image_size; "
                         "pass input_size=(H, W) or a BatchLoader")
    return BatchLoader(data, batch_size, input_size, shuffle=True, seed=seed, hflip_prob=hflip_prob)


def _images_per_step(loader) -> int:
    """The images in a batch: the loader's batch size, or its dataset's size if that is smaller."""
    batch = getattr(loader, "batch_size", None)
    if batch is None:
        raise ValueError(f"lr: {type(loader).__name__} has no batch_size to scale the default lr "
                         f"to; pass lr=")
    dataset = getattr(loader, "dataset", None)
    return min(int(batch), len(dataset)) if dataset is not None else int(batch)


def _plain(x):
    """NumPy integers as Python ints, so the checkpoint's JSON takes them."""
    return int(x) if isinstance(x, np.integer) else x


def _total_steps(steps, epochs, per_epoch) -> int:
    if per_epoch < 1:
        raise ValueError(f"data: the loader yields {per_epoch} batches per epoch, expected at least 1")
    if (steps is None) == (epochs is None):
        raise ValueError(f"steps/epochs: give exactly one of them, got steps={steps!r}, epochs={epochs!r}")
    n, name = (steps, "steps") if steps is not None else (epochs, "epochs")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected a positive integer, got {n!r}")
    return int(n) if steps is not None else int(n) * per_epoch


def _check_intervals(log_every, checkpoint_every, max_minutes, clip_norm) -> None:
    def positive_int(v):
        return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= 1

    if not positive_int(log_every):
        raise ValueError(f"log_every: expected a positive integer, got {log_every!r}")
    if checkpoint_every is not None and not positive_int(checkpoint_every):
        raise ValueError(f"checkpoint_every: expected a positive integer or None, got {checkpoint_every!r}")
    for name, v in (("max_minutes", max_minutes), ("clip_norm", clip_norm)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
            raise ValueError(f"{name}: expected a non-negative number or None, got {v!r}")


def _batches(loader, start: int):
    """``(epoch, batch)`` from update ``start`` on, forever: epoch ``start // n`` from its batch
    ``start % n`` on (asked of the loader by index, so nothing before it is loaded), then whole
    epochs. ``n = len(loader)``."""
    per_epoch = len(loader)
    epoch, skip = divmod(start, per_epoch)
    if skip and "start_batch" not in inspect.signature(loader.epoch).parameters:
        raise ValueError(f"data: resuming at batch {skip} of epoch {epoch} needs the loader's "
                         f"epoch(e, start_batch=b); {type(loader).__name__}.epoch takes no start_batch")
    while True:
        count = skip
        batches = loader.epoch(epoch, start_batch=skip) if skip else loader.epoch(epoch)
        for count, batch in enumerate(batches, skip + 1):
            yield epoch, batch
        if count != per_epoch:
            raise ValueError(f"data: epoch {epoch} had {count} batches, but len(loader) = {per_epoch}; "
                             f"the step -> batch bookkeeping needs them equal")
        epoch, skip = epoch + 1, 0


def _check_finite(term: str, value: float, step: int, where) -> None:
    """``where = (last checkpoint path or None, its step, base lr)``, for the error message."""
    if not math.isfinite(value):
        raise NonFiniteLossError(term, value, step, *where)


def _finite_losses(raw: dict, step: int, where) -> dict:
    """The model's loss terms as Python floats plus their sum ``loss``; stops on a NaN or inf."""
    losses = {k: float(v) for k, v in raw.items()}
    for k, v in losses.items():
        _check_finite(k, v, step, where)
    losses["loss"] = sum(losses.values())
    return losses


def _write_record(log, record: dict) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()                              # a crash loses at most the line being written


def _read_log(log_path: Path) -> tuple[list[dict], bool]:
    """The log's records and whether the file is clean (every line whole). A last line without its
    newline is a record cut by a kill: it is left out. A bad line elsewhere is a ``ValueError``."""
    text = log_path.read_text(encoding="utf-8")
    lines = text.split("\n")
    clean = text == "" or text.endswith("\n")
    if not clean:
        lines = lines[:-1]                   # NOTE: the record being written when the process died
    records = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{log_path}: line {n} is not valid JSON ({exc}); the training log "
                                 f"is damaged (remove it to resume without it)") from exc
    return records, clean


def _trim_log(log_path: Path, start: int) -> None:
    """Keep only the records of steps ``<= start`` (those the checkpoint includes); rewritten
    atomically, and only if something has to go. A fresh run (``start = 0``) empties the log."""
    if not log_path.exists():
        return
    records, clean = _read_log(log_path)
    kept = [r for r in records if r.get("step", 0) <= start]
    if len(kept) != len(records) or not clean:
        atomic_write_bytes(log_path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))


def _start_fresh(paths: dict) -> int:
    """A fresh run in a folder that held one: its checkpoint goes first, then (in the caller) its
    log. A kill between the two leaves a log without a checkpoint, which a resume empties; the other
    order could leave an old checkpoint beside the new run's log."""
    ckpt = paths["checkpoint"]
    if ckpt.exists():
        try:
            step = read_metadata(ckpt)["step"]
            what = f"its checkpoint was at step {step}"
        except ValueError:
            what = "its checkpoint was unreadable"
        _say(f"a fresh run in {ckpt.parent} replaces the run there ({what}); resume=True would have "
             f"continued it")
        ckpt.unlink()
    paths["loss_curve"].unlink(missing_ok=True)
    return 0


def _restore(ckpt: Path, model, optimizer, record: dict, schedule_of):
    """Load the checkpoint into model and optimizer and settle the schedule with the one it records.

    Returns ``(step, lr_at)``: the steps the checkpoint had done (0 if there is none) and the
    schedule to continue with; updates ``record`` (``total_steps``, ``schedule``, ``schedule_fit``)."""
    if not ckpt.exists():
        _say(f"resume: no checkpoint at {ckpt}; starting from step 0")
        return 0, schedule_of(record["total_steps"])
    meta = load_checkpoint(ckpt, model, optimizer)
    step, extra = int(meta["step"]), meta.get("extra") or {}
    for key in ("steps_per_epoch", "data_seed", "seed"):
        if key in extra and extra[key] != record[key]:
            raise ValueError(f"resume: {ckpt} was trained with {key}={extra[key]!r}, this run has "
                             f"{record[key]!r}; the resumed run would not see the same batches")
    asked = record["planned_steps"]
    was_total = int(extra.get("total_steps", asked))
    was_planned = int(extra.get("planned_steps", was_total))
    was_schedule = extra.get("schedule") or {}
    if was_schedule.get("base_lr", record["schedule"]["base_lr"]) != record["schedule"]["base_lr"]:
        _say(f"resume: the base lr is now {record['schedule']['base_lr']:g} "
             f"(the run so far used {was_schedule['base_lr']:g})")
    if asked == was_planned:
        # The same run: repeat its schedule, a length fitted to max_minutes included.
        record.update(total_steps=was_total, schedule_fit=extra.get("schedule_fit"))
        _say(f"resume: loaded {ckpt} at step {step} of {was_total}")
        lr_at = schedule_of(was_total)
        record["schedule"] = lr_at.as_dict()
        return step, lr_at
    if asked <= step:
        raise ValueError(f"steps: the run in {ckpt.parent} has done {step} steps already; a resume "
                         f"with steps={asked} can only extend it (more than {step}); steps={was_planned}, "
                         f"the run's own, finishes it as planned")
    lr_at = schedule_of(asked)
    was = f"{LRSchedule(**_schedule_kwargs(was_schedule))(step):.3g}" if was_schedule else "?"
    _say(f"resume: loaded {ckpt} at step {step}; the run was planned for {was_planned} steps "
         f"(schedule over {was_total}), now {asked}: the schedule is recomputed over {asked} steps, "
         f"so the lr of step {step + 1} is {lr_at(step):.3g} instead of {was}")
    record["schedule"] = lr_at.as_dict()
    return step, lr_at


def _schedule_kwargs(d: dict) -> dict:
    """LRSchedule's arguments from its :meth:`~mrcnn_np.optim.LRSchedule.as_dict`."""
    return {"base_lr": d["base_lr"], "total_steps": d["total_steps"], "warmup_steps": d["warmup_steps"],
            "warmup_factor": d["warmup_factor"], "kind": d["kind"], "steps": d["steps"],
            "gamma": d["gamma"]}


def _save(paths: dict, model, optimizer, step: int, record: dict) -> None:
    epoch, position = divmod(step, record["steps_per_epoch"])
    save_checkpoint(paths["checkpoint"], model, optimizer, step,
                    extra={**record, "epoch": epoch, "batch_in_epoch": position})
    records, _ = _read_log(paths["log"])
    if records:
        plot_losses(records, x_key="step", save_path=paths["loss_curve"])


def peak_rss_mib() -> float | None:
    """The process's peak resident memory so far, in MiB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:                      # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10   # bytes on macOS, KiB on Linux


def _summary(done, step, record, stopped, times, losses, paths) -> dict:
    return {"steps_done": done, "step": step, "total_steps": record["total_steps"],
            "planned_steps": record["planned_steps"], "stopped": stopped,
            "sec_per_step_median": statistics.median(times) if times else None,
            "final_losses": dict(losses), "peak_rss_mib": peak_rss_mib(),
            **{k: str(v) for k, v in paths.items()}}
