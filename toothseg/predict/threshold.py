"""Choosing the decision threshold and the post-processing on out-of-fold (OOF) probabilities.

OOF maps are what the models predict on images they never trained on, so tuning on them estimates the gain on new
images honestly. Dice is per image, then averaged (the challenge convention); an image whose mask and ground truth are
both empty scores 1, one empty and the other not scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from toothseg.evaluate.metrics import dice
from toothseg.predict.postprocess import fill_holes

DEFAULT_GRID = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.01), 3))
MIN_COMPONENT_GRID = (0, 16, 32, 64, 128, 256, 512, 1024, 2048)  # pixels at the image's original resolution
MIN_GAIN = 1e-4  # a choice must beat the default by this much in mean Dice, otherwise the default is kept


def to_u8(prob: np.ndarray) -> np.ndarray:
    """Probability map -> uint8 (x255, rounded); uint8 input is returned as it is (OOF PNGs are stored so)."""
    if prob.dtype == np.uint8:
        return prob
    return np.clip(np.rint(prob.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def binarise(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground = probability strictly above the threshold (uint8 maps are read as value / 255)."""
    if prob.dtype == np.uint8:
        return prob > int(np.floor(threshold * 255.0 + 1e-9))
    return prob > threshold


def _dice_from_counts(tp: np.ndarray, pred: np.ndarray, gt: float) -> np.ndarray:
    denom = pred + gt
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)


def dice_curve(prob_u8: np.ndarray, gt: np.ndarray, grid: tuple[float, ...] = DEFAULT_GRID) -> np.ndarray:
    """Dice of one image at every threshold of ``grid``, from two 256-bin histograms (no re-thresholding)."""
    all_h = np.bincount(prob_u8.ravel(), minlength=256).astype(np.float64)
    pos_h = np.bincount(prob_u8[gt].ravel(), minlength=256).astype(np.float64)
    # counts of pixels with value > v, for v = 0..255
    all_above = all_h[::-1].cumsum()[::-1] - all_h
    pos_above = pos_h[::-1].cumsum()[::-1] - pos_h
    idx = np.array([int(np.floor(t * 255.0 + 1e-9)) for t in grid])
    return _dice_from_counts(pos_above[idx], all_above[idx], float(gt.sum()))


def pick_threshold(grid: tuple[float, ...], mean_dice: np.ndarray, default: float = 0.5) -> float:
    """The best threshold; ties (within MIN_GAIN) go to the one nearest ``default``, and ``default`` wins unless beaten
    by MIN_GAIN."""
    grid_a = np.asarray(grid, dtype=np.float64)
    i0 = int(np.argmin(np.abs(grid_a - default)))
    d_default = float(mean_dice[i0]) if abs(grid_a[i0] - default) < 1e-9 else -np.inf
    best = float(mean_dice.max())
    if best - d_default < MIN_GAIN:
        return default
    near = np.flatnonzero(mean_dice >= best - MIN_GAIN)
    return float(grid_a[near[np.argmin(np.abs(grid_a[near] - default))]])


@dataclass
class PostprocessChoice:
    min_component: int = 0
    fill_holes: bool = False
    table: list[dict] = field(default_factory=list)  # mean Dice of every candidate

    def as_dict(self) -> dict:
        return {"min_component": self.min_component, "fill_holes": self.fill_holes}


def _component_dice(mask: np.ndarray, gt: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Dice after removing components smaller than each of ``sizes`` (one labelling, then per-label counts)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    tp_lab = np.bincount(labels[gt], minlength=n).astype(np.float64)
    area[0] = tp_lab[0] = 0.0  # background label
    g = float(gt.sum())
    out = []
    for s in sizes:
        keep = area >= s
        out.append(_dice_from_counts(np.array(tp_lab[keep].sum()), np.array(area[keep].sum()), g))
    return np.array(out, dtype=np.float64).ravel()


def tune_postprocess(masks: list[np.ndarray], gts: list[np.ndarray],
                     sizes: tuple[int, ...] = MIN_COMPONENT_GRID) -> tuple[PostprocessChoice, float, float]:
    """Choose (fill_holes, min_component) maximising mean Dice of thresholded OOF masks.

    Returns the choice, the mean Dice without post-processing and with the choice. A step is kept only when it gains
    at least MIN_GAIN; among equal results the simpler candidate (no filling, smaller size) wins.
    """
    if 0 not in sizes:
        sizes = (0, *sizes)
    scores = np.zeros((2, len(sizes)))
    for m, g in zip(masks, gts):
        scores[0] += _component_dice(m, g, sizes)
        scores[1] += _component_dice(fill_holes(m), g, sizes)
    scores /= max(len(masks), 1)
    base = float(scores[0, sizes.index(0)])
    best_fill, best_i, best = 0, sizes.index(0), base
    for f in (0, 1):
        for i, s in enumerate(sizes):
            if scores[f, i] > best + MIN_GAIN:  # strictly better by MIN_GAIN than the current (simpler) pick
                best_fill, best_i, best = f, i, float(scores[f, i])
    table = [{"fill_holes": bool(f), "min_component": int(s), "dice": round(float(scores[f, i]), 6)}
             for f in (0, 1) for i, s in enumerate(sizes)]
    return PostprocessChoice(int(sizes[best_i]), bool(best_fill), table), base, best


def tune(probs: list[np.ndarray], gts: list[np.ndarray], grid: tuple[float, ...] = DEFAULT_GRID,
         default: float = 0.5) -> dict:
    """Tune threshold then post-processing on OOF probability maps; returns the choices and the Dice they gain."""
    if not probs:
        raise ValueError("no out-of-fold predictions to tune on")
    u8 = [to_u8(p) for p in probs]
    curves = np.stack([dice_curve(p, g, grid) for p, g in zip(u8, gts)])
    mean = curves.mean(axis=0)
    t = pick_threshold(grid, mean, default)
    masks = [binarise(p, t) for p in u8]
    choice, d_thr, d_post = tune_postprocess(masks, gts)
    d_default = float(np.mean([dice(binarise(p, default), g) for p, g in zip(u8, gts)]))
    return {
        "threshold": t,
        "postprocess": choice.as_dict(),
        "oof": {
            "n_images": len(probs),
            f"dice_at_{default}": round(d_default, 6),
            "dice_tuned_threshold": round(d_thr, 6),
            "dice_with_postprocess": round(d_post, 6),
            "gain_threshold": round(d_thr - d_default, 6),
            "gain_postprocess": round(d_post - d_thr, 6),
            "threshold_curve": [[float(a), round(float(b), 6)] for a, b in zip(grid, mean)],
            "postprocess_table": choice.table,
        },
    }
