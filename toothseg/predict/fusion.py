"""Weighted fusion of probability maps over folds, models and scales, and the choice of per-model weights.

Fusion averages probabilities (not logits, not masks): averaged probabilities are what the threshold is tuned on, and
they stay calibrated when members disagree. Each trained model family (tag) gets one weight, shared equally by its
folds, so a 5-fold model does not outvote a 1-fold one by count alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from toothseg.predict.threshold import DEFAULT_GRID, MIN_GAIN, dice_curve, to_u8


def fuse(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of same-shape probability maps (float in [0, 1], or uint8 = prob x 255); weights are
    renormalised to sum to 1."""
    if not probs:
        raise ValueError("nothing to fuse")
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(probs) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"bad fusion weights {list(w)} for {len(probs)} maps")
    w = w / w.sum()
    out = np.zeros(probs[0].shape, np.float32)
    for p, wi in zip(probs, w):
        if wi:
            scale = np.float32(wi / 255.0) if p.dtype == np.uint8 else np.float32(wi)
            out += scale * p.astype(np.float32, copy=False)
    return out


def simplex_grid(n: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """All weight vectors of ``n`` non-negative multiples of ``step`` summing to 1."""
    k = round(1 / step)
    return [tuple(c / k for c in combo) for combo in itertools.product(range(k + 1), repeat=n) if sum(combo) == k]


def tune_tag_weights(oof: dict[str, list[np.ndarray]], gts: list[np.ndarray], cv_dice: dict[str, float] | None = None,
                     step: float = 0.1, max_search_tags: int = 3) -> tuple[dict[str, float], dict]:
    """Per-tag fusion weights maximising mean OOF Dice at each candidate's best threshold.

    ``oof[tag][i]`` is tag's OOF probability for image i (all tags cover the same images, at original size). One tag
    gets weight 1. Up to ``max_search_tags`` tags: grid search over the simplex (plus equal and CV-Dice-proportional
    weights); beyond that the grid is too large and weights proportional to CV Dice are used.
    """
    tags = sorted(oof)
    if len(tags) == 1:
        return {tags[0]: 1.0}, {"method": "single"}
    candidates: list[tuple[float, ...]] = [tuple(1 / len(tags) for _ in tags)]
    if cv_dice and all(cv_dice.get(t) for t in tags):
        s = sum(cv_dice[t] for t in tags)
        candidates.append(tuple(cv_dice[t] / s for t in tags))
    if len(tags) > max_search_tags or not gts:
        w = candidates[-1]
        return dict(zip(tags, w)), {"method": "cv_dice" if len(candidates) > 1 else "equal"}
    candidates += simplex_grid(len(tags), step)
    scores = []
    for w in candidates:
        # scored at its own best threshold: the threshold is tuned after the weights, so fixing 0.5 here would
        # favour whichever mix happens to be calibrated at 0.5
        curves = [dice_curve(to_u8(fuse([oof[t][i] for t in tags], w)), g, DEFAULT_GRID) for i, g in enumerate(gts)]
        scores.append(float(np.mean(curves, axis=0).max()))
    best = int(np.argmax(scores))
    if scores[best] < scores[0] + MIN_GAIN:
        best = 0  # equal weights unless another mix is clearly better
    table = [{"weights": [round(x, 4) for x in w], "dice": round(s, 6)} for w, s in zip(candidates, scores)]
    return dict(zip(tags, candidates[best])), {"method": "oof-grid", "step": step, "table": table}
