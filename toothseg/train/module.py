"""The LightningModule: network (``self.model``), loss, mixup, per-epoch metrics, AdamW + a learning-rate schedule
(warm-up/cosine, one-cycle or linear) over ``total_steps``, which the time-budget planner re-sizes as it goes.
With ``train.progressive_share`` the first share of those steps trains on batches at half the scale.

hparams hold what inference needs to rebuild the network without the run's config: ``model`` (the ModelConfig
dict), ``scale`` ([h, w]), ``resize`` and the ``train`` section (and, when semi-supervised, the ``pseudo``
section). Checkpoint keys are ``model.<...>``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from toothseg.config import ModelConfig, PseudoConfig, TrainConfig
from toothseg.models.factory import create_model, uses_encoder
from toothseg.train.budget import step_cap, steps_per_epoch
from toothseg.train.hardware import use_channels_last
from toothseg.train.losses import SegLoss
from toothseg.train.strong_augment import cutmix

MIXUP_ALPHA = 0.4
MIN_LR_FACTOR = 0.01  # cosine and linear decay to 1% of the peak learning rate
ONECYCLE_RISE, ONECYCLE_START, ONECYCLE_END = 0.3, 1 / 25, 1 / 25e4  # torch OneCycleLR's defaults


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


def _cos(a: float, b: float, t: float) -> float:
    """Cosine interpolation from ``a`` (t=0) to ``b`` (t=1)."""
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))


def lr_factor(step: int, warmup: int, total: int, shape: str = "cosine") -> float:
    """Share of the peak learning rate at optimizer ``step`` of ``total``. 'cosine': linear warm-up over
    ``warmup`` steps, then cosine to MIN_LR_FACTOR; 'linear': the same warm-up, then a straight line down;
    'onecycle': cosine ramp from ONECYCLE_START over the first ONECYCLE_RISE of the steps, then cosine to
    ONECYCLE_END (``warmup`` unused)."""
    if shape == "onecycle":
        rise = max(1, int(ONECYCLE_RISE * total))
        if step < rise:
            return _cos(ONECYCLE_START, 1.0, step / rise)
        return _cos(1.0, ONECYCLE_END, (step - rise) / max(1, total - rise))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if shape == "linear":
        return 1.0 - (1.0 - MIN_LR_FACTOR) * t
    return _cos(1.0, MIN_LR_FACTOR, t)


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
        if getattr(self, "_channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def on_fit_start(self) -> None:
        mcfg = ModelConfig.model_validate(self.hparams["model"])
        encoder = mcfg.encoder if uses_encoder(mcfg) else ""
        self._channels_last = use_channels_last(self.tcfg.channels_last, encoder, self.device.type)
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)

    def small_step(self, step: int) -> bool:
        """Whether optimizer ``step`` trains at half scale (the first ``progressive_share`` of the planned steps)."""
        return self.tcfg.progressive_share > 0 and step < int(self.tcfg.progressive_share * self.total_steps)

    @staticmethod
    def _half_scale(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Area-downscale images and targets by 2 per side; hard targets are re-binarised."""
        x = F.interpolate(batch["image"], scale_factor=0.5, mode="area")
        y = F.interpolate(batch["target"], scale_factor=0.5, mode="area")
        y = torch.where(batch["hard"].view(-1, 1, 1, 1), (y > 0.5).to(y.dtype), y)
        out = {**batch, "image": x, "target": y}
        if batch.get("valid") is not None:  # a pixel stays ignored if any of its four parents was
            out["valid"] = -F.max_pool2d(-batch["valid"].float(), 2) > 0.5
        return out

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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.small_step(self.global_step):
            batch = self._half_scale(batch)
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

    def on_train_start(self) -> None:
        if self.total_steps <= 0:  # not restored from a checkpoint
            spe = steps_per_epoch(self.trainer)
            self.total_steps = step_cap(int(self.trainer.max_epochs or self.tcfg.epochs), spe, self.trainer.max_steps)
            self.warmup_steps = int(round(self.tcfg.warmup_epochs * spe))
        self.apply_schedule()

    def apply_schedule(self) -> None:
        """Set the optimizer's learning rate for the current step (after the schedule length changed)."""
        sched = self.lr_schedulers()
        if sched is None:
            return
        f = lr_factor(sched.last_epoch, self.warmup_steps, max(self.total_steps, 1), self.tcfg.schedule)
        for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
            group["lr"] = base * f

    def configure_optimizers(self) -> dict[str, Any]:
        # On CPU torch's default AdamW loops over the parameter tensors in Python (about a tenth of a small-image
        # step); the fused kernel does the same update in one pass. Not under mixed precision (bf16 included):
        # Lightning refuses to clip the gradients of a fused optimizer there, as it would under gradient scaling.
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        fused = self.device.type == "cpu" and "mixed" not in precision
        opt = torch.optim.AdamW(self.parameters(), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay,
                                fused=True if fused else None)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, self.warmup_steps, max(self.total_steps, 1), self.tcfg.schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["toothseg_schedule"] = {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        s = checkpoint.get("toothseg_schedule", {})
        self.total_steps = int(s.get("total_steps", 0))
        self.warmup_steps = int(s.get("warmup_steps", 0))
