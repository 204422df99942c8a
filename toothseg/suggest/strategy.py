"""How `suggest` turns scored candidates into picks: ``spread`` (default), ``typical`` or ``uncertain``.

``spread`` (`toothseg.suggest.spread`) draws picks with probability proportional to uncertainty x squared distance
from the labels and earlier picks; it is the default because it did best of the three against random picks on
bench/active_learning.py's held-out pool sample. ``typical`` (`toothseg.suggest.typical`, TypiClust) takes one
typical image from each of the largest regions of feature space no label covers. ``uncertain`` runs k-center
greedy over the ``oversample x n`` most uncertain candidates (`toothseg.suggest.diversity`). All see one image per
duplicate group, and all give the pick's feature distance to the nearest labelled image or earlier pick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from toothseg.errors import ConfigError
from toothseg.suggest.diversity import k_center_greedy
from toothseg.suggest.spread import select_spread
from toothseg.suggest.typical import TypicalPick, normalise, select_typical

STRATEGIES = ("spread", "typical", "uncertain")
DEFAULT = "spread"


@dataclass(frozen=True)
class Pick:
    """One suggested image: its key, its uncertainty rank among all candidates, a distance and a why."""

    key: str
    uncertainty_rank: int
    distance: float | None
    reason: str


def check_strategy(name: str) -> str:
    """The strategy's canonical name, or a one-line ConfigError naming the choices."""
    s = str(name).strip().lower()
    if s not in STRATEGIES:
        raise ConfigError(f"--strategy {name!r}: unknown; choose one of {', '.join(STRATEGIES)}")
    return s


def _scores_text(rank: int, n_cand: int, rec: dict) -> str:
    return (f"uncertainty #{rank} of {n_cand} (members x views disagree {rec['disagreement']:.3f}, "
            f"entropy {rec['entropy']:.3f})")


def _uncertain_reason(rank: int, n_cand: int, rec: dict, dist: float, has_centres: bool) -> str:
    if np.isfinite(dist):
        near = "labelled image or earlier pick" if has_centres else "earlier pick"
        return f"{_scores_text(rank, n_cand, rec)}; feature distance {dist:.3f} to the nearest {near}"
    return f"{_scores_text(rank, n_cand, rec)}; the most uncertain candidate"


def _typical_reason(rank: int, n_cand: int, rec: dict, p: TypicalPick) -> str:
    covered = f"{p.cluster_labelled} labelled" if p.cluster_labelled else "no labelled image"
    return (f"cluster of {p.cluster_size} ({covered}): typicality #{p.typicality_rank} and uncertainty "
            f"#{p.uncertainty_rank} of its {p.cluster_candidates} candidates; "
            f"overall {_scores_text(rank, n_cand, rec)}")


def nearest_distances(features: np.ndarray, order: Sequence[int], centres: np.ndarray | None) -> list[float | None]:
    """For each row of ``order`` in turn: distance to the nearest ``centres`` row or earlier row (None for none)."""
    f = normalise(features)
    ref = list(normalise(centres)) if centres is not None and len(centres) else []
    out: list[float | None] = []
    for i in order:
        out.append(float(np.min(np.linalg.norm(np.asarray(ref) - f[i], axis=1))) if ref else None)
        ref.append(f[i])
    return out


def pick_uncertain(keys: list[str], recs: dict[str, dict], n: int, centres: np.ndarray | None,
                   oversample: float) -> list[Pick]:
    """k-center greedy over the ``oversample x n`` most uncertain of ``keys`` (sorted most uncertain first)."""
    cand = keys[:min(len(keys), max(n, int(round(oversample * n))))]
    idx, dists = k_center_greedy(np.stack([recs[k]["features"] for k in cand]), n, first=0, centres=centres)
    return [Pick(cand[j], j + 1, d if np.isfinite(d) else None,
                 _uncertain_reason(j + 1, len(keys), recs[cand[j]], d, centres is not None))
            for j, d in zip(idx, dists)]


def pick_typical(keys: list[str], recs: dict[str, dict], n: int, centres: np.ndarray | None,
                 seed: int) -> list[Pick]:
    """TypiClust over all of ``keys`` (sorted most uncertain first), the labelled ``centres`` as covered points."""
    feats = np.stack([recs[k]["features"] for k in keys])
    picks = select_typical(feats, np.array([recs[k]["score"] for k in keys]), n, centres, seed)
    dists = nearest_distances(feats, [p.index for p in picks], centres)
    return [Pick(keys[p.index], p.index + 1, d, _typical_reason(p.index + 1, len(keys), recs[keys[p.index]], p))
            for p, d in zip(picks, dists)]


def pick_spread(keys: list[str], recs: dict[str, dict], n: int, centres: np.ndarray | None,
                seed: int) -> list[Pick]:
    """Uncertainty-weighted k-means++ draws over all of ``keys`` (sorted most uncertain first), the labelled
    ``centres`` counting as drawn."""
    feats = np.stack([recs[k]["features"] for k in keys])
    picks = select_spread(feats, np.array([recs[k]["score"] for k in keys]), n, centres, seed)
    near = "labelled image or earlier pick" if centres is not None and len(centres) else "earlier pick"
    return [Pick(keys[p.index], p.index + 1, p.distance,
                 f"drawn with probability {p.probability:.3f} (uncertainty x squared feature distance"
                 + (f" {p.distance:.3f} to the nearest {near})" if p.distance is not None else " alone: the first)")
                 + f"; {_scores_text(p.index + 1, len(keys), recs[keys[p.index]])}")
            for p in picks]


def pick(strategy: str, keys: list[str], recs: dict[str, dict], n: int, centres: np.ndarray | None,
         oversample: float, seed: int) -> list[Pick]:
    """Up to ``n`` picks from ``keys`` (one per duplicate group, most uncertain first) by ``strategy``."""
    s = check_strategy(strategy)
    if s == "typical":
        return pick_typical(keys, recs, n, centres, seed)
    if s == "spread":
        return pick_spread(keys, recs, n, centres, seed)
    return pick_uncertain(keys, recs, n, centres, oversample)
