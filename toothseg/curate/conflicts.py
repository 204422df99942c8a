"""Label conflicts inside a duplicate group: pairwise agreement, which label is finer, and what each copy is used for.

"Finer" is measured, not guessed from file order: `fineness` is the outline length per unit of tooth area, both
taken in one common frame (512x256). Separating neighbouring teeth adds the interproximal outlines (more boundary);
a tighter outline removes the band of background a loose one includes (less area). Both raise the score; a coarse,
dilated or merged label lowers it. Its blind spot: an eroded (under-segmented) label also scores high. Noted in
docs/curation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import cv2
import numpy as np

from toothseg.curate.hashing import register, warp_to
from toothseg.data.layout import Sample
from toothseg.evaluate.metrics import dice

LABEL_W, LABEL_H = 512, 256
POLICIES = ("keep-finer", "keep-all-same-fold", "drop-all", "keep-first")


def label_frame(mask: np.ndarray) -> np.ndarray:
    """A bool mask resampled to the common 512x256 frame, so masks of copies at different sizes compare."""
    m = cv2.resize(mask.astype(np.float32), (LABEL_W, LABEL_H), interpolation=cv2.INTER_AREA)
    return m >= 0.5


def fineness(mask: np.ndarray) -> float:
    """Outline length (px) per tooth pixel in the common frame; 0 for an empty mask (the coarsest label)."""
    m = label_frame(mask).astype(np.uint8)
    area = int(m.sum())
    if area == 0:
        return 0.0
    contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return float(sum(cv2.arcLength(c, True) for c in contours)) / area


def n_components(mask: np.ndarray, min_area: int = 20) -> int:
    """Connected tooth regions of at least min_area px in the common frame (reported next to fineness)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(label_frame(mask).astype(np.uint8), connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] >= min_area).sum())


def copy_dice(mask_a: np.ndarray, thumb_a: np.ndarray, mask_b: np.ndarray, thumb_b: np.ndarray) -> float:
    """Dice of two copies' labels after registering copy b onto copy a (crops/rescales would otherwise misalign)."""
    fa = label_frame(mask_a)
    fb = label_frame(mask_b).astype(np.uint8)
    warp = register(thumb_a, thumb_b)
    if warp is not None:
        fb = warp_to(fb, warp, fa.shape, nearest=True)
    return dice(fa, fb.astype(bool))


@dataclass
class Loaded:
    """What curation needs of one readable sample (masks are re-read on demand for group members only)."""

    sample: Sample
    thumb: np.ndarray
    fraction: float | None  # tooth fraction of the mask; None = unlabelled


@dataclass
class Member:
    key: str
    labelled: bool
    order: int  # position in the input (source order on the command line, then file name): 'keep-first' uses it
    thumb: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class GroupDecision:
    dice: dict[tuple[str, str], float] = field(default_factory=dict)
    fineness: dict[str, float] = field(default_factory=dict)
    components: dict[str, int] = field(default_factory=dict)
    conflict: bool = False
    items: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {"use", "reason"}

    @property
    def min_dice(self) -> float | None:
        return min(self.dice.values()) if self.dice else None


def resolve(members: list[Member], policy: str = "keep-finer", conflict_dice: float = 0.95) -> GroupDecision:
    """Decide the use of every copy in one group: 'train', 'drop' or 'label-from:<key>'."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy '{policy}'; choose one of {', '.join(POLICIES)}")
    members = sorted(members, key=lambda m: m.order)
    lab = [m for m in members if m.labelled and m.mask is not None]
    unl = [m for m in members if not (m.labelled and m.mask is not None)]
    dec = GroupDecision()
    for m in lab:
        dec.fineness[m.key] = fineness(m.mask)
        dec.components[m.key] = n_components(m.mask)
    for a, b in combinations(lab, 2):
        dec.dice[(a.key, b.key)] = copy_dice(a.mask, a.thumb, b.mask, b.thumb)
    dec.conflict = dec.min_dice is not None and dec.min_dice < conflict_dice

    if not lab:
        first = unl[0]
        dec.items[first.key] = {"use": "train", "reason": "unlabelled; first of its copies"}
        for m in unl[1:]:
            dec.items[m.key] = {"use": "drop", "reason": f"unlabelled copy of {first.key}"}
        return dec

    finest = max(lab, key=lambda m: (round(dec.fineness[m.key], 6), -m.order))
    agree = "labels agree" if not dec.conflict else f"labels disagree (min Dice {dec.min_dice:.3f})"

    def f(m: Member) -> str:
        return f"fineness {dec.fineness[m.key]:.4f}"

    if policy == "drop-all" and dec.conflict:
        for m in lab:
            dec.items[m.key] = {"use": "drop", "reason": f"drop-all: {agree}"}
        for m in unl:
            dec.items[m.key] = {"use": "drop", "reason": "drop-all: unlabelled copy of conflicting labelled images"}
        return dec
    if policy == "keep-all-same-fold":
        for m in lab:
            dec.items[m.key] = {"use": "train", "reason": f"keep-all-same-fold: {agree}; {f(m)}"}
        source = finest
    else:
        source = lab[0] if policy == "keep-first" else finest
        why = "first in input order" if policy == "keep-first" else f"finest label ({f(source)})"
        if policy == "drop-all":
            why += "; drop-all keeps one copy when labels agree"
        dec.items[source.key] = {"use": "train", "reason": f"{policy}: {why}; {agree}"}
        for m in lab:
            if m is source:
                continue
            d = dec.dice.get((m.key, source.key), dec.dice.get((source.key, m.key)))
            dec.items[m.key] = {"use": "drop", "reason": f"{policy}: copy of {source.key} (Dice {d:.3f}, {f(m)})"}
    for m in unl:
        dec.items[m.key] = {"use": f"label-from:{source.key}", "reason": f"unlabelled copy of {source.key}"}
    return dec
