"""The training loop: batches in, SGD steps out, with a log, a loss curve and resumable checkpoints.

One step, for the update with index ``t = 0, 1, ..., T-1`` (the log calls it ``step = t + 1``, the
number of updates done)::

    model.zero_grad()
    losses = model.forward_train(images, targets, rng_t)     rng_t = default_rng([seed, t])
    every term finite?  else NonFiniteLossError              (before anything changes)
    model.backward()                                         grad of L = sum of the terms
    ||grad|| finite? (clipped to clip_norm if given)         global norm, see mrcnn_np.optim
    optimizer.step(lr(t))                                    SGD + momentum + weight decay

Reproducibility. The data order of epoch ``e`` depends only on the loader's seed and ``e`` (see
:mod:`mrcnn_np.data.loader`) and the sampling generator of update ``t`` only on ``(seed, t)``, so
update ``t`` always sees the same batch and the same random draws: a run resumed from a checkpoint
at step ``k`` recreates epoch ``k // len(loader)``, skips its first ``k % len(loader)`` batches and
ends with exactly the parameters of an uninterrupted run.

Files in ``out_dir``:

* ``log.jsonl``       one JSON object per logged step: ``step, epoch, lr, loss_rpn_cls, loss_rpn_box,
                      loss_cls, loss_box, loss_mask`` (the model's terms), ``loss`` (their sum),
                      ``grad_norm`` (before clipping), ``sec_per_step`` (forward + backward + update),
                      ``data_sec`` (waiting for the batch). Appended and flushed line by line; a
                      resume first drops records newer than the checkpoint, a fresh run empties it.
* ``checkpoint.npz``  the latest checkpoint (:mod:`mrcnn_np.checkpoint`), every ``checkpoint_every``
                      steps, at the end, and when ``max_minutes`` is up; written atomically.
* ``loss_curve.png``  the log drawn by :func:`mrcnn_np.visualize.plot_losses`, at each checkpoint.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import atomic_write_bytes
from .checkpoint import load_checkpoint, save_checkpoint
from .data.loader import BatchLoader
from .optim import SGD, LRSchedule, clip_grad_norm, global_grad_norm
from .visualize import plot_losses, read_jsonl

__all__ = ["train", "NonFiniteLossError", "peak_rss_mib", "LOG_NAME", "CHECKPOINT_NAME", "CURVE_NAME"]

LOG_NAME, CHECKPOINT_NAME, CURVE_NAME = "log.jsonl", "checkpoint.npz", "loss_curve.png"


class NonFiniteLossError(FloatingPointError):
    """A loss term (or the gradient norm) became NaN or infinite; training stopped before the update."""

    def __init__(self, term: str, value: float, step: int, checkpoint=None):
        self.term, self.value, self.step = term, value, step
        kept = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
        super().__init__(f"{term} = {value} at step {step}: training stopped before the update{kept}")


def train(model, data, out_dir, *, steps: int | None = None, epochs: int | None = None,
          batch_size: int = 2, input_size=None, hflip_prob: float = 0.5,
          lr: float = 0.02, momentum: float = 0.9, weight_decay: float = 1e-4,
          schedule: str = "cosine", milestones=(), gamma: float = 0.1, warmup_steps: int = 0,
          warmup_factor: float = 0.001, clip_norm: float | None = None,
          checkpoint_every: int | None = None, log_every: int = 1, max_minutes: float | None = None,
          resume: bool = False, seed: int = 0, progress: bool = True, extra: dict | None = None) -> dict:
    """Train ``model`` for ``steps`` updates (or ``epochs`` passes over the data); returns a summary.

    ``data``: a :class:`~mrcnn_np.data.BatchLoader` (or anything with ``len()`` = batches per epoch
    and ``epoch(e)`` -> iterator of ``(images, targets)``), or a dataset, which is wrapped in a
    shuffled ``BatchLoader(data, batch_size, input_size, seed=seed, hflip_prob=hflip_prob)``
    (``input_size`` defaults to ``model.config.image_size``). The learning rate follows
    ``LRSchedule(lr, T, warmup_steps, warmup_factor, schedule, milestones, gamma)``. ``resume=True``
    continues from ``out_dir/checkpoint.npz`` (if there is one) to the same total ``T``.
    ``max_minutes`` stops at the first step boundary after that much time, with a checkpoint.
    ``extra`` (JSON-able) is stored in every checkpoint beside the run's own record (e.g. the
    dataset's class names, which ``eval`` and ``predict`` read back).

    Summary: ``steps_done`` (this call), ``step`` (in all), ``total_steps``, ``stopped``
    (``"finished"``, ``"max_minutes"`` or ``"already finished"``), ``sec_per_step_median``,
    ``final_losses``, ``peak_rss_mib`` and the paths of the three files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"checkpoint": out / CHECKPOINT_NAME, "log": out / LOG_NAME, "loss_curve": out / CURVE_NAME}
    loader = _as_loader(data, model, batch_size, input_size, hflip_prob, seed)
    total = _total_steps(steps, epochs, len(loader))
    _check_intervals(log_every, checkpoint_every, max_minutes, clip_norm)
    params = model.named_parameters()
    optimizer = SGD(params, lr, momentum=momentum, weight_decay=weight_decay)
    lr_at = LRSchedule(lr, total, warmup_steps, warmup_factor, schedule, milestones, gamma)
    # What a checkpoint records about the run; a resume checks the first three.
    record = {"steps_per_epoch": len(loader), "data_seed": _plain(getattr(loader, "seed", None)),
              "seed": _plain(seed), "total_steps": total, "schedule": lr_at.as_dict(),
              "clip_norm": clip_norm, "optimizer": {"momentum": momentum, "weight_decay": weight_decay},
              **(extra or {})}
    start = _restore(paths["checkpoint"], model, optimizer, record) if resume else 0
    _trim_log(paths["log"], start)
    if start >= total:
        _say(f"{paths['checkpoint']}: already at step {start} of {total}; nothing to do")
        return _summary(0, start, total, "already finished", [], {}, paths)

    deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
    times, losses, stopped = [], {}, "finished"
    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)   # a log file: a line per 10 s
    with open(paths["log"], "a", encoding="utf-8") as log, bar:
        t_ready = time.perf_counter()
        for t, (epoch, (images, targets)) in zip(range(start, total), _batches(loader, start)):
            t0 = time.perf_counter()
            model.zero_grad()
            raw = model.forward_train(images, targets, np.random.default_rng([seed, t]))
            losses = _finite_losses(raw, t + 1, paths["checkpoint"])
            model.backward()
            grad_norm = clip_grad_norm(params, clip_norm) if clip_norm else global_grad_norm(params)
            _check_finite("grad_norm", grad_norm, t + 1, paths["checkpoint"])
            lr_t = lr_at(t)
            optimizer.step(lr_t)
            times.append(time.perf_counter() - t0)

            step = t + 1
            if step % log_every == 0 or step == total:
                _write_record(log, {"step": step, "epoch": epoch, "lr": lr_t, **losses,
                                    "grad_norm": grad_norm, "sec_per_step": times[-1],
                                    "data_sec": t0 - t_ready})
            bar.set_postfix({k.removeprefix("loss_"): f"{v:.4g}" for k, v in losses.items()},
                            refresh=False)
            bar.update(1)
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if step == total or out_of_time or (checkpoint_every and step % checkpoint_every == 0):
                _save(paths, model, optimizer, step, record)
            if out_of_time and step < total:
                stopped = "max_minutes"
                _say(f"max_minutes={max_minutes} reached: stopped after step {step} of {total}; "
                     f"resume=True continues from {paths['checkpoint']}")
                break
            t_ready = time.perf_counter()
    return _summary(len(times), start + len(times), total, stopped, times, losses, paths)


