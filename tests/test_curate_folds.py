"""Group-aware stratified folds: no group straddles folds, every key is validated once, strata are balanced."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from toothseg.curate.folds import area_bins, case_name, check_folds, make_folds, nnunet_splits, strata
from toothseg.errors import ToothsegError


def dataset(n: int = 60, seed: int = 0) -> tuple[list[str], list[str], list[str], list[float]]:
    rng = np.random.default_rng(seed)
    keys = [f"{'a' if i % 3 else 'b'}/{i:03d}" for i in range(n)]
    sources = [k.split("/")[0] for k in keys]
    fractions = [0.0 if i % 10 == 0 else float(rng.uniform(0.05, 0.25)) for i in range(n)]
    groups = [f"g{i // 3}" if i < 18 else k for i, k in enumerate(keys)]  # six groups of three copies
    return keys, groups, sources, fractions


def test_no_group_straddles_and_each_key_validated_once() -> None:
    keys, groups, sources, fractions = dataset()
    folds = make_folds(keys, groups, sources, fractions, n_folds=5, seed=1)
    assert list(folds) == ["0", "1", "2", "3", "4"]
    group_of = dict(zip(keys, groups))
    for f in folds.values():
        assert set(f["train"]).isdisjoint(f["val"]) and len(f["train"]) + len(f["val"]) == len(keys)
        val_groups = {group_of[k] for k in f["val"]}
        assert not any(group_of[k] in val_groups for k in f["train"])
    assert Counter(k for f in folds.values() for k in f["val"]) == Counter(keys)


def test_folds_are_stratified_and_deterministic() -> None:
    keys, groups, sources, fractions = dataset(100)
    folds = make_folds(keys, groups, sources, fractions, n_folds=5, seed=7)
    assert folds == make_folds(keys, groups, sources, fractions, n_folds=5, seed=7)
    for f in folds.values():
        val_sources = Counter(k.split("/")[0] for k in f["val"])
        assert val_sources["a"] > 0 and val_sources["b"] > 0
        assert any(fractions[keys.index(k)] == 0 for k in f["val"])  # empty masks spread over folds


def test_too_few_groups_is_a_clear_error() -> None:
    keys = ["a/1", "a/2", "a/3"]
    with pytest.raises(ToothsegError, match="lower --folds"):
        make_folds(keys, ["g", "g", "a/3"], ["a"] * 3, [0.1] * 3, n_folds=5)


def test_check_folds_catches_a_leak() -> None:
    folds = {"0": {"train": ["a/1"], "val": ["a/2"]}, "1": {"train": ["a/2"], "val": ["a/1"]}}
    with pytest.raises(ToothsegError, match="straddles"):
        check_folds(folds, {"a/1": "g", "a/2": "g"})
    check_folds(folds, {"a/1": "a/1", "a/2": "a/2"})


def test_strata_coarsen_when_rare() -> None:
    assert area_bins([0.0, 0.1, 0.2, 0.3], 3) == [0, 1, 2, 3]
    labels = strata(["a"] * 6 + ["b"] * 2, [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.0, 0.1], n_bins=3, n_folds=2)
    assert Counter(labels)["b"] == 2  # b's strata are too small to fill 2 folds: fall back to source


def test_nnunet_splits_use_case_names() -> None:
    folds = {"0": {"train": ["tufts/1", "ufba/cate 1"], "val": ["tufts/2"]}}
    assert nnunet_splits(folds) == [{"train": ["tufts__1", "ufba__cate_1"], "val": ["tufts__2"]}]
    try:
        from toothseg.data.nnunet_export import case_name as export_name
    except ImportError:
        return
    assert case_name("ufba/cate 1-0 x") == export_name("ufba/cate 1-0 x")
