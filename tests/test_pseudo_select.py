"""Selection of pseudo-labelled images: topk, quantile, threshold, all; bad values name the config key."""

from __future__ import annotations

import math

import pytest

from toothseg.errors import ConfigError
from toothseg.pseudo.select import select

SCORES = {"a/1": 0.9, "a/2": 0.5, "a/3": 0.7, "b/1": float("nan"), "b/2": 0.7}


def kept(sel: dict[str, bool]) -> set[str]:
    return {k for k, v in sel.items() if v}


def test_topk_takes_best_and_breaks_ties_by_key() -> None:
    assert kept(select(SCORES, "topk", 2)) == {"a/1", "a/3"}
    assert kept(select(SCORES, "topk", 100)) == {"a/1", "a/2", "a/3", "b/2"}  # NaN never picked


def test_quantile_keeps_fraction_of_all_images() -> None:
    sel = select(SCORES, "quantile", 0.6)  # ceil(0.6 * 5) = 3
    assert kept(sel) == {"a/1", "a/3", "b/2"}
    assert set(sel) == set(SCORES)


def test_threshold_is_inclusive() -> None:
    assert kept(select(SCORES, "threshold", 0.7)) == {"a/1", "a/3", "b/2"}
    assert kept(select(SCORES, "threshold", 1.0)) == set()


def test_all_keeps_everything_even_nan() -> None:
    assert kept(select(SCORES, "all", 0)) == set(SCORES)


def test_empty_scores() -> None:
    assert select({}, "quantile", 0.5) == {}


@pytest.mark.parametrize("method,value", [("topk", 0), ("topk", 2.5), ("quantile", 0.0), ("quantile", 1.5),
                                          ("threshold", 2.0), ("best", 1)])
def test_bad_selection_names_the_key(method: str, value: float) -> None:
    with pytest.raises(ConfigError, match=r"pseudo\.select"):
        select(SCORES, method, value)


def test_selection_is_deterministic() -> None:
    many = {f"s/{i}": math.sin(i) for i in range(50)}
    assert select(many, "quantile", 0.3) == select(dict(reversed(list(many.items()))), "quantile", 0.3)
