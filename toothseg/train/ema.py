"""Exponential moving average of the weights, with a warm-up.

A plain EMA that starts at the first step keeps a share of the random initial weights for hundreds of steps
(0.99^300 = 5 %), so the validations of a short CPU run (which pick the best checkpoint) score a blend of trained
and untrained weights. The warm-up (TensorFlow's ``num_updates`` rule, as in timm's EMA) uses
``min(decay, (1 + n) / (10 + n))`` after n updates: early averages follow the weights closely and the configured
decay applies once the weights have settled.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging


def warmup_decay(decay: float, n_averaged: int) -> float:
    """The decay applied at the update after ``n_averaged`` earlier ones."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def _warmup_ema_multi_avg_fn(decay: float):
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # integer buffers (BatchNorm's batch counter) follow the model
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, 1.0 - warmup_decay(decay, int(n_averaged)))

    return update


class WarmupEMA(EMAWeightAveraging):
    """Lightning's EMA callback (validation, checkpoints and so bundles get the average) with a warm-up decay."""

    def __init__(self, decay: float, **kwargs: Any) -> None:
        super().__init__(decay=decay, **kwargs)
        self._kwargs = {k: v for k, v in self._kwargs.items() if k != "avg_fn"}
        self._kwargs["multi_avg_fn"] = _warmup_ema_multi_avg_fn(decay)
