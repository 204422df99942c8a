"""The LightningModule: network (``self.model``), loss, mixup, per-epoch metrics, AdamW + warm-up/cosine schedule.

hparams hold what inference needs to rebuild the network without the run's config: ``model`` (the ModelConfig
dict), ``scale`` ([h, w]), ``resize`` and the ``train`` section (and, when semi-supervised, the ``pseudo``
section). Checkpoint keys are ``model.<...>``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from toothseg.config import ModelConfig, PseudoConfig, TrainConfig
from toothseg.models.factory import create_model
from toothseg.train.losses import SegLoss
from toothseg.train.strong_augment import cutmix

MIXUP_ALPHA = 0.4
MIN_LR_FACTOR = 0.01  # cosine decays to 1% of the peak learning rate


def batch_dice_iou(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of the thresholded prediction (both empty = 1, one empty = 0)."""
    pred = (logits > 0).flatten(1)
    gt = (target > 0.5).flatten(1)
    inter = (pred & gt).sum(1).float()
    ps, gs = pred.sum(1).float(), gt.sum(1).float()
    union = ps + gs - inter
    empty = (ps + gs) == 0
    dice = torch.where(empty, torch.ones_like(inter), 2 * inter / (ps + gs).clamp_min(1))
    iou = torch.where(empty, torch.ones_like(inter), inter / union.clamp_min(1))
    return dice, iou


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to MIN_LR_FACTOR at ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * t))


class SegModule(L.LightningModule):
    def __init__(self, model: dict[str, Any], scale: list[int], resize: str, train: dict[str, Any],
                 pseudo: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tcfg = TrainConfig.model_validate(train)
        # known keys only: a checkpoint must stay loadable when the pseudo section gains or loses a setting
        self.pcfg = PseudoConfig.model_validate({k: v for k, v in (pseudo or {}).items()
                                                 if k in PseudoConfig.model_fields})
        # Weights are applied by the engine before fitting, so restoring a checkpoint never needs the weights file.
        self.model = create_model(ModelConfig.model_validate(model), load_weights=False)
        self.loss = SegLoss(self.tcfg.loss)
        # Schedule length in optimizer steps; set at train start and re-sized by the time-budget callback.
        self.total_steps = 0
        self.warmup_steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- mixup -------------------------------------------------------------------------------------------------
    def _mixup(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Blend a random share (``mixup_p``) of the samples with a partner; with ``mixup_pseudo_only`` only
        pseudo-labelled samples are mixed, with each other. Mixed targets are soft, so Lovasz skips them."""
        p = self.tcfg.mixup_p
        x, y = batch["image"], batch["target"]
        n = x.shape[0]
        if p <= 0 or n < 2:
            return batch
        pool = batch["pseudo"] if self.tcfg.mixup_pseudo_only else torch.ones(n, dtype=torch.bool, device=x.device)
        idx = torch.nonzero(pool).flatten()
        if idx.numel() < 2:
            return batch
        partner = idx[torch.randperm(idx.numel(), device=x.device)]
        chosen = (torch.rand(idx.numel(), device=x.device) < p) & (partner != idx)
        if not bool(chosen.any()):
            return batch
        a, b = idx[chosen], partner[chosen]
        lam = torch.distributions.Beta(MIXUP_ALPHA, MIXUP_ALPHA).sample((a.numel(),)).to(x.device)
        lam = torch.maximum(lam, 1 - lam).view(-1, 1, 1, 1)
        x, y, hard = x.clone(), y.clone(), batch["hard"].clone()
        x[a] = lam * x[a] + (1 - lam) * batch["image"][b]
        y[a] = lam * y[a] + (1 - lam) * batch["target"][b]
        hard[a] = False
        out = {**batch, "image": x, "target": y, "hard": hard}
        if "valid" in batch:  # a blended pixel counts only where both sources are confident
            valid = batch["valid"].clone()
            valid[a] = valid[a] & batch["valid"][b]
            out["valid"] = valid
        return out

    def _cutmix_pseudo(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CutMix among the batch's pseudo-labelled samples (``pseudo.pseudo_strong_aug``); labelled ones untouched."""
        if not self.pcfg.pseudo_strong_aug or self.pcfg.cutmix_p <= 0 or "valid" not in batch:
            return batch
        idx = torch.nonzero(batch["pseudo"]).flatten()
        (x, y, valid), _, _ = cutmix([batch["image"], batch["target"], batch["valid"]], self.pcfg.cutmix_p, idx)
        return {**batch, "image": x, "target": y, "valid": valid}

    # -- steps -------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch = self._mixup(self._cutmix_pseudo(batch))
        logits = self(batch["image"])
        loss, parts = self.loss(logits, batch["target"], batch["hard"], batch["weight"], batch.get("valid"))
        self.log_train(loss, parts, batch["image"].shape[0])
        return loss

    def log_train(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], bs: int) -> None:
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in parts.items():
            self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, batch_size=bs)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        loss, _ = self.loss(logits, batch["target"], batch["hard"], batch["weight"])
        dice, iou = batch_dice_iou(logits, batch["target"])
        bs = batch["image"].shape[0]
        self.log("val_loss", loss, on_epoch=True, prog_bar=False, batch_size=bs, sync_dist=True)
        self.log("val_dice", dice.mean(), on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val_iou", iou.mean(), on_epoch=True, prog_bar=False, batch_size=bs, sync_dist=True)

    # -- optimisation ------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.total_steps <= 0:  # not restored from a checkpoint
            spe = max(1, int(self.trainer.num_training_batches) // max(1, self.trainer.accumulate_grad_batches))
            total = int(self.trainer.max_epochs or self.tcfg.epochs) * spe
            if self.trainer.max_steps and self.trainer.max_steps > 0:
                total = min(total, int(self.trainer.max_steps))
            self.total_steps = total
            self.warmup_steps = int(round(self.tcfg.warmup_epochs * spe))
        self.apply_schedule()

    def apply_schedule(self) -> None:
        """Set the optimizer's learning rate for the current step (after the schedule length changed)."""
        sched = self.lr_schedulers()
        if sched is None:
            return
        f = lr_factor(sched.last_epoch, self.warmup_steps, max(self.total_steps, 1))
        for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
            group["lr"] = base * f

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.parameters(), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, self.warmup_steps, max(self.total_steps, 1)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["toothseg_schedule"] = {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        s = checkpoint.get("toothseg_schedule", {})
        self.total_steps = int(s.get("total_steps", 0))
        self.warmup_steps = int(s.get("warmup_steps", 0))
