"""Fit a cosine schedule to a wall-clock budget.

With ``--max-time`` the number of epochs that fit is unknown up front. After every epoch (training plus
validation) this callback measures the mean epoch time, works out how many *whole* epochs still fit in the time
left, and resizes both the epoch limit and the cosine schedule to end there. Training therefore ends on a
validated epoch with the learning rate at its minimum instead of being cut mid-epoch at a high rate; Lightning's
own ``max_time`` stays in place as the hard stop. The budget survives ``--resume`` (Lightning's Timer state is in
the checkpoint). On a shared machine the per-epoch time moves, so the schedule end is re-estimated each epoch.
"""

from __future__ import annotations

import math
import time

import lightning as L
from lightning.pytorch.callbacks import Timer

SAFETY = 0.97  # leave a little of the budget for the last validation and checkpoint writes
PROBE_STEPS = 10  # first estimate after this many steps (for budgets where even one epoch may not fit)
VAL_COST = 0.35  # a validation image costs about this share of a training image (forward only)


class BudgetSchedule(L.Callback):
    def __init__(self, max_epochs: int, val_batches: int = 0) -> None:
        self.max_epochs = max_epochs
        self.val_batches = val_batches
        self._epoch_start: float | None = None
        self._times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probe = (time.monotonic(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        """Early estimate from the first steps: without it a budget shorter than one epoch would end with the
        learning rate still near its peak."""
        t0, s0 = getattr(self, "_probe", (None, None))
        timer = _timer(trainer)
        if t0 is None or self._times or timer is None or trainer.global_step - s0 < PROBE_STEPS:
            return
        self._probe = (None, None)
        per_step = (time.monotonic() - t0) / (trainer.global_step - s0)
        spe = _steps_per_epoch(trainer)
        epoch_time = per_step * (spe + VAL_COST * self.val_batches)
        steps_left = timer.time_remaining() * SAFETY / max(epoch_time, 1e-6) * spe
        epochs_fit = (trainer.global_step + steps_left) / spe
        if epochs_fit >= 1:
            end = min(self.max_epochs, max(1, math.floor(epochs_fit)))
            trainer.fit_loop.max_epochs = end
            pl_module.total_steps = end * spe
        else:  # not even one epoch fits: let the cosine end when the time does
            pl_module.total_steps = int(trainer.global_step + steps_left)
        pl_module.apply_schedule()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = _timer(trainer)
        if timer is None or self._epoch_start is None or timer.time_remaining() is None:
            return
        self._times.append(time.monotonic() - self._epoch_start)
        epoch_time = sum(self._times[-3:]) / len(self._times[-3:])
        done = trainer.current_epoch + 1
        more = max(0, math.floor(timer.time_remaining() * SAFETY / max(epoch_time, 1e-6)))
        end = min(self.max_epochs, done + more)
        trainer.fit_loop.max_epochs = end
        if end <= done:
            trainer.should_stop = True
            return
        pl_module.total_steps = end * _steps_per_epoch(trainer)
        pl_module.apply_schedule()


def _timer(trainer: L.Trainer) -> Timer | None:
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return timer if timer is not None and timer.time_remaining() is not None else None


def _steps_per_epoch(trainer: L.Trainer) -> int:
    return max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
