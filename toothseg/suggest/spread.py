"""Uncertainty-weighted k-means++ sampling: the ``spread`` strategy.

k-means++ seeding (Arthur & Vassilvitskii, 2007) draws each pick with probability proportional to its squared
distance from everything already chosen; BADGE (Ash et al., ICLR 2020) uses it for active learning because it keeps
both diversity and coverage. Here the draw is also weighted by the image's uncertainty, and images already labelled
count as chosen. k-center greedy always takes the farthest point (an outlier) and TypiClust only ever takes the
typical image of a large region, so either can skip a whole kind of X-ray (few teeth, heavy restorations); a draw
gives every image a chance that grows with its uncertainty and its distance from what is labelled or picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toothseg.suggest.diversity import squared_gap
from toothseg.suggest.typical import normalise

FLOOR = 0.05  # an image the model is sure of keeps some chance: its certainty may be wrong


@dataclass(frozen=True)
class SpreadPick:
    """One draw: its candidate row, its distance to the nearest label or earlier pick and its draw probability."""

    index: int
    distance: float | None
    probability: float


def select_spread(features: np.ndarray, uncertainty: np.ndarray, n: int, centres: np.ndarray | None,
                  seed: int) -> list[SpreadPick]:
    """``n`` rows of ``features`` drawn without replacement, each with probability proportional to
    ``max(uncertainty, FLOOR)`` x squared distance (unit-normalised features) to the nearest ``centres`` row or
    earlier draw. Without centres the first draw weighs uncertainty alone. Seeded: the same inputs give the same
    picks."""
    f = normalise(features)
    n = min(int(n), len(f))
    w = np.maximum(np.asarray(uncertainty, dtype=np.float64), FLOOR)
    rng = np.random.default_rng(seed)
    nearest = squared_gap(f, normalise(centres) if centres is not None and len(centres) else None)
    taken = np.zeros(len(f), dtype=bool)
    out: list[SpreadPick] = []
    for _ in range(n):
        gap = np.where(np.isfinite(nearest), nearest, 1.0)
        mass = np.where(taken, 0.0, w * gap)
        if mass.sum() <= 0:  # every candidate left is a copy of a chosen feature vector: fall back to uncertainty
            mass = np.where(taken, 0.0, w)
        p = mass / mass.sum()
        i = int(rng.choice(len(f), p=p))
        taken[i] = True
        out.append(SpreadPick(i, float(np.sqrt(nearest[i])) if np.isfinite(nearest[i]) else None, float(p[i])))
        nearest = np.minimum(nearest, ((f - f[i]) ** 2).sum(-1))
    return out
