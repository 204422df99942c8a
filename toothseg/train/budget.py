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


class BudgetSchedule(L.Callback):
    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs
        self._epoch_start: float | None = None
        self._times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
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
        spe = max(1, int(trainer.num_training_batches) // max(1, trainer.accumulate_grad_batches))
        pl_module.total_steps = end * spe
        pl_module.apply_schedule()
