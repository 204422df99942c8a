"""Where training time goes: a callback that clocks data loading, compute, validation and checkpoint writes.

Lightning fetches a batch before ``on_train_batch_start``, so the time between one batch's end and the next
batch's start is data loading; start to end is compute (forward, backward, optimizer step). Validation is clocked
from its start to its end hooks, and checkpoint writes by wrapping ``trainer.save_checkpoint`` (every writer,
ModelCheckpoint included, goes through it); both are taken out of the step they interrupt. The budget planner
(`toothseg.train.budget`) reads the per-step costs from here and the profile (`toothseg.train.profile`) sums them.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any, Callable

import lightning as L


# Tests replace this with a fake clock; everything here and in the budget planner reads time through it.
CLOCK: Callable[[], float] = time.monotonic
WINDOW = 20  # recent optimizer steps the step-cost estimate averages over


def now() -> float:
    return CLOCK()


class PhaseTimes(L.Callback):
    """Accumulates seconds per phase (``data``, ``compute``, ``val``, ``ckpt``) and per-step costs."""

    def __init__(self) -> None:
        self.totals = {"data": 0.0, "compute": 0.0, "val": 0.0, "ckpt": 0.0}
        self.batches = 0
        self.images = 0
        self.steps = 0  # optimizer steps taken in this process
        self.val_runs: list[float] = []
        self.ckpt_writes: list[float] = []
        self.full: deque[float] = deque(maxlen=WINDOW)  # seconds of recent full-scale optimizer steps
        self.small: deque[float] = deque(maxlen=WINDOW)  # ... and of small-scale ones (progressive resizing)
        self._mark: float | None = None  # end of the last batch (or epoch start)
        self._interrupt = 0.0  # validation / checkpoint seconds since the mark
        self._batch_start: float | None = None
        self._step_cost = 0.0  # data + compute of the micro-batches of the optimizer step in progress
        self._last_step = 0
        self._val_start: float | None = None
        self._saver: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saver is None:
            self._saver = trainer.save_checkpoint

            def timed_save(*args: Any, **kwargs: Any) -> Any:
                t = now()
                try:
                    return self._saver(*args, **kwargs)
                finally:
                    seconds = now() - t
                    self._add_interrupt("ckpt", seconds)
                    self.ckpt_writes.append(seconds)

            trainer.save_checkpoint = timed_save  # type: ignore[method-assign]

    def _add_interrupt(self, phase: str, seconds: float) -> None:
        self.totals[phase] += seconds
        self._interrupt += seconds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark, self._interrupt = now(), 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        t = now()
        self._add_step_part("data", self._mark, t)
        self._batch_start, self._interrupt = t, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        t = now()
        self._add_step_part("compute", self._batch_start, t)
        self.batches += 1
        if isinstance(batch, dict) and "image" in batch:
            self.images += int(batch["image"].shape[0])
        if trainer.global_step > self._last_step:  # an optimizer step completed with this micro-batch
            self.steps += trainer.global_step - self._last_step
            small = bool(getattr(pl_module, "small_step", lambda s: False)(trainer.global_step - 1))
            (self.small if small else self.full).append(self._step_cost)
            self._step_cost = 0.0
            self._last_step = trainer.global_step
        self._mark, self._interrupt = t, 0.0

    def _add_step_part(self, phase: str, since: float | None, t: float) -> None:
        """Seconds of ``phase`` from ``since`` to ``t``, less the interruptions (validation, checkpoints) between."""
        if since is not None:
            seconds = max(0.0, t - since - self._interrupt)
            self.totals[phase] += seconds
            self._step_cost += seconds

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = now()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is not None:
            seconds = now() - self._val_start
            self._add_interrupt("val", seconds)
            self.val_runs.append(seconds)
            self._val_start = None

    def step_seconds(self, small_ratio: float) -> float | None:
        """Seconds per full-scale optimizer step (from small-scale steps / ``small_ratio`` while no full-scale one
        was seen), or None before any step."""
        if self.full:  # medians: a first step (kernel set-up) or a stall on a shared machine must not steer the plan
            return statistics.median(self.full)
        if self.small:
            return statistics.median(self.small) / max(small_ratio, 1e-9)
        return None

    def small_ratio(self, default: float) -> float:
        """Measured cost of a small-scale step relative to a full one (``default`` until both were seen)."""
        if not self.small or not self.full:
            return default
        return min(1.0, statistics.median(self.small) / max(statistics.median(self.full), 1e-9))

    def summary(self) -> dict[str, float]:
        return {"batches": self.batches, "images": self.images, "steps": self.steps,
                **{f"{k}_s": round(v, 3) for k, v in self.totals.items()}}
