"""Confidence scores: orientation (higher = more trustworthy), edge cases, and ranking against true Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toothseg.pseudo.confidence import SCORES, confidence_scores, rank_quality


def blob(shift: int = 0, size: int = 20) -> np.ndarray:
    p = np.zeros((48, 64), np.float32)
    p[10:10 + size, 10 + shift:10 + shift + size] = 1.0
    return p


def test_identical_confident_members_score_one() -> None:
    s = confidence_scores(np.stack([blob(), blob(), blob()]))
    assert set(s) == set(SCORES)
    assert s["agreement"] == pytest.approx(1.0)
    assert s["entropy"] == pytest.approx(1.0, abs=1e-3)
    assert s["band"] == pytest.approx(1.0)
    assert s["spread"] == pytest.approx(1.0)


def test_disagreeing_members_score_lower_on_every_score() -> None:
    good = confidence_scores(np.stack([blob(), blob(1), blob()]))
    bad = confidence_scores(np.stack([blob(), blob(12), blob(-8)]))
    for name in SCORES:
        assert bad[name] < good[name], name


def test_soft_uncertain_map_has_low_entropy_score() -> None:
    sure = blob()
    unsure = 0.5 + 0.1 * (blob() - 0.5)  # 0.45 / 0.55 everywhere
    s_sure = confidence_scores(np.stack([sure, sure]))
    s_unsure = confidence_scores(np.stack([unsure, unsure]))
    assert s_unsure["entropy"] < 0.1 < s_sure["entropy"]
    assert s_unsure["band"] == 0.0


def test_empty_prediction_is_confident_and_single_member_has_no_agreement() -> None:
    empty = np.zeros((1, 16, 16), np.float32)
    s = confidence_scores(empty)
    assert math.isnan(s["agreement"]) and math.isnan(s["spread"])
    assert s["entropy"] == 1.0 and s["band"] == 1.0


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError):
        confidence_scores(np.zeros((2, 8, 8)), fused=np.zeros((4, 4)))
    with pytest.raises(ValueError):
        confidence_scores(np.zeros((0, 8, 8)))


def test_rank_quality_finds_the_informative_score() -> None:
    rng = np.random.default_rng(0)
    truth = {f"k/{i}": float(d) for i, d in enumerate(rng.uniform(0.5, 1.0, 30))}
    scores = {k: {"good": d + rng.normal(0, 0.01), "noise": float(rng.uniform()), "flat": 1.0}
              for k, d in truth.items()}
    rho = rank_quality(scores, truth)
    assert rho["good"] > 0.9
    assert abs(rho["noise"]) < 0.5
    assert math.isnan(rho["flat"])
    with pytest.raises(ValueError):
        rank_quality({"a": {"x": 1.0}}, {"a": 1.0})
