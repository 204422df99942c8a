"""Per-image segmentation metrics for binary tooth masks: Dice, IoU, HD, HD95, NSD and the STS-style score.

Conventions (docs/metrics.md has the full text; tests/test_metrics.py checks them against MONAI):
  * boundary = mask XOR its binary erosion with a 3x3 cross, pixels outside the image counted as background
    (so a mask touching the image border has a boundary there), as ``monai.metrics.utils.get_mask_edges``;
  * distances are Euclidean, in pixels of the ground-truth image, from each boundary pixel of one mask to the
    nearest boundary pixel of the other;
  * HD = max over both directions; HD95 = max of the two directional 95th percentiles (linear interpolation),
    as ``monai.metrics.compute_hausdorff_distance(percentile=95)``;
  * NSD = share of both boundaries (pooled) within ``tolerance`` px of the other, as
    ``monai.metrics.compute_surface_dice`` (2 px: the STS-2024 convention);
  * empty masks: both empty -> Dice = IoU = NSD = 1, HD = HD95 = 0; exactly one empty -> Dice = IoU = NSD = 0,
    HD = HD95 = the image diagonal (edentulous patients are real, so these cases must score, never be NaN).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

METRICS = ("dice", "iou", "hd", "hd95", "nsd")
_CROSS = ndimage.generate_binary_structure(2, 1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks of one shape; two empty masks agree perfectly (edentulous images are real)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def diagonal(shape: tuple[int, ...]) -> float:
    """Image diagonal in pixels: the distance given to a wholly missed or wholly spurious mask."""
    return float(math.hypot(shape[0], shape[1]))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask (outside the image is background, so border-touching masks have an edge)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def _directed_distances(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Euclidean distance from every ``src`` boundary pixel to the nearest ``dst`` boundary pixel.

    The distance transform runs on the bounding box of both boundaries only: the nearest ``dst`` pixel of any
    ``src`` pixel lies inside that box, so the crop is exact and keeps 336x646 images at a few ms.
    """
    ys, xs = np.nonzero(src | dst)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s, d = src[y0:y1, x0:x1], dst[y0:y1, x0:x1]
    return ndimage.distance_transform_edt(~d)[s]


def mask_metrics(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0) -> dict[str, float]:
    """Dice, IoU, HD, HD95 (pixels) and NSD at ``tolerance`` px for one pair of same-sized 2-D masks."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be 2-D arrays of the same shape")
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "iou": 1.0, "hd": 0.0, "hd95": 0.0, "nsd": 1.0}
    if n_pred == 0 or n_gt == 0:
        diag = diagonal(gt.shape)
        return {"dice": 0.0, "iou": 0.0, "hd": diag, "hd95": diag, "nsd": 0.0}
    inter = int(np.count_nonzero(pred & gt))
    dice = 2.0 * inter / (n_pred + n_gt)
    iou = inter / (n_pred + n_gt - inter)
    bp, bg = boundary(pred), boundary(gt)
    d_pg = _directed_distances(bp, bg)  # pred boundary -> gt boundary
    d_gp = _directed_distances(bg, bp)
    hd = float(max(d_pg.max(), d_gp.max()))
    hd95 = float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))
    nsd = float((np.count_nonzero(d_pg <= tolerance) + np.count_nonzero(d_gp <= tolerance)) / (d_pg.size + d_gp.size))
    return {"dice": float(dice), "iou": float(iou), "hd": hd, "hd95": hd95, "nsd": nsd}


def sts_score(dice: float, iou: float, hd: float, diag: float) -> float:
    """STS-2D-style score ``0.4*Dice + 0.3*IoU + 0.3*(1 - nHD)`` with ``nHD = clip(HD / image diagonal, 0, 1)``.

    HD is the full (max) Hausdorff distance in pixels of the ground-truth image; dividing by the diagonal makes the
    score independent of resolution and puts a wholly missed mask (HD = diagonal) at nHD = 1.
    """
    if diag <= 0:
        raise ValueError(f"image diagonal must be positive, got {diag}")
    nhd = min(max(hd / diag, 0.0), 1.0)
    return 0.4 * dice + 0.3 * iou + 0.3 * (1.0 - nhd)


def failure_metrics(shape: tuple[int, ...]) -> dict[str, float]:
    """The scores of an image whose prediction is missing or unusable: the worst value of every metric."""
    diag = diagonal(shape)
    return {"dice": 0.0, "iou": 0.0, "hd": diag, "hd95": diag, "nsd": 0.0, "sts": 0.0}


def score_pair(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0) -> dict[str, float]:
    """`mask_metrics` plus the STS-style score, the row every stage writes per image."""
    m = mask_metrics(pred, gt, tolerance)
    m["sts"] = sts_score(m["dice"], m["iou"], m["hd"], diagonal(gt.shape))
    return m
