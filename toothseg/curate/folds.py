"""Group-aware, stratified K-fold: copies of one image never straddle train and validation."""

from __future__ import annotations

import re
import warnings
from collections import Counter

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from toothseg.errors import ToothsegError


def area_bins(fractions: list[float], n_bins: int) -> list[int]:
    """Quantile bin (1..n_bins) of each non-empty mask's tooth fraction; 0 for empty masks."""
    frac = np.asarray(fractions, dtype=float)
    out = np.zeros(len(frac), dtype=int)
    nz = frac > 0
    if nz.sum() and n_bins > 1:
        edges = np.quantile(frac[nz], np.linspace(0, 1, n_bins + 1)[1:-1])
        out[nz] = np.searchsorted(edges, frac[nz], side="right") + 1
    else:
        out[nz] = 1
    return out.tolist()


def strata(sources: list[str], fractions: list[float], n_bins: int, n_folds: int) -> list[str]:
    """Composite label source x empty x area-bin per item.

    A stratum too small to put one item in every fold is coarsened for its own items only (area bin -> teeth/empty
    -> source -> one shared 'rare' bucket), so one rare combination does not cost everyone their stratification.
    """
    bins = area_bins(fractions, n_bins)
    levels = [
        [f"{s}|{'empty' if b == 0 else f'area{b}'}" for s, b in zip(sources, bins)],
        [f"{s}|{'empty' if b == 0 else 'teeth'}" for s, b in zip(sources, bins)],
        list(sources),
        ["rare"] * len(sources),
    ]
    labels = list(levels[0])
    for coarser in levels[1:]:
        counts = Counter(labels)
        labels = [lab if counts[lab] >= n_folds else c for lab, c in zip(labels, coarser)]
    return labels


def make_folds(keys: list[str], groups: list[str], sources: list[str], fractions: list[float], n_folds: int = 5,
               n_bins: int = 3, seed: int = 42) -> dict[str, dict[str, list[str]]]:
    """{"0": {"train": [...], "val": [...]}, ...}; raises if the data cannot fill n_folds or a group straddles."""
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise ToothsegError(f"only {n_groups} independent labelled images (after grouping copies) for {n_folds} "
                            f"folds; add labelled data or lower --folds to at most {max(n_groups, 2)}")
    y = strata(sources, fractions, n_bins, n_folds)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds: dict[str, dict[str, list[str]]] = {}
    idx = np.arange(len(keys))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" after coarsening: expected
        for k, (tr, va) in enumerate(cv.split(idx, y, groups)):
            folds[str(k)] = {"train": sorted(keys[i] for i in tr), "val": sorted(keys[i] for i in va)}
    check_folds(folds, dict(zip(keys, groups)))
    return folds


def check_folds(folds: dict[str, dict[str, list[str]]], group_of: dict[str, str]) -> None:
    """The invariant: each key is validated exactly once, and all members of a group share every split."""
    seen: Counter[str] = Counter()
    for name, f in folds.items():
        tr, va = set(f["train"]), set(f["val"])
        if tr & va:
            raise ToothsegError(f"fold {name}: {sorted(tr & va)[:3]} in both train and val (internal error)")
        val_groups = {group_of[k] for k in va}
        leak = [k for k in tr if group_of[k] in val_groups]
        if leak:
            raise ToothsegError(f"fold {name}: group of {leak[0]} straddles train and val (internal error)")
        seen.update(va)
    bad = [k for k in group_of if seen[k] != 1]
    if bad:
        raise ToothsegError(f"{bad[0]} is validated {seen[bad[0]]} times, not once (internal error)")


def case_name(key: str) -> str:
    """nnU-Net case name of a key: ``source__image_id`` (also the names toothseg.data.nnunet_export writes)."""
    source, image_id = key.split("/", 1)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{source}__{image_id}")


def nnunet_splits(folds: dict[str, dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    """nnU-Net v2 splits_final.json: a list of {"train", "val"} with ``source__image_id`` case names."""
    return [{part: [case_name(k) for k in folds[str(i)][part]] for part in ("train", "val")} for i in range(len(folds))]
