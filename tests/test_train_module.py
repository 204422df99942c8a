"""LightningModule pieces: learning-rate schedule, mixup rules, per-image metrics, hard-sample selection."""

from __future__ import annotations

import pytest
import torch

from toothseg.config import build_config
from toothseg.train.hard_mining import hard_keys, oversample
from toothseg.train.dataset import TrainItem
from toothseg.train.module import MIN_LR_FACTOR, SegModule, batch_dice_iou, lr_factor


def test_lr_warmup_then_cosine_to_floor():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx((1 + MIN_LR_FACTOR) / 2, abs=1e-6)
    assert lr_factor(100, 10, 100) == pytest.approx(MIN_LR_FACTOR)
    assert lr_factor(500, 10, 100) == pytest.approx(MIN_LR_FACTOR)
    vals = [lr_factor(s, 10, 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_dice_iou_conventions_for_empty_masks():
    gt = torch.zeros(3, 1, 4, 4)
    gt[2, :, :2] = 1
    logits = torch.full((3, 1, 4, 4), -5.0)
    logits[1, :, 0, 0] = 5  # spurious pixel on an empty ground truth
    logits[2, :, :2] = 5
    dice, iou = batch_dice_iou(logits, gt)
    assert dice.tolist() == [1.0, 0.0, 1.0] and iou.tolist() == [1.0, 0.0, 1.0]


def _module(**train) -> SegModule:
    cfg = build_config("tiny", overrides=[f"train.{k}={v}" for k, v in train.items()])
    return SegModule(cfg.model.model_dump(mode="json"), [64, 128], "resize", cfg.train.model_dump(mode="json"))


def _batch(pseudo: list[bool]) -> dict[str, torch.Tensor]:
    n = len(pseudo)
    return {"image": torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone(),
            "target": (torch.arange(n) % 2).float().view(n, 1, 1, 1).expand(n, 1, 4, 4).clone(),
            "hard": torch.ones(n, dtype=torch.bool), "pseudo": torch.tensor(pseudo),
            "weight": torch.ones(n)}


def test_mixup_pseudo_only_leaves_real_samples_untouched():
    torch.manual_seed(0)
    m = _module(mixup_p=1.0, mixup_pseudo_only=True)
    b = _batch([False, False, True, True, True, False])
    out = m._mixup(b)
    real = ~b["pseudo"]
    assert torch.equal(out["image"][real], b["image"][real]) and bool(out["hard"][real].all())
    changed = (out["image"] != b["image"]).flatten(1).any(1)
    assert changed[b["pseudo"]].any() and not changed[real].any()
    assert not out["hard"][changed].any()  # mixed targets are soft: Lovasz skips them


def test_mixup_off_is_identity():
    m = _module(mixup_p=0.0)
    b = _batch([True, True, False])
    assert m._mixup(b) is b


def test_hparams_hold_model_scale_resize():
    m = _module()
    assert m.hparams["scale"] == [64, 128] and m.hparams["resize"] == "resize"
    assert m.hparams["model"]["encoder"] == "tu-tf_efficientnetv2_b0"
    assert all(k.startswith(("model.", "loss.")) for k in m.state_dict())


def test_hard_keys_lowest_fraction_and_oversampling(tmp_path):
    rows = [{"key": f"s/{i}", "dice": d, "iou": d, "hd95": 1.0} for i, d in enumerate([0.9, 0.2, 0.8, 0.5, 0.95])]
    assert hard_keys(rows, 0.4) == ["s/1", "s/3"]
    assert hard_keys(rows, 0.01) == ["s/1"] and hard_keys(rows, 0) == []
    items = [TrainItem(r["key"], tmp_path / "x.png", tmp_path / "m.png") for r in rows]
    out = oversample(items, {"s/1"}, 2)
    assert len(out) == 7 and [it.key for it in out].count("s/1") == 3
