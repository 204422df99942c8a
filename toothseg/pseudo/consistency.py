"""Online weak-to-strong consistency training (FixMatch / UniMatch style) as a SegModule with its own step.

Each step sees a labelled batch and as many unlabelled images (`PairedDataset`). An EMA copy of the network (the
teacher, `torch.optim.swa_utils.AveragedModel`) predicts the weak view of each unlabelled image; the student
learns those predictions on the strong view (photometric perturbation of the same weak image, then CutMix between
the unlabelled images, with targets and confidence masks mixed by the same boxes), only on pixels where the teacher
is confident (max(p, 1 - p) >= ``pseudo.confidence_threshold``). The unlabelled loss weight ramps up linearly over
the first ``pseudo.rampup_share`` of the steps, while the teacher is still poor.

Only ``module.model``'s logits are used, so every model family works. Validation (and ``best.ckpt``) is the student
on labelled images; the EMA teacher's weights are saved in the checkpoint (``toothseg_ema``) so ``--resume``
continues it. The EMA is kept out of the module's children: checkpoints stay loadable as a plain `SegModule`, and
DDP neither syncs nor expects gradients for it (every rank updates it from the same synchronised weights).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from toothseg.train.module import SegModule
from toothseg.train.strong_augment import cutmix

EMA_KEY = "toothseg_ema"


def confident(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels whose probability is at least ``threshold`` from undecided: max(p, 1 - p) >= threshold."""
    return torch.maximum(prob, 1 - prob) >= threshold


def consistency_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     dice_weight: float = 0.0) -> torch.Tensor:
    """BCE of ``logits`` against hard ``target`` on ``mask``ed pixels, averaged over *all* pixels (UniMatch: a
    batch the teacher is unsure of pulls less), plus ``dice_weight`` x soft Dice over the masked pixels."""
    m = mask.float()
    bce = (F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none") * m).sum()
    loss = bce / m.numel()
    if dice_weight > 0:
        p = torch.sigmoid(logits.float()) * m
        t = target.float() * m
        inter = (p * t).sum()
        dice = 1 - (2 * inter + 1.0) / (p.sum() + t.sum() + 1.0)
        loss = loss + dice_weight * dice
    return loss


def ramp(step: int, total: int, share: float) -> float:
    """Linear 0 -> 1 over the first ``share`` of ``total`` steps (1 from the start when share is 0)."""
    span = share * max(total, 1)
    return 1.0 if span <= 0 else min(1.0, step / span)


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers), without gradients."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema.eval()


class ConsistencyModule(SegModule):
    """SegModule whose training step adds the weak-to-strong consistency loss on the batch's unlabelled images."""

    def __init__(self, model: dict[str, Any], scale: list[int], resize: str, train: dict[str, Any],
                 pseudo: dict[str, Any] | None = None) -> None:
        super().__init__(model, scale, resize, train, pseudo)
        self._ema_box: list[AveragedModel] = []  # a list, so nn.Module does not register the EMA as a child
        self._ema_state: dict[str, torch.Tensor] | None = None

    @property
    def ema(self) -> AveragedModel:
        if not self._ema_box:
            ema = make_ema(self.model, self.pcfg.ema_decay).to(self.device)
            if self._ema_state is not None:
                ema.load_state_dict(self._ema_state)
                self._ema_state = None
            self._ema_box.append(ema)
        return self._ema_box[0]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        lab = self._mixup(self._cutmix_pseudo(batch))
        x_l, weak, strong = lab["image"], batch["u_weak"], batch["u_strong"]
        with torch.no_grad():
            teacher = self.ema.module
            teacher.eval()
            prob = torch.sigmoid(teacher(weak).float())
        target = (prob >= 0.5).float()
        mask = confident(prob, self.pcfg.confidence_threshold)
        (strong, target, mask), _, _ = cutmix([strong, target, mask], self.pcfg.cutmix_p)
        logits = self(torch.cat([x_l, strong]))  # one pass: BatchNorm sees labelled and unlabelled together
        logits_l, logits_u = logits[: x_l.shape[0]], logits[x_l.shape[0]:]
        sup, parts = self.loss(logits_l, lab["target"], lab["hard"], lab["weight"], lab.get("valid"))
        unsup = consistency_loss(logits_u, target, mask, self.pcfg.consistency_dice)
        w = self.pcfg.unlabelled_weight * ramp(self.global_step, self.total_steps, self.pcfg.rampup_share)
        loss = sup + w * unsup
        bs = x_l.shape[0]
        self.log_train(loss, {**parts, "unsup": unsup.detach()}, bs)
        self.log("train_confident", mask.float().mean(), on_step=False, on_epoch=True, batch_size=bs,
                 sync_dist=True)
        self.log("train_unsup_weight", w, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The EMA follows every optimizer step, inside the step, so a checkpoint written after the batch (the
        periodic last.ckpt) holds an EMA that has seen exactly ``global_step`` updates."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._ema_box:
            checkpoint[EMA_KEY] = {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
        elif self._ema_state is not None:
            checkpoint[EMA_KEY] = self._ema_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._ema_box.clear()
        self._ema_state = checkpoint.get(EMA_KEY)
