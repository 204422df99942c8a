"""Typical, diverse picks for small label budgets (TypiClust: Hacohen, Dekel & Weinshall, "Active learning on a
budget", ICML 2022).

With few labels the model is poor, so its uncertainty mostly points at atypical X-rays (odd exposure, implants,
unusual anatomy), and farthest-point selection (k-center greedy) seeks out the same outliers: the "cold start"
problem. A label teaches more when the image stands for many others. So:

1. Features are L2-normalised, so Euclidean distance ranks images like cosine similarity does.
2. Labelled images and candidates together are clustered with k-means into K = labelled + n clusters (at most one
   per point), seeded, so every pick can get a region of feature space of its own.
3. Clusters are visited by their share of labelled images, lowest first, and by size, largest first: the largest
   regions no label covers come first. Each visited cluster gives ONE pick; only when every cluster with
   candidates has given one does a second round start (a pool smaller than the request).
4. Within a cluster, typicality is the inverse mean distance to its k nearest neighbours in the cluster
   (k = min(20, size // 2)): density, as in TypiClust. Among the most typical half of the cluster's candidates,
   the most uncertain one is picked, so uncertainty breaks ties between typical images but never buys an outlier.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

KNN = 20


@dataclass(frozen=True)
class TypicalPick:
    """One pick: its candidate row, its cluster's size and labelled count, and its ranks within the cluster."""

    index: int
    cluster_size: int
    cluster_labelled: int
    cluster_candidates: int
    typicality_rank: int  # 1 = the cluster's most typical candidate
    uncertainty_rank: int  # 1 = the cluster's most uncertain candidate


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64; a zero row stays zero)."""
    f = np.asarray(features, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def cluster(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels of ``features`` (k capped by the number of rows); duplicate rows may leave fewer clusters."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    k = max(1, min(int(k), len(features)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than k: fine, clusters merge
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(features)


def typicality(features: np.ndarray, knn: int = KNN) -> np.ndarray:
    """Inverse mean distance of each row to its ``min(knn, rows // 2)`` nearest other rows; 1 for a lone row."""
    from sklearn.neighbors import NearestNeighbors

    k = min(int(knn), len(features) // 2)
    if k < 1:
        return np.ones(len(features))
    dist, _ = NearestNeighbors(n_neighbors=k).fit(features).kneighbors()  # excludes each row itself
    return 1.0 / (dist.mean(axis=1) + 1e-8)


def cluster_order(labels: np.ndarray, is_labelled: np.ndarray) -> list[int]:
    """Cluster ids that hold candidates: lowest labelled share first, then largest, then lowest id."""
    ids = [c for c in np.unique(labels) if np.any((labels == c) & ~is_labelled)]
    size = {c: int(np.sum(labels == c)) for c in ids}
    share = {c: np.sum((labels == c) & is_labelled) / size[c] for c in ids}
    return sorted(ids, key=lambda c: (share[c], -size[c], c))


def pick_in_cluster(typ: np.ndarray, scores: np.ndarray) -> tuple[int, int, int]:
    """Among the most typical half of a cluster's candidates, the most uncertain (ties: the more typical).

    Returns (position, typicality rank, uncertainty rank), both ranks among all of the cluster's candidates.
    """
    by_typ = np.argsort(-np.asarray(typ), kind="stable")
    half = by_typ[:math.ceil(len(by_typ) / 2)]
    best = int(half[np.argmax(scores[half])])
    return best, int(np.flatnonzero(by_typ == best)[0]) + 1, int(np.sum(scores > scores[best])) + 1


def select_typical(candidates: np.ndarray, scores: np.ndarray, n: int, labelled: np.ndarray | None = None,
                   seed: int = 0) -> list[TypicalPick]:
    """Up to ``n`` candidate rows, at most one per cluster per round (see the module docstring).

    ``candidates``: (N, D) features, one row per duplicate group; ``scores``: (N,) uncertainty, higher = more
    worth labelling; ``labelled``: (L, D) features of the labelled images, or None.
    """
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    cand = normalise(candidates)
    lab = normalise(labelled) if labelled is not None and len(labelled) else np.empty((0, cand.shape[1]))
    n = min(int(n), len(cand))
    if n <= 0:
        return []
    feats = np.concatenate([cand, lab])
    unc = np.concatenate([np.asarray(scores, dtype=np.float64), np.zeros(len(lab))])
    is_labelled = np.arange(len(feats)) >= len(cand)
    # One thread: the sets are small, and OpenMP threads spinning on a busy CPU turn milliseconds into seconds.
    with threadpool_limits(limits=1):
        labels = cluster(feats, len(lab) + n, seed)
        order = cluster_order(labels, is_labelled)
        members = {c: np.flatnonzero(labels == c) for c in order}
        typ = {c: typicality(feats[members[c]]) for c in order}
    picks: list[TypicalPick] = []
    taken: set[int] = set()
    while len(picks) < n:  # rounds of at most one pick per cluster; a second only when clusters run out
        for c in order:
            if len(picks) == n:
                break
            rows = members[c]
            free = [j for j, r in enumerate(rows) if not is_labelled[r] and r not in taken]
            if free:
                pos, t_rank, u_rank = pick_in_cluster(typ[c][free], unc[rows[free]])
                taken.add(int(rows[free[pos]]))
                picks.append(TypicalPick(int(rows[free[pos]]), len(rows), int(is_labelled[rows].sum()), len(free),
                                         t_rank, u_rank))
    return picks
