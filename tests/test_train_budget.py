"""A wall-clock budget ends training on time with the cosine schedule sized to it."""

from __future__ import annotations

import pytest

import toothseg.train.budget as budget
from helpers.fakerun import make_run
from helpers.probes import FinalState
from toothseg.config import load_config
from toothseg.run.folder import open_run
from toothseg.train.kfold import labelled_items, split_items
from toothseg.train.fit import fit_model


@pytest.mark.slow  # 20 s of training by construction, plus start-up
def test_time_budget_stops_early_and_decays_the_learning_rate(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "PROBE_STEPS", 2)  # estimate after 2 steps (4 per epoch here)
    run, _ = make_run(tmp_path, n=16, overrides=["train.batch_size=2", "train.augment=none", "train.lr=0.001"])
    rd = open_run(run)
    cfg = load_config(rd.config)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    final = FinalState()
    res = fit_model(cfg, train, val, run / "f", max_time="00:00:20", epochs=1000, callbacks=[final])
    assert 0 <= res.epochs < 1000 and res.best_ckpt.is_file()
    assert final.total_steps < 1000 * 4  # sized to the budget, not to 1000 epochs
    assert final.last_lr < 0.001  # and run down from its peak
