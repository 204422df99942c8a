"""Consistency training's pieces: the masked loss, the EMA teacher, the ramp, CutMix, strong views, confidence masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toothseg.config import build_config
from toothseg.pseudo.consistency import (EMA_KEY, ConsistencyModule, confident, consistency_loss, make_ema,
                                         ramp)
from toothseg.train.losses import SegLoss
from toothseg.train.strong_augment import build_strong_photometric, cutmix


def _module(**pseudo) -> ConsistencyModule:
    cfg = build_config("tiny", overrides=["train.scales=[[64, 128]]"])
    return ConsistencyModule(model=cfg.model.model_dump(mode="json"), scale=[64, 128], resize="resize",
                             train=cfg.train.model_dump(mode="json"),
                             pseudo=cfg.pseudo.model_copy(update=pseudo).model_dump(mode="json"))


def test_confident_pixels_are_those_far_from_undecided() -> None:
    p = torch.tensor([0.0, 0.04, 0.05, 0.5, 0.94, 0.95, 0.96, 1.0])
    assert confident(p, 0.95).tolist() == [True, True, True, False, False, True, True, True]


def test_consistency_loss_ignores_unconfident_pixels_analytically() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    mask = torch.tensor([[[[True, False], [True, False]]]])
    # BCE with logits: log(1 + e^-x) for target 1, log(1 + e^x) for target 0; summed over the 2 kept pixels / 4
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(0.5))) / 4
    assert consistency_loss(logits, target, mask).item() == pytest.approx(expected, rel=1e-6)
    # whatever the student predicts on ignored pixels, the loss (and its gradient there) does not move
    wild = logits.clone()
    wild[..., 0, 1] = -50.0
    wild[..., 1, 1] = -50.0
    wild.requires_grad_(True)
    loss = consistency_loss(wild, target, mask, dice_weight=1.0)
    loss.backward()
    assert wild.grad[..., 0, 1].item() == 0.0 and wild.grad[..., 1, 1].item() == 0.0
    assert wild.grad[..., 0, 0].item() != 0.0
    same = consistency_loss(logits, target, mask, dice_weight=1.0)
    assert loss.item() == pytest.approx(same.item(), rel=1e-6)
    assert consistency_loss(logits, target, torch.zeros_like(mask)).item() == 0.0


def test_ramp_up_of_the_unlabelled_weight() -> None:
    assert [ramp(s, 100, 0.2) for s in (0, 10, 20, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert ramp(0, 100, 0.0) == 1.0


def test_ema_update_is_an_exponential_average() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    ema = make_ema(net, decay=0.9)
    assert all(not p.requires_grad for p in ema.parameters())
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update_parameters(net)  # the first update copies the model
    assert torch.allclose(ema.module[0].weight, w0 + 1.0)
    with torch.no_grad():
        net[0].weight.add_(2.0)
        net[1].running_mean.fill_(3.0)
    ema.update_parameters(net)
    assert torch.allclose(ema.module[0].weight, 0.9 * (w0 + 1.0) + 0.1 * (w0 + 3.0), atol=1e-6)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 0.1 * 3.0), atol=1e-6)  # buffers too


def test_cutmix_moves_image_target_and_mask_together() -> None:
    n, h, w = 6, 16, 24
    ids = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    img = ids.expand(n, 1, h, w).clone()
    tgt = (ids * 10).expand(n, 1, h, w).clone()
    mask = (ids % 2 == 0).expand(n, 1, h, w).clone()
    g = torch.Generator().manual_seed(0)
    (mi, mt, mm), boxes, partner = cutmix([img, tgt, mask], p=1.0, generator=g)
    assert bool(boxes.any(dim=(1, 2, 3)).all())  # p=1: every sample got a box
    assert (partner != torch.arange(n)).all()
    src = mi  # every pixel's source sample, read from the image
    assert torch.equal(mt, src * 10)
    assert torch.equal(mm, src % 2 == 0)
    assert torch.equal(src, torch.where(boxes, partner.view(n, 1, 1, 1).float().expand_as(src), ids.expand_as(src)))
    share = boxes.float().mean(dim=(1, 2, 3))
    assert bool(((share > 0.0) & (share <= 0.45)).all())
    (same, *_), none, _ = cutmix([img, tgt, mask], p=0.0)
    assert torch.equal(same, img) and not none.any()
    # only the listed positions mix, and only with each other
    (mi, _, _), boxes, partner = cutmix([img, tgt, mask], p=1.0, index=torch.tensor([1, 4]), generator=g)
    assert not boxes[[0, 2, 3, 5]].any() and partner[1] == 4 and partner[4] == 1
    assert set(mi.unique().tolist()) <= set(range(n)) and torch.equal(mi[0], img[0])


def test_strong_view_is_photometric_only() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((64, 128), np.uint8)
    img[20:40, 30:60] = 200
    img = (img + rng.integers(0, 20, img.shape)).astype(np.uint8)
    aug = build_strong_photometric()
    out = aug(image=img)["image"]
    assert out.shape == img.shape and out.dtype == np.uint8
    # no geometry: the bright block is still where it was
    assert out[25:35, 35:55].mean() > out[45:60, 70:120].mean()


def test_consistency_step_trains_the_student_and_keeps_the_teacher_out_of_the_state_dict() -> None:
    m = _module(confidence_threshold=0.5, cutmix_p=1.0)
    m.total_steps = 10
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 1, 64, 128), "target": (torch.rand(2, 1, 64, 128) > 0.5).float(),
             "hard": torch.tensor([True, True]), "pseudo": torch.tensor([False, False]),
             "weight": torch.ones(2), "valid": torch.ones(2, 1, 64, 128, dtype=torch.bool),
             "u_weak": torch.randn(2, 1, 64, 128), "u_strong": torch.randn(2, 1, 64, 128)}
    m.log = lambda *a, **k: None  # no Trainer attached: logging is not under test
    m.log_train = lambda *a, **k: None
    loss = m.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in m.model.parameters())
    assert all(p.grad is None for p in m.ema.parameters())
    assert not any(k.startswith("ema") or "_ema" in k for k in m.state_dict())  # loads as a plain SegModule
    ckpt: dict = {}
    m.on_save_checkpoint(ckpt)
    assert EMA_KEY in ckpt and "n_averaged" in ckpt[EMA_KEY]
    with torch.no_grad():
        for p in m.ema.parameters():
            p.fill_(0.25)
    ckpt[EMA_KEY] = {k: v.clone() for k, v in m.ema.state_dict().items()}
    fresh = _module()
    fresh.on_load_checkpoint(ckpt)
    assert all(torch.all(p == 0.25) for p in fresh.ema.parameters())  # the teacher is restored, not re-copied


def test_seg_loss_leaves_out_invalid_pixels() -> None:
    from toothseg.config import LossConfig

    loss = SegLoss(LossConfig(bce=1.0, dice=1.0, lovasz=1.0))
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    valid = torch.rand(2, 1, 8, 8) > 0.3
    base, parts = loss(logits, target, valid=valid)
    noisy = torch.where(valid, logits, torch.full_like(logits, 40.0))  # garbage where ignored
    again, parts2 = loss(noisy, target, valid=valid)
    assert again.item() == pytest.approx(base.item(), rel=1e-5)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).flatten(1).mean(1).mean()
    assert parts["bce"].item() == pytest.approx(bce.item(), rel=1e-6)
    full, _ = loss(logits, target)
    assert loss(logits, target, valid=torch.ones_like(valid))[0].item() == pytest.approx(full.item())


def test_dataset_marks_confident_pseudo_pixels(tmp_path: Path) -> None:
    from toothseg.data.io import write_png
    from toothseg.errors import InputError
    from toothseg.train.dataset import SegDataset, TrainItem, confident_pixels

    img = np.full((64, 128), 90, np.uint8)
    prob = np.zeros((64, 128), np.uint8)
    prob[:, 64:] = 128  # undecided right half
    prob[:32, :64] = 250
    mask = (prob > 127).astype(bool)
    for name, arr in (("i.png", img), ("p.png", prob), ("m.png", mask)):
        write_png(tmp_path / name, arr)
    assert confident_pixels(prob, 0.95)[0, 0] == 255 and confident_pixels(prob, 0.95)[0, 100] == 0
    item = TrainItem("u/1", tmp_path / "i.png", tmp_path / "m.png", pseudo=True, confidence_path=tmp_path / "p.png")
    s = SegDataset([item], (64, 128), pixel_threshold=0.95)[0]
    assert s["valid"].shape == (1, 64, 128)
    assert bool(s["valid"][0, :, :64].all()) and not bool(s["valid"][0, :, 64:].any())
    assert bool(SegDataset([item], (64, 128))[0]["valid"].all())  # switch off: every pixel counts
    write_png(tmp_path / "p.png", prob[:32])
    with pytest.raises(InputError, match="p.png"):
        SegDataset([item], (64, 128), pixel_threshold=0.95)[0]


def test_paired_dataset_gives_aligned_views_and_skips_unreadable_unlabelled_images(tmp_path: Path,
                                                                                    caplog, monkeypatch) -> None:
    import logging

    from toothseg.data.io import write_png
    from toothseg.errors import InputError
    from toothseg.train.augment import build_augment
    from toothseg.train.dataset import PairedDataset, SegDataset, TrainItem

    img = np.full((64, 128), 40, np.uint8)
    img[10:30, 20:60] = 220
    write_png(tmp_path / "l.png", img)
    write_png(tmp_path / "m.png", img > 100)
    write_png(tmp_path / "u.png", img)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    lab = SegDataset([TrainItem("a/1", tmp_path / "l.png", tmp_path / "m.png")], (64, 128), "resize",
                     build_augment("strong"))
    pool = [TrainItem("u/bad", tmp_path / "bad.png", pseudo=True), TrainItem("u/1", tmp_path / "u.png", pseudo=True)]
    monkeypatch.setattr(logging.getLogger("toothseg"), "propagate", True)  # a run's setup_logging turns it off
    caplog.set_level(logging.WARNING, logger="toothseg")
    ds = PairedDataset(lab, pool, build_strong_photometric(), seed=0)
    assert len(ds) == 1
    for _ in range(6):  # draws reach the unreadable image, which is reported and left out
        s = ds[0]
        assert s["u_weak"].shape == s["u_strong"].shape == s["image"].shape == (1, 64, 128)
        # photometric only: the bright block is bright in both views wherever geometry put it
        weak, strong = s["u_weak"][0], s["u_strong"][0]
        bright = weak > weak.mean()
        assert strong[bright].mean() > strong[~bright].mean()
    assert [it.key for it in ds.unlabelled] == ["u/1"] and "bad.png" in caplog.text
    with pytest.raises(InputError, match="unlabelled"):
        PairedDataset(lab, [], None)


def test_offline_pseudo_items_alone_get_cutmix_and_strong_views(tmp_path: Path) -> None:
    from toothseg.data.io import write_png
    from toothseg.train.dataset import SegDataset, TrainItem
    from toothseg.train.module import SegModule

    cfg = build_config("tiny")
    m = SegModule(model=cfg.model.model_dump(mode="json"), scale=[64, 128], resize="resize",
                  train=cfg.train.model_dump(mode="json"),
                  pseudo=cfg.pseudo.model_copy(update={"pseudo_strong_aug": True, "cutmix_p": 1.0}).model_dump())
    n = 4
    ids = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 32, 48).clone()
    batch = {"image": ids, "target": ids / 10, "valid": ids < 2, "pseudo": torch.tensor([True, False, True, True])}
    torch.manual_seed(0)
    out = m._cutmix_pseudo(batch)
    assert torch.equal(out["image"][1], ids[1])  # the labelled sample is never mixed
    assert set(out["image"][[0, 2, 3]].unique().tolist()) <= {0.0, 2.0, 3.0}
    assert not torch.equal(out["image"], ids)
    assert torch.equal(out["target"], out["image"] / 10) and torch.equal(out["valid"], out["image"] < 2)
    off = SegModule(model=cfg.model.model_dump(mode="json"), scale=[64, 128], resize="resize",
                    train=cfg.train.model_dump(mode="json"))
    assert off._cutmix_pseudo(batch) is batch  # switch off (the default): untouched

    img = np.full((64, 128), 100, np.uint8)
    write_png(tmp_path / "i.png", img)
    write_png(tmp_path / "m.png", img > 50)
    items = [TrainItem("a/1", tmp_path / "i.png", tmp_path / "m.png"),
             TrainItem("u/1", tmp_path / "i.png", tmp_path / "m.png", pseudo=True)]
    import albumentations as A

    ds = SegDataset(items, (64, 128), strong=A.Compose([A.InvertImg(p=1.0)]))
    assert torch.equal(ds[0]["image"], SegDataset(items[:1], (64, 128))[0]["image"])  # labelled: no strong view
    assert not torch.equal(ds[1]["image"], ds[0]["image"])  # pseudo-labelled: strong view applied


def test_pseudo_items_carry_their_soft_map_for_pixel_confidence(tmp_path: Path) -> None:
    from toothseg.pseudo.schedules import pseudo_items
    from toothseg.run.folder import RunDir

    (tmp_path / "samples.csv").write_text("key,source,image_id,image_path,mask_path\n"
                                          f"u/2,u,2,{tmp_path}/i2.png,\n")
    pdir = tmp_path / "pseudo"
    pdir.mkdir()
    (pdir / "scores.csv").write_text("key,score,selected\nu/2,0.9,1\n")
    plain, = pseudo_items(RunDir(tmp_path), pdir)
    assert plain.confidence_path is None and plain.soft_path is None
    conf, = pseudo_items(RunDir(tmp_path), pdir, pixel_confidence=True)
    assert conf.confidence_path == pdir / "soft" / "u" / "2.png" and conf.soft_path is None  # hard target kept
