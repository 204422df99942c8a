"""CPU training levers (issue 13): budget plan with a fake clock, the fitted-image cache, EMA, schedules, hardware."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch

import toothseg.train.budget as budget
import toothseg.train.dataset as dataset
import toothseg.train.fit as fit
import toothseg.train.phases as phases
from helpers.fakerun import make_run
from helpers.probes import Crash, FinalState
from toothseg.config import build_config, load_config
from toothseg.errors import ConfigError
from toothseg.run.folder import open_run
from toothseg.train.boundary import boundary_loss, signed_distance
from toothseg.train.budget import MARGIN_S, plan_total_steps
from toothseg.train.dataset import SegDataset
from toothseg.train.ema import WarmupEMA, warmup_decay
from toothseg.train.kfold import labelled_items, split_items
from toothseg.train.fit import fit_model, resolve_precision
from toothseg.train.hardware import onednn_isa_allows_bf16, resolve_workers, use_channels_last
from toothseg.train.module import lr_factor


def _split(tmp_path, n=16, overrides=()):
    run, _ = make_run(tmp_path, n=n, overrides=["train.batch_size=2", "train.augment=none", "train.threads=1",
                                                *overrides])
    rd = open_run(run)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    return run, load_config(rd.config), train, val


# -- the budget planner ----------------------------------------------------------------------------------------
def test_plan_fills_the_budget_with_steps_validations_and_a_reserve():
    total = plan_total_steps(done=0, remaining_s=100.0, step_s=1.0, val_s=3.0, ckpt_s=0.5, val_interval=10,
                             ckpt_interval=25, cap=10_000)
    vals, ckpts = total // 10, total // 25
    vals = (total - 1) // 10  # the validation on the last step is the reserved final one
    used = total + vals * 3.5 + ckpts * 0.5 + 3.0 + 2 * 0.5 + MARGIN_S
    assert used <= 100.0 < used + 1.0 + 3.5 + 0.5  # one more step would not fit
    assert plan_total_steps(0, 100.0, 1.0, 3.0, 0.5, 10, 25, cap=40) == 40  # epochs/max_steps cap it
    assert plan_total_steps(30, 1.0, 1.0, 3.0, 0.5, 10, 25, cap=100) == 30  # nothing fits any more: stop now


def test_plan_counts_half_scale_steps_at_their_cost():
    full = plan_total_steps(0, 200.0, 1.0, 0.0, 0.0, 1000, 1000, 10_000)
    prog = plan_total_steps(0, 200.0, 1.0, 0.0, 0.0, 1000, 1000, 10_000, small_share=0.5, small_ratio=0.25)
    assert prog > full * 1.5  # half of the steps cost a quarter: more steps fit


class FakeCost(L.Callback):
    """Deterministic costs on a fake clock: each training batch STEP s, each validation VAL s, each checkpoint
    write CKPT s (real time is not read)."""

    STEP, VAL, CKPT = 1.0, 0.5, 0.1

    def __init__(self) -> None:
        self.t = 1000.0

    def clock(self) -> float:
        return self.t

    def on_train_batch_end(self, *args) -> None:
        self.t += self.STEP

    def on_validation_end(self, *args) -> None:
        self.t += self.VAL

    def on_save_checkpoint(self, *args) -> None:
        self.t += self.CKPT


def test_budget_is_used_and_the_partial_last_epoch_is_validated(tmp_path, monkeypatch):
    run, cfg, train, val = _split(tmp_path)
    cost = FakeCost()
    monkeypatch.setattr(phases, "CLOCK", cost.clock)
    monkeypatch.setattr(budget, "MARGIN_S", 0.5)  # scaled down with this 60 s budget of 1 s steps
    monkeypatch.setattr(fit, "hard_stop", lambda _: None)  # the real-time hard stop: not on the fake clock
    final = FinalState()
    res = fit_model(cfg, train, val, run / "f", max_time="00:01:00", epochs=1000, callbacks=[cost, final])
    info = json.loads((run / "f" / "budget.json").read_text())
    spe = info["steps_per_epoch"]
    assert spe == 4 and res.global_step == info["planned_steps"] == info["steps"]
    assert 0.97 <= info["used_share"] <= 1.0  # at least 97% of the (fake) 60 s used, never over
    assert res.global_step % spe != 0 and info["partial_last_epoch"]
    rows = list(csv.DictReader(open(run / "f" / "metrics.csv")))
    last = rows[-1]
    assert int(last["epoch"]) == res.global_step // spe and last["val_dice"]  # the partial epoch was validated
    assert final.total_steps == res.global_step  # the decay ends on the last step
    assert final.last_lr < 0.02 * cfg.train.lr


def test_budget_survives_resume(tmp_path, monkeypatch):
    run, cfg, train, val = _split(tmp_path)
    cost = FakeCost()
    monkeypatch.setattr(phases, "CLOCK", cost.clock)
    monkeypatch.setattr(budget, "MARGIN_S", 0.5)
    monkeypatch.setattr(fit, "hard_stop", lambda _: None)
    with pytest.raises(RuntimeError, match="killed"):
        fit_model(cfg, train, val, run / "f", max_time="00:00:40", epochs=1000, callbacks=[cost, Crash(10)])
    spent = torch.load(run / "f" / "last.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    assert any(v.get("spent", 0) > 0 for v in spent.values() if isinstance(v, dict))
    cost.t += 500.0  # the time between the crash and the restart is not training time
    res = fit_model(cfg, train, val, run / "f", max_time="00:00:40", epochs=1000, resume=True, callbacks=[cost])
    info = json.loads((run / "f" / "budget.json").read_text())
    assert res.global_step == info["planned_steps"] > 10
    assert 0.9 <= info["used_share"] <= 1.0  # both sessions together (up to the crash's last checkpoint)


# -- cache -----------------------------------------------------------------------------------------------------
def test_cache_reads_each_file_once_and_matches_uncached(tmp_path, monkeypatch):
    _, cfg, train, _ = _split(tmp_path, n=6)
    reads: list[str] = []
    real_image, real_mask = dataset.read_image, dataset.read_mask
    monkeypatch.setattr(dataset, "read_image", lambda p: reads.append(str(p)) or real_image(p))
    monkeypatch.setattr(dataset, "read_mask", lambda p: reads.append(str(p)) or real_mask(p))
    cached = SegDataset(train + train[:1], (64, 128), "resize", None, cache=True)  # a repeated (oversampled) item
    plain = SegDataset(train + train[:1], (64, 128), "resize", None, cache=False)
    for _ in range(3):
        for i in range(len(cached)):
            cached[i]
    assert sorted(reads) == sorted({str(it.image_path) for it in train} | {str(it.mask_path) for it in train})
    for i in range(len(plain)):
        a, b = cached[i], plain[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])


def test_cached_arrays_cannot_be_changed_by_augmentation(tmp_path):
    _, _, train, _ = _split(tmp_path, n=4)
    ds = SegDataset(train, (64, 128), "resize", None, cache=True)
    ds.warm()
    img = ds._pair(train[0])[0]
    with pytest.raises(ValueError):
        img[0, 0] = 1


# -- EMA -------------------------------------------------------------------------------------------------------
class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.after: list[torch.Tensor] = []  # raw weights after each optimizer step

    def training_step(self, batch, batch_idx):
        return (self.lin(batch[0]) - batch[1]).pow(2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.after.append(torch.cat([self.lin.weight.detach().flatten(), self.lin.bias.detach()]).clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_ema_weights_follow_the_warmed_up_exponential_average():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3), torch.randn(12, 1))
    model = _Tiny()
    decay = 0.8
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[WarmupEMA(decay=decay)])
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=2))
    assert len(model.after) == 6
    ema = model.after[0]  # the first update copies the weights
    for n, w in enumerate(model.after[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))  # warm-up: early averages follow the weights closely
        ema = d * ema + (1 - d) * w
    final = torch.cat([model.lin.weight.detach().flatten(), model.lin.bias.detach()])
    assert torch.allclose(final, ema, atol=1e-6)  # the model ends with the averaged weights ...
    assert not torch.allclose(final, model.after[-1], atol=1e-4)  # ... not the raw last ones


def test_ema_warm_up_reaches_the_configured_decay():
    assert warmup_decay(0.99, 0) == pytest.approx(0.1)
    assert warmup_decay(0.99, 10) == pytest.approx(11 / 20)
    assert warmup_decay(0.99, 10_000) == 0.99
    assert all(warmup_decay(0.99, n) <= warmup_decay(0.99, n + 1) for n in range(2000))


# -- schedules, boundary loss, hardware ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["cosine", "linear", "onecycle"])
def test_schedules_rise_then_fall_to_their_floor(shape):
    f = [lr_factor(s, 10, 100, shape) for s in range(101)]
    peak = max(f)
    assert peak == pytest.approx(1.0, abs=0.02)
    assert f[0] < 0.2 and f[-1] <= 0.011
    top = f.index(peak)
    assert all(a >= b - 1e-12 for a, b in zip(f[top:], f[top + 1:]))  # never rises again after the peak


def test_boundary_loss_prefers_the_right_mask_and_has_signed_distances():
    m = torch.zeros(1, 1, 32, 64)
    m[..., 8:24, 16:48] = 1
    d = signed_distance(m[0, 0].numpy())
    assert d[16, 32] < 0 < d[0, 0] and d[8, 30] == 0  # inside negative, outside positive, outline zero
    good, bad = boundary_loss((m * 2 - 1) * 8, m), boundary_loss((1 - 2 * m) * 8, m)
    assert good < 0 < bad
    assert signed_distance(torch.zeros(8, 8).numpy()).sum() == 0  # empty mask: no outline, no pull


def test_bf16_only_where_onednn_may_use_it(monkeypatch):
    assert not onednn_isa_allows_bf16({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert not onednn_isa_allows_bf16({"ONEDNN_MAX_CPU_ISA": "avx512_core"})
    assert onednn_isa_allows_bf16({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    assert onednn_isa_allows_bf16({})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # an explicit choice is kept


def test_bf16_only_on_cpus_with_native_bf16_instructions(monkeypatch):
    # an AVX-512 core without AVX512-BF16/AMX: oneDNN says bf16 is supported but emulates it, twice as slow as fp32
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    for avx512_bf16, amx, expected in ((False, False, "32-true"), (True, False, "bf16-mixed"),
                                       (False, True, "bf16-mixed")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto", "cpu") == expected


def test_auto_workers_and_channels_last():
    assert resolve_workers("auto", cache=True, on_gpu=False, cores=2) == 0
    assert resolve_workers("auto", cache=False, on_gpu=True, cores=16) == 4
    assert resolve_workers(3, cache=True, on_gpu=False) == 3
    assert use_channels_last("auto", "tu-tf_efficientnetv2_b0", "cpu")
    assert not use_channels_last("auto", "resnet18", "cpu")
    assert not use_channels_last("auto", "tu-tf_efficientnetv2_b0", "cuda")
    assert use_channels_last(True, "resnet18", "cpu")


@pytest.mark.parametrize("override", ["train.num_workers=-1", "train.channels_last=maybe", "train.schedule=step",
                                      "train.accumulate=0", "train.ema_decay=1", "train.progressive_share=0.95",
                                      "train.loss.boundary=-1"])
def test_bad_lever_values_are_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".", 1)[1].split(".")[-1]):
        build_config("cpu", overrides=[override])


def test_levers_train_together_on_a_budget(tmp_path):
    run, cfg, train, val = _split(tmp_path, n=8, overrides=[
        "train.progressive_share=0.5", "train.schedule=onecycle", "train.loss.boundary=0.5", "train.accumulate=2",
        "train.ema_decay=0.9", "train.profile=true"])
    res = fit_model(cfg, train, val, run / "f", max_time="00:00:30", epochs=3)
    prof = json.loads((run / "f" / "profile.json").read_text())
    assert res.global_step == 3 == prof["steps"]  # 4 training images: 2 batches/epoch, 2 per optimizer step
    assert prof["images"] == 3 * 2 * 2 and set(prof["seconds_by_phase"]) >= {"data", "compute", "val", "ckpt"}


def test_train_profile_flag_prints_and_writes_the_split(tmp_path):
    from typer.testing import CliRunner

    from toothseg.cli import app

    run, _ = make_run(tmp_path, n=8, overrides=["train.batch_size=2", "train.augment=none", "train.threads=1",
                                                "train.hard_fraction=0"])
    res = CliRunner().invoke(app, ["train", str(run), "--fold", "0", "--profile", "--max-time", "00:00:30"])
    assert res.exit_code == 0, res.output
    assert "steps/min" in res.output and "images/s" in res.output and "budget:" in res.output
    prof = json.loads(next((run / "train").glob("*/fold0/profile.json")).read_text())
    assert prof["steps"] > 0 and prof["precision"] and prof["budget"]["used_s"] <= 30 + 5