# ----------------------------------------------------------------------------------------------------
# Helpers: data, checks, files.
# ----------------------------------------------------------------------------------------------------

def _say(message: str) -> None:
    """Lifecycle messages (resume, out of time) go to stderr, where tqdm draws its bar."""
    tqdm.write(f"[mrcnn-np train] {message}", file=sys.stderr)


def _as_loader(data, model, batch_size, input_size, hflip_prob, seed):
    if hasattr(data, "epoch") and hasattr(data, "__len__"):
        return data                                          # already a loader
    if input_size is None:
        input_size = getattr(getattr(model, "config", None), "image_size", None)
    if input_size is None:
        raise ValueError("input_size: a dataset was given and model.config has no image_size; "
                         "pass input_size=(H, W) or a BatchLoader")
    return BatchLoader(data, batch_size, input_size, shuffle=True, seed=seed, hflip_prob=hflip_prob)


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
    """``(epoch, batch)`` from update ``start`` on, forever: epoch ``start // n`` minus the batches
    already done, then whole epochs. ``n = len(loader)``."""
    per_epoch = len(loader)
    epoch, skip = divmod(start, per_epoch)
    while True:
        count = 0
        for count, batch in enumerate(loader.epoch(epoch), 1):
            if count > skip:                 # NOTE: the skipped batches were trained on before the resume
                yield epoch, batch
        if count != per_epoch:
            raise ValueError(f"data: epoch {epoch} had {count} batches, but len(loader) = {per_epoch}; "
                             f"the step -> batch bookkeeping needs them equal")
        epoch, skip = epoch + 1, 0


