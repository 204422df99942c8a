"""Mask clean-up after thresholding: drop small connected components, fill enclosed holes.

Both steps are optional and are switched on by the bundle only where they raised out-of-fold Dice (see
`toothseg.predict.threshold`), because on tooth masks either can also hurt (small crowns, real gaps between teeth).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 8-connected foreground components with fewer than ``min_size`` pixels."""
    if min_size <= 0 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_size
    keep[0] = False  # background
    return keep[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border."""
    if not mask.any():
        return mask
    return ndimage.binary_fill_holes(mask)


def postprocess(mask: np.ndarray, min_component: int = 0, fill: bool = False) -> np.ndarray:
    """Apply the chosen clean-up steps (holes first, so filled crowns count as one component)."""
    out = mask.astype(bool, copy=False)
    if fill:
        out = fill_holes(out)
    if min_component > 0:
        out = remove_small_components(out, min_component)
    return out


def count_components(mask: np.ndarray) -> int:
    """Number of 8-connected foreground components."""
    if not mask.any():
        return 0
    n, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return int(n - 1)
