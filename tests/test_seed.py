"""One seed drives everything: folds, network init, data order and augmentation (tiny data, one step, 1 thread)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from helpers.fakerun import make_dataset, make_run
from toothseg.config import build_config
from toothseg.errors import ConfigError


class _FirstStep(L.Callback):
    """The first step's loss and the weights after training."""

    def __init__(self) -> None:
        self.loss: float | None = None
        self.weights: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.loss is None:
            self.loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)

    def on_train_end(self, trainer, module) -> None:
        self.weights = {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def _train(root: Path, seed: int) -> _FirstStep:
    from toothseg.config import load_config
    from toothseg.run.folder import open_run
    from toothseg.train.kfold import labelled_items, split_items
    from toothseg.train.fit import fit_model

    run, _ = make_run(root, n=4, overrides=["train.max_steps=1", "train.threads=1", f"seed={seed}"])
    rd = open_run(run)
    cfg = load_config(rd.config)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    probe = _FirstStep()
    fit_model(cfg, train, val, run / "f", callbacks=[probe])
    return probe


def test_set_seed_drives_training(tmp_path: Path) -> None:
    a, again, other = _train(tmp_path / "a", 1), _train(tmp_path / "again", 1), _train(tmp_path / "other", 2)
    assert a.loss is not None and a.loss == again.loss
    assert all(torch.equal(a.weights[k], again.weights[k]) for k in a.weights)
    assert any(not torch.equal(a.weights[k], other.weights[k]) for k in a.weights)


def test_same_seed_same_folds(tmp_path: Path) -> None:
    from toothseg.curate.prepare import prepare

    data = make_dataset(tmp_path / "data", n=10)
    sets = ["seed=5", "curate.n_folds=2"]
    prepare([data], tmp_path / "r1", preset="tiny", overrides=sets)
    prepare([data], tmp_path / "r2", preset="tiny", overrides=sets)
    assert json.loads((tmp_path / "r1" / "folds.json").read_text()) == \
        json.loads((tmp_path / "r2" / "folds.json").read_text())


def test_old_train_seed_becomes_the_seed() -> None:
    assert build_config("tiny", overrides=["train.seed=7"]).seed == 7
    with pytest.raises(ConfigError, match="train.seed"):
        build_config("tiny", overrides=["seed=3", "train.seed=7"])
