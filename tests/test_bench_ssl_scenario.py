"""bench/ssl_ablation.py's label-hiding: fractions per fold, whole duplicate groups, and a fully labelled test fold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "ssl_ablation", Path(__file__).resolve().parents[1] / "bench" / "ssl_ablation.py")
ssl_ablation = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ssl_ablation)


@pytest.fixture()
def folds() -> tuple[dict, dict]:
    folds = {str(k): {"val": [f"s/{k}_{i}" for i in range(40)], "train": []} for k in range(3)}
    for k in folds:
        folds[k]["train"] = [x for j in folds if j != k for x in folds[j]["val"]]
    # a duplicate pair in fold 1: kept or hidden together
    curation = {"s/1_0": {"group": 7}, "s/1_1": {"group": 7}}
    return folds, curation


def test_fraction_is_taken_per_fold_and_groups_stay_whole(folds: tuple[dict, dict]) -> None:
    f, cur = folds
    kept = ssl_ablation.keep_fraction(f, cur, 0.25, seed=0)
    for k in f:
        n = sum(x in kept for x in f[k]["val"])
        assert 10 <= n <= 11, (k, n)
    assert ("s/1_0" in kept) == ("s/1_1" in kept)


def test_full_val_fold_keeps_every_validation_label(folds: tuple[dict, dict]) -> None:
    f, cur = folds
    kept = ssl_ablation.keep_fraction(f, cur, 0.25, seed=0, full_val=0)
    assert set(f["0"]["val"]) <= kept
    train_kept = [x for x in f["0"]["train"] if x in kept]
    assert 20 <= len(train_kept) <= 22  # 25 % of fold 0's 80 training images
    assert kept != ssl_ablation.keep_fraction(f, cur, 0.25, seed=0, full_val=1)