def _check_finite(term: str, value: float, step: int, checkpoint) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(term, value, step, checkpoint if Path(checkpoint).exists() else None)


def _finite_losses(raw: dict, step: int, checkpoint) -> dict:
    """The model's loss terms as Python floats plus their sum ``loss``; stops on a NaN or inf."""
    losses = {k: float(v) for k, v in raw.items()}
    for k, v in losses.items():
        _check_finite(k, v, step, checkpoint)
    losses["loss"] = sum(losses.values())
    return losses


def _write_record(log, record: dict) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()                              # a crash loses at most the line being written


def _trim_log(log_path: Path, start: int) -> None:
    """Keep only the records of steps ``<= start`` (those the checkpoint includes); rewritten
    atomically, and only if something has to go. A fresh run (``start = 0``) empties the log."""
    if not log_path.exists():
        return
    records = read_jsonl(log_path)
    kept = [r for r in records if r.get("step", 0) <= start]
    if len(kept) != len(records):
        atomic_write_bytes(log_path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))


def _restore(ckpt: Path, model, optimizer, record: dict) -> int:
    """Load the checkpoint into model and optimizer; the number of steps it had done (0 if none)."""
    if not ckpt.exists():
        _say(f"resume: no checkpoint at {ckpt}; starting from step 0")
        return 0
    meta = load_checkpoint(ckpt, model, optimizer)
    extra = meta.get("extra") or {}
    for key in ("steps_per_epoch", "data_seed", "seed"):
        if key in extra and extra[key] != record[key]:
            raise ValueError(f"resume: {ckpt} was trained with {key}={extra[key]!r}, this run has "
                             f"{record[key]!r}; the resumed run would not see the same batches")
    _say(f"resume: loaded {ckpt} at step {meta['step']}")
    return int(meta["step"])


def _save(paths: dict, model, optimizer, step: int, record: dict) -> None:
    epoch, position = divmod(step, record["steps_per_epoch"])
    save_checkpoint(paths["checkpoint"], model, optimizer, step,
                    extra={**record, "epoch": epoch, "batch_in_epoch": position})
    records = read_jsonl(paths["log"])
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


def _summary(done, step, total, stopped, times, losses, paths) -> dict:
    return {"steps_done": done, "step": step, "total_steps": total, "stopped": stopped,
            "sec_per_step_median": statistics.median(times) if times else None,
            "final_losses": dict(losses), "peak_rss_mib": peak_rss_mib(),
            **{k: str(v) for k, v in paths.items()}}
