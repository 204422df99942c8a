"""The segmentation loss: weighted BCE + Dice + Lovasz (the recipe uses all three), with soft-target support.

BCE and (soft) Dice accept probability targets, so teacher probabilities (distillation) and mixup-blended masks
train through them directly. Lovasz-hinge is defined for binary labels only, so it is computed on the samples of
the batch whose target is hard (``hard`` flag); a batch without any contributes 0. A sample's ``weight`` scales
its pixel-wise BCE term (the Dice and Lovasz terms are computed over the batch). Pixels where ``valid`` is False
(unconfident pseudo-label pixels) are left out of all three terms; BCE still averages over all pixels, so an image
with few confident pixels weighs less.
The optional boundary term (`toothseg.train.boundary`), aimed at HD95, also needs binary targets and is
computed on the hard samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss
from torch import nn

from toothseg.config import LossConfig
from toothseg.errors import ConfigError
from toothseg.train.boundary import boundary_loss

IGNORE = -1.0  # target value of ignored pixels for smp's Dice/Lovasz (real targets are in 0..1)


class SegLoss(nn.Module):
    """``forward(logits, target, hard=None, weight=None) -> (total, {"bce", "dice", "lovasz", "boundary"})``."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        if cfg.bce + cfg.dice + cfg.lovasz <= 0:
            raise ConfigError("train.loss: bce, dice and lovasz weights are all 0; give at least one a weight > 0")
        self.cfg = cfg
        self.dice = DiceLoss(mode="binary", from_logits=True, ignore_index=IGNORE)
        self.lovasz = LovaszLoss(mode="binary", per_image=True, from_logits=True, ignore_index=IGNORE)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, hard: torch.Tensor | None = None,
                weight: torch.Tensor | None = None, valid: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = logits.float()
        target = target.float()
        keep = None if valid is None or bool(valid.all()) else valid.to(torch.bool)
        b = logits.shape[0]
        if hard is None:
            hard = torch.ones(b, dtype=torch.bool, device=logits.device)
        if weight is None:
            weight = torch.ones(b, dtype=torch.float32, device=logits.device)
        zero = logits.new_zeros(())
        parts = {"bce": zero, "dice": zero, "lovasz": zero}
        if self.cfg.boundary > 0:
            parts["boundary"] = zero
        if self.cfg.bce > 0:
            per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            per = (per if keep is None else per * keep).flatten(1).mean(1)
            w = weight.float()
            parts["bce"] = (per * w).sum() / w.sum().clamp_min(1e-8)
        if self.cfg.dice > 0:
            parts["dice"] = self.dice(logits, target if keep is None else torch.where(keep, target, IGNORE))
        if self.cfg.lovasz > 0 and bool(hard.any()):
            binary = (target[hard] > 0.5).float()
            if keep is not None:
                binary = torch.where(keep[hard], binary, IGNORE)
            parts["lovasz"] = self.lovasz(logits[hard], binary)
        if self.cfg.boundary > 0 and bool(hard.any()):
            parts["boundary"] = boundary_loss(logits[hard], target[hard])
        return sum(getattr(self.cfg, name) * part for name, part in parts.items()), parts
