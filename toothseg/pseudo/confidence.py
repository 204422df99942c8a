"""Per-image confidence of a teacher ensemble's pseudo-label, computed from its member probabilities.

Every score is oriented "higher = more trustworthy" and lies in [0, 1], so selection (`select.py`) treats them alike.
Which one predicts the true quality of a pseudo-label best is measured, not assumed: `rank_quality` gives the
Spearman correlation of each score with the true Dice on images whose labels the teachers never saw
(docs/semi-supervision.md records the measurement behind the default).
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Mapping, Sequence

import numpy as np

from toothseg.evaluate.metrics import dice

_EPS = 1e-6


def agreement(members: np.ndarray, fused: np.ndarray, threshold: float = 0.5) -> float:
    """Mean pairwise Dice of the members' binary masks: members that disagree mark an unreliable image.

    With a single member there is nothing to compare, so the score is NaN (never selected by a threshold).
    """
    masks = [m > threshold for m in members]
    if len(masks) < 2:
        return float("nan")
    return float(np.mean([dice(a, b) for a, b in combinations(masks, 2)]))


def _region(members: np.ndarray, fused: np.ndarray, threshold: float) -> np.ndarray:
    # Where any member or the fused map sees tooth: the far background is trivially certain and would dilute
    # every image's score towards 1 in proportion to its background area.
    return (fused > threshold) | (members > threshold).any(axis=0)


def entropy(members: np.ndarray, fused: np.ndarray, threshold: float = 0.5) -> float:
    """1 - mean binary entropy (bits) of the fused probability over the predicted tooth region."""
    region = _region(members, fused, threshold)
    if not region.any():
        return 1.0
    p = np.clip(fused[region].astype(np.float64), _EPS, 1 - _EPS)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return float(1.0 - h.mean())


def band(members: np.ndarray, fused: np.ndarray, threshold: float = 0.5, lo: float = 0.1, hi: float = 0.9) -> float:
    """1 - (pixels with fused probability inside (lo, hi)) / (predicted tooth pixels): the uncertain-margin share."""
    unsure = int(((fused > lo) & (fused < hi)).sum())
    area = int((fused > threshold).sum())
    if area == 0:
        return 1.0 if unsure == 0 else 0.0
    return float(max(0.0, 1.0 - unsure / area))


def spread(members: np.ndarray, fused: np.ndarray, threshold: float = 0.5) -> float:
    """1 - 2 x mean member standard deviation over the predicted tooth region (soft disagreement)."""
    if len(members) < 2:
        return float("nan")
    region = _region(members, fused, threshold)
    if not region.any():
        return 1.0
    return float(1.0 - 2.0 * members.std(axis=0)[region].mean())


SCORES: dict[str, Callable[..., float]] = {"agreement": agreement, "entropy": entropy, "band": band, "spread": spread}


def confidence_scores(members: np.ndarray | Sequence[np.ndarray], fused: np.ndarray | None = None,
                      threshold: float = 0.5) -> dict[str, float]:
    """All confidence scores of one image. ``members``: (M, H, W) probabilities; ``fused`` defaults to their mean."""
    m = np.asarray(members, dtype=np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] == 0:
        raise ValueError(f"members must be (M, H, W) probabilities, got shape {m.shape}")
    f = m.mean(axis=0) if fused is None else np.asarray(fused, dtype=np.float32)
    if f.shape != m.shape[1:]:
        raise ValueError(f"fused map {f.shape} does not match members {m.shape[1:]}")
    return {name: fn(m, f, threshold) for name, fn in SCORES.items()}


def rank_quality(scores: Mapping[str, Mapping[str, float]], true_dice: Mapping[str, float]) -> dict[str, float]:
    """Spearman correlation of each confidence score with the true pseudo-label Dice, over the shared keys.

    ``scores``: {key: {score name: value}}; ``true_dice``: {key: Dice of the hard pseudo-label vs the real mask}.
    """
    from scipy.stats import spearmanr

    keys = sorted(set(scores) & set(true_dice))
    if len(keys) < 3:
        raise ValueError(f"need at least 3 images with both a score and a true Dice, got {len(keys)}")
    names = sorted({n for k in keys for n in scores[k]})
    out: dict[str, float] = {}
    truth = np.array([true_dice[k] for k in keys], dtype=np.float64)
    for n in names:
        vals = np.array([scores[k].get(n, np.nan) for k in keys], dtype=np.float64)
        ok = np.isfinite(vals) & np.isfinite(truth)
        if ok.sum() < 3 or np.ptp(vals[ok]) == 0 or np.ptp(truth[ok]) == 0:
            out[n] = float("nan")
            continue
        out[n] = float(spearmanr(vals[ok], truth[ok]).statistic)
    return out
