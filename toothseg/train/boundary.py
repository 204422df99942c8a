"""Boundary loss (Kervadec et al., MIDL 2019) for binary logits: the predicted tooth probability weighted by the
signed distance to the true tooth outline (negative inside, positive outside), averaged over pixels.

It penalises probability far outside the teeth most, which is what HD95 measures. MONAI's HausdorffDTLoss was the
first candidate, but it recomputes SciPy distance transforms of prediction and target on every call (about 1.5 s
per batch of 4 at 320x640 on 2 CPU cores, a third of a training step) and its value grows with distance squared
(1e4 for one far-off blob). Here only the target's distance map is needed; OpenCV computes it in about a
millisecond per image, and it is divided by the image height so the term stays on the scale of BCE/Dice.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance (pixels) to the outline of binary ``mask``: < 0 inside, > 0 outside; all zeros
    for an empty or full mask (no outline to be near)."""
    fg = mask.astype(bool)
    if not fg.any() or fg.all():
        return np.zeros(mask.shape, np.float32)
    outside = cv2.distanceTransform((~fg).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inside = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (outside - (inside - 1.0).clip(min=0)).astype(np.float32)


def boundary_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of sigmoid(logits) x signed distance / height over (B, 1, H, W) binary targets."""
    masks = (target.detach() > 0.5).squeeze(1).cpu().numpy()
    dist = np.stack([signed_distance(m) for m in masks])[:, None] / float(target.shape[-2])
    dist_t = torch.from_numpy(dist).to(logits.device)
    return (torch.sigmoid(logits.float()) * dist_t).mean()
