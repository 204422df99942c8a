"""Per-step and per-epoch training overhead: the validation interval (every ``train.val_every`` epochs and always
the final weights) and the fused AdamW update on CPU."""

from __future__ import annotations

import csv

import torch

from helpers.fakerun import make_run
from toothseg.config import build_config, load_config
from toothseg.run.folder import open_run
from toothseg.train.kfold import labelled_items, split_items
from toothseg.train.fit import fit_model
from toothseg.train.module import SegModule


def _val_epochs(metrics_csv) -> list[int]:
    return [int(r["epoch"]) for r in csv.DictReader(open(metrics_csv)) if r.get("val_dice")]


def _fit(tmp_path, val_every: int, epochs: int, extra: tuple[str, ...] = ()):
    run, _ = make_run(tmp_path, n=8, overrides=["train.batch_size=4", "train.augment=none", "train.threads=1",
                                                f"train.val_every={val_every}", *extra])
    rd = open_run(run)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    return fit_model(load_config(rd.config), train, val, run / "f", epochs=epochs)


def test_validates_every_n_epochs_and_always_the_last(tmp_path):
    res = _fit(tmp_path, val_every=2, epochs=5)
    assert res.epochs == 5
    assert _val_epochs(res.metrics_csv) == [1, 3, 4]  # epochs 2 and 4 by the interval, the fifth as the final one
    best = torch.load(res.best_ckpt, map_location="cpu", weights_only=True)
    assert best["epoch"] in (1, 3, 4)  # best.ckpt comes from a validated epoch
    assert res.best_val_dice is not None


def test_a_run_shorter_than_the_interval_still_validates_its_final_weights(tmp_path):
    res = _fit(tmp_path, val_every=10, epochs=2)
    assert _val_epochs(res.metrics_csv) == [1]
    assert res.best_val_dice is not None


def test_bf16_training_on_cpu_clips_gradients_with_the_unfused_adamw(tmp_path):
    # Lightning refuses to clip a fused optimizer's gradients under mixed precision; the cpu preset on a bf16 CPU
    # (clipping on, bf16-mixed) must still train.
    res = _fit(tmp_path, val_every=1, epochs=1, extra=("train.precision=bf16-mixed", "train.grad_clip=1.0"))
    assert res.epochs == 1 and res.best_val_dice is not None


def test_cpu_training_uses_the_fused_adamw_with_the_same_update():
    cfg = build_config("tiny", overrides=["train.weight_decay=0.05"])
    module = SegModule(cfg.model.model_dump(mode="json"), [64, 128], "resize", cfg.train.model_dump(mode="json"))
    opt = module.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert opt.defaults["lr"] == cfg.train.lr and opt.defaults["weight_decay"] == 0.05
    # three steps on the same gradients: the fused kernel lands where the reference loop does
    torch.manual_seed(0)
    ref = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(2)]
    fused = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    start = [p.detach().clone() for p in ref]
    o_ref = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.05, foreach=False)
    o_fused = torch.optim.AdamW(fused, lr=1e-2, weight_decay=0.05, fused=True)
    for _ in range(3):
        grads = [torch.randn(5, 3) for _ in ref]
        for ps, o in ((ref, o_ref), (fused, o_fused)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            o.step()
    for a, b, a0 in zip(ref, fused, start):
        assert not torch.allclose(a, a0, atol=1e-3)  # the steps moved the weights ...
        assert torch.allclose(a, b, atol=1e-6)  # ... by the same amount
