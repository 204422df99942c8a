"""When validation runs: every ``train.val_every`` epochs, and always on the final weights.

Validation picks ``best.ckpt`` and costs a checkpoint write each time, so on tiny epochs (a few steps each, as in
the demo) validating every epoch can cost as much as training. With ``val_every`` > 1 Lightning alone would skip
the last epoch's validation whenever the epoch count is not a multiple of it, and the final weights (under a
decaying learning rate usually the best) could never become ``best.ckpt``; `ValidationSchedule` switches the last
epoch to validate. The time-budget planner (`toothseg.train.budget`) does the same for a budget that ends inside
an epoch.
"""

from __future__ import annotations

import lightning as L


class ValidationSchedule(L.Callback):
    """Validate every ``every`` epochs and at the end of the last epoch (``trainer.max_epochs``, read each epoch
    because the budget planner may shorten it)."""

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.current_epoch >= (trainer.max_epochs or 0) - 1
        trainer.check_val_every_n_epoch = 1 if last else self.every
