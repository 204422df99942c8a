"""Hard-sample mining (the recipe's step 7): oversample the samples the models find hardest.

A fold's own validation scores cannot steer that fold's training (that would leak its validation set into model
selection), so hardness comes from the out-of-fold pass over *all* folds: every labelled sample then has one score
from the model that did not train on it. For fold k, the hard samples inside fold k's training set are repeated
``hard_repeat`` extra times and fold k's best model is fine-tuned briefly on that set (see `engine.train`).
"""

from __future__ import annotations

import math

from toothseg.train.dataset import TrainItem


def hard_keys(oof_rows: list[dict], fraction: float) -> list[str]:
    """Keys of the lowest-Dice ``fraction`` of samples (ties broken by larger HD95), at least one if any."""
    if fraction <= 0 or not oof_rows:
        return []
    ranked = sorted(oof_rows, key=lambda r: (r["dice"], -r["hd95"]))
    n = max(1, math.ceil(fraction * len(ranked)))
    return [r["key"] for r in ranked[:n]]


def oversample(items: list[TrainItem], hard: set[str] | list[str], repeat: int) -> list[TrainItem]:
    """``items`` plus ``repeat`` extra copies of each item whose key is in ``hard``."""
    hard = set(hard)
    extra = [it for it in items if it.key in hard] * max(0, repeat)
    return list(items) + extra
