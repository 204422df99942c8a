"""Choosing a spread-out batch: one image per duplicate group, then k-center greedy among the most uncertain.

k-center greedy (Sener & Savarese, 2018) repeatedly takes the candidate farthest from everything chosen or already
labelled, so fifty near-identical X-rays cannot all be suggested. It runs over the ``oversample x n`` most
uncertain candidates, so every pick is both uncertain and unlike the others: the ``uncertain`` strategy
(`toothseg.suggest.strategy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def one_per_group(keys: Sequence[str], scores: Mapping[str, float], groups: Mapping[str, int | None]
                  ) -> tuple[list[str], dict[str, str]]:
    """Keep the most uncertain key of each duplicate group; returns (kept, {dropped key: kept key})."""
    best: dict[int, str] = {}
    for k in keys:
        g = groups.get(k)
        if g is not None and (g not in best or scores[k] > scores[best[g]]):
            best[g] = k
    stands_for = {k: best.get(groups.get(k), k) for k in keys}  # ungrouped keys stand for themselves
    return [k for k in keys if stands_for[k] == k], {k: rep for k, rep in stands_for.items() if rep != k}


def squared_gap(features: np.ndarray, centres: np.ndarray | None) -> np.ndarray:
    """Each row's squared distance to its nearest ``centres`` row (inf for every row when there are none)."""
    f = np.asarray(features)
    if centres is None or not len(centres):
        return np.full(len(f), np.inf, dtype=f.dtype)
    c = np.asarray(centres, dtype=f.dtype)
    return np.min(((f[:, None, :] - c[None, :, :]) ** 2).sum(-1), axis=1)


def k_center_greedy(features: np.ndarray, n: int, first: int | None = None,
                    centres: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """Indices of ``n`` rows of ``features`` chosen by k-center greedy, and each pick's distance to the nearest
    earlier pick or ``centres`` row (inf for the first pick when there are no centres).

    ``first``: the row to start from when there are no centres (e.g. the most uncertain one).
    """
    f = np.asarray(features, dtype=np.float32)
    n = min(int(n), len(f))
    if n <= 0:
        return [], []
    nearest = squared_gap(f, centres)
    chosen: list[int] = []
    dists: list[float] = []
    for step in range(n):
        if step == 0 and not np.isfinite(nearest).any():
            i = int(first if first is not None else 0)
        else:
            cand = nearest.copy()
            cand[chosen] = -1.0
            i = int(np.argmax(cand))
        chosen.append(i)
        dists.append(float(np.sqrt(nearest[i])) if np.isfinite(nearest[i]) else float("inf"))
        nearest = np.minimum(nearest, ((f - f[i]) ** 2).sum(-1))
    return chosen, dists
