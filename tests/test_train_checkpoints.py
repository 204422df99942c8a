"""What a finished training folder keeps: best.ckpt with the weights only (the validated EMA average when training
averages), no resume state; ``--resume`` skips a finished folder and continues an interrupted one from last.ckpt."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

import toothseg.train.fit as fit
from helpers.fakerun import make_run
from helpers.probes import Crash, FirstStep, SeenWeights
from toothseg.config import load_config
from toothseg.models.checkpoint import WEIGHTS_KEYS, safe_load, save_weights_only
from toothseg.run.family import FoldDir
from toothseg.run.folder import open_run
from toothseg.train.kfold import labelled_items, split_items
from toothseg.train.restore import module_from_checkpoint


def _split(tmp_path: Path, overrides: tuple[str, ...] = ()):
    """8 images, 4 training ones in fold 0 at batch 2: 2 steps per epoch."""
    run, _ = make_run(tmp_path, n=8, overrides=["train.batch_size=2", "train.augment=none", "train.threads=1",
                                                 *overrides])
    rd = open_run(run)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    return run, load_config(rd.config), train, val


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _nbytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


class NoTraining(L.Callback):
    def on_fit_start(self, *args) -> None:
        raise AssertionError("a finished folder was trained again")


def test_weights_only_keeps_what_readers_need(tmp_path: Path) -> None:
    w = {"model.w": torch.ones(3)}
    full = {"state_dict": w, "hyper_parameters": {"scale": [64, 128]}, "global_step": 7,
            "toothseg_schedule": {"total_steps": 7, "warmup_steps": 0}, "optimizer_states": [{"state": {}}],
            "lr_schedulers": [{}], "callbacks": {}, "loops": {}, "current_model_state": {"model.w": torch.zeros(3)},
            "averaging_state": {"n_averaged": torch.tensor(7)}, "toothseg_ema": {"n_averaged": torch.tensor(7)}}
    torch.save(full, tmp_path / "best.ckpt")
    save_weights_only(tmp_path / "best.ckpt")
    slim = safe_load(tmp_path / "best.ckpt")
    assert set(slim) == {"state_dict", "hyper_parameters", "global_step", "toothseg_schedule"} <= set(WEIGHTS_KEYS)
    assert torch.equal(slim["state_dict"]["model.w"], w["model.w"])  # the average, not the raw weights
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]  # written through a temporary file, replaced


def test_fold_finish_records_the_fit_before_dropping_the_resume_state(tmp_path: Path) -> None:
    fd = FoldDir(tmp_path / "fold0")
    fd.path.mkdir()
    fd.last_ckpt.write_bytes(b"state")
    assert not fd.finished
    fd.finish({"global_step": 3})
    assert fd.finished and fd.read_fit() == {"global_step": 3} and not fd.last_ckpt.exists()


def test_finished_fit_keeps_only_the_validated_weights(tmp_path: Path) -> None:
    run, cfg, train, val = _split(tmp_path, ("train.epochs=1", "train.ema_decay=0.9"))  # 2 steps, 1 validation
    seen = SeenWeights()
    res = fit.fit_model(cfg, train, val, run / "f", callbacks=[seen])
    fd = FoldDir(run / "f")
    assert fd.finished and not fd.last_ckpt.exists()
    assert sorted(p.name for p in fd.path.rglob("*") if p.suffix in (".ckpt", ".pt")) == ["best.ckpt"]
    ck = safe_load(res.best_ckpt)
    assert set(ck) <= set(WEIGHTS_KEYS) and "optimizer_states" not in ck
    # the EMA average the validation scored, not the raw weights (ModelCheckpoint(save_weights_only) stores those)
    assert len(seen.validated) == 1 and _same(ck["state_dict"], seen.validated[0])
    assert not _same(ck["state_dict"], seen.raw[-1])
    assert res.best_ckpt.stat().st_size < 1.1 * _nbytes(ck["state_dict"])  # the weights once, nothing beside
    assert module_from_checkpoint(res.best_ckpt).hparams["scale"] == [64, 128]


def test_interrupted_fit_resumes_and_a_finished_one_is_skipped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fit, "CKPT_EVERY_STEPS", 1)
    run, cfg, train, val = _split(tmp_path, ("train.epochs=2",))  # 4 steps
    fd = FoldDir(run / "f")
    with pytest.raises(RuntimeError, match="killed"):
        fit.fit_model(cfg, train, val, fd.path, callbacks=[Crash(at_step=3)])
    state = safe_load(fd.last_ckpt)  # the full training state, for resuming
    assert not fd.finished and state["global_step"] == 2 and state["optimizer_states"]

    first = FirstStep()
    res = fit.fit_model(cfg, train, val, fd.path, resume=True, callbacks=[first])
    assert first.step == 2 and res.global_step == 4  # continued, not restarted
    assert fd.finished and not fd.last_ckpt.exists() and "optimizer_states" not in safe_load(fd.best_ckpt)

    best = fd.best_ckpt.read_bytes()
    torch.save({}, fd.last_ckpt)  # a kill between fit.json and the removal of last.ckpt
    again = fit.fit_model(cfg, train, val, fd.path, resume=True, callbacks=[NoTraining()])
    assert again.global_step == 4 and again.best_ckpt == fd.best_ckpt and fd.best_ckpt.read_bytes() == best
    assert not fd.last_ckpt.exists()
    assert json.loads(fd.fit_file.read_text())["best_ckpt"] == "best.ckpt"
