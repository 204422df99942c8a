"""The training loss: BCE + Dice + Lovasz, soft targets, per-sample weights, bad weights."""

from __future__ import annotations

import pytest
import torch

from toothseg.config import LossConfig
from toothseg.errors import ConfigError
from toothseg.train.losses import SegLoss


def _target(b: int = 2) -> torch.Tensor:
    t = torch.zeros(b, 1, 16, 16)
    t[:, :, 4:12, 4:12] = 1
    return t


def test_good_prediction_scores_lower_than_bad():
    loss = SegLoss(LossConfig())
    t = _target()
    good, _ = loss(t * 20 - 10, t)
    bad, _ = loss(-(t * 20 - 10), t)
    assert good < 0.1 < bad


def test_all_three_terms_contribute_and_weights_apply():
    t = _target()
    logits = torch.randn_like(t)
    total, parts = SegLoss(LossConfig(bce=1, dice=1, lovasz=1))(logits, t)
    assert all(v > 0 for v in parts.values())
    assert torch.isclose(total, parts["bce"] + parts["dice"] + parts["lovasz"])
    only_dice, p2 = SegLoss(LossConfig(bce=0, dice=2, lovasz=0))(logits, t)
    assert torch.isclose(only_dice, 2 * parts["dice"]) and p2["bce"] == 0 and p2["lovasz"] == 0


def test_soft_targets_minimised_at_the_target_and_lovasz_skipped():
    soft = torch.full((2, 1, 8, 8), 0.7)
    loss = SegLoss(LossConfig(dice=0))
    hard = torch.zeros(2, dtype=torch.bool)
    at, parts = loss(torch.logit(soft), soft, hard=hard)
    off, _ = loss(torch.logit(soft) + 1.0, soft, hard=hard)
    assert parts["lovasz"] == 0
    assert at < off
    # a gradient flows through the soft BCE/Dice terms
    x = torch.zeros(2, 1, 8, 8, requires_grad=True)
    SegLoss(LossConfig())(x, soft, hard=hard)[0].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lovasz_only_on_hard_samples():
    t = _target(2)
    logits = torch.randn_like(t)
    loss = SegLoss(LossConfig(bce=0, dice=0, lovasz=1))
    _, mixed = loss(logits, t, hard=torch.tensor([True, False]))
    _, first = loss(logits[:1], t[:1])
    assert torch.isclose(mixed["lovasz"], first["lovasz"])


def test_sample_weights_scale_bce():
    t = _target(2)
    logits = torch.zeros_like(t)
    logits[0] = 5 * (t[0] * 2 - 1)  # sample 0 right, sample 1 undecided
    loss = SegLoss(LossConfig(bce=1, dice=0, lovasz=0))
    _, even = loss(logits, t)
    _, heavy1 = loss(logits, t, weight=torch.tensor([0.1, 1.0]))
    assert heavy1["bce"] > even["bce"]


def test_empty_masks_give_finite_loss():
    t = torch.zeros(2, 1, 8, 8)
    total, _ = SegLoss(LossConfig())(torch.randn_like(t), t)
    assert torch.isfinite(total)


def test_all_zero_weights_rejected():
    with pytest.raises(ConfigError, match="train.loss"):
        SegLoss(LossConfig(bce=0, dice=0, lovasz=0))
