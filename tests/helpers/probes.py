"""Callbacks tests add to a fit to see its state: a finished fit keeps no training state on disk (only the
weights in best.ckpt), so what a test checks about the schedule or the EMA it reads while training runs."""

from __future__ import annotations

import lightning as L
import torch


def weights(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class FinalState(L.Callback):
    """At the end of training: the planned schedule length and the learning rate of the last step."""

    total_steps: int | None = None
    last_lr: float | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total_steps = int(pl_module.total_steps)
        self.last_lr = float(trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0])


class SeenWeights(L.Callback):
    """The raw weights after every optimizer step and the weights every validation scored (under EMA: the
    average, which Lightning swaps in for validation; this callback runs before it swaps back)."""

    def __init__(self) -> None:
        self.raw: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.raw.append(weights(pl_module))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated.append(weights(pl_module))


class Crash(L.Callback):
    """Stands in for a kill: raises after optimizer step ``at_step`` (before that step's checkpoint)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("killed")


class FirstStep(L.Callback):
    """The global step training (re)started at."""

    step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step = int(trainer.global_step)
