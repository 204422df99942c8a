"""Duplicate groups: union-find over every pair closer than the threshold (copies of copies join one group)."""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import DisjointSet


def group_pairs(distances: np.ndarray, threshold: int) -> list[list[int]]:
    """Groups (index lists, size >= 2) of items linked by distance <= threshold, ordered by their first member."""
    n = len(distances)
    ds = DisjointSet(range(n))
    ii, jj = np.nonzero(np.triu(distances <= threshold, k=1))
    for i, j in zip(ii.tolist(), jj.tolist()):
        ds.merge(i, j)
    groups = [sorted(s) for s in ds.subsets() if len(s) > 1]
    return sorted(groups, key=lambda g: g[0])


def nearest_in_group(distances: np.ndarray, group: list[int]) -> dict[int, int]:
    """Each member's distance to its closest other member: the evidence that put it in the group."""
    sub = distances[np.ix_(group, group)].astype(np.int64)
    np.fill_diagonal(sub, np.iinfo(np.int64).max)
    return {m: int(sub[k].min()) for k, m in enumerate(group)}
