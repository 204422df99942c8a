"""Strong views for semi-supervision: photometric perturbation (albumentations) and CutMix (torch, on a batch).

The strong view is applied to an image that has already been through the usual (weak) augmentation and is only
photometric, so its pixels stay aligned with the weak view's: the teacher's prediction on the weak view is a
valid target for the strong one. CutMix pastes a random box of a partner sample into each chosen sample and moves
the target and the confidence mask with it, so every pixel's image, target and mask come from the same sample.
"""

from __future__ import annotations

import math

import albumentations as A
import torch

from toothseg.train.augment import run_seed

CUTMIX_AREA = (0.02, 0.4)  # box area as a share of the image (UniMatch's range)
CUTMIX_RATIO = (0.3, 1 / 0.3)  # box aspect ratio range


def build_strong_photometric() -> A.Compose:
    """Intensity/contrast/gamma jitter, CLAHE, blur and noise on uint8 images (no geometry)."""
    return A.Compose([
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8),
        A.RandomGamma(gamma_limit=(60, 150), p=0.5),
        A.CLAHE(clip_limit=(1.0, 4.0), tile_grid_size=(8, 8), p=0.2),
        A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.1, 2.0), p=0.5),
        A.GaussNoise(std_range=(0.01, 0.06), p=0.5),
    ], seed=run_seed())


def cutmix_boxes(n: int, h: int, w: int, p: float, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 1, h, w) bool: a random box per sample with probability ``p``, else all False."""
    boxes = torch.zeros(n, 1, h, w, dtype=torch.bool, device=device)
    u = torch.rand(n, 3, generator=generator)
    for i in range(n):
        if float(u[i, 0]) >= p:
            continue
        area = (CUTMIX_AREA[0] + (CUTMIX_AREA[1] - CUTMIX_AREA[0]) * float(u[i, 1])) * h * w
        ratio = math.exp(math.log(CUTMIX_RATIO[0]) + (math.log(CUTMIX_RATIO[1]) - math.log(CUTMIX_RATIO[0]))
                         * float(u[i, 2]))
        bh = max(1, min(h, int(round(math.sqrt(area / ratio)))))
        bw = max(1, min(w, int(round(math.sqrt(area * ratio)))))
        y0 = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
        boxes[i, :, y0:y0 + bh, x0:x0 + bw] = True
    return boxes


def cutmix(tensors: list[torch.Tensor], p: float, index: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """CutMix samples of a batch with partners: the same box is pasted into every tensor of ``tensors``.

    ``tensors``: (N, C, H, W) tensors sharing N, H, W (image, target, confidence mask, ...). ``index``: the
    batch positions that may be mixed (with each other only; default all). Returns (mixed tensors, boxes
    (N, 1, H, W) bool, partner of each sample).
    """
    n, _, h, w = tensors[0].shape
    dev = tensors[0].device
    pool = torch.arange(n, device=dev) if index is None else index.to(dev)
    partner = torch.arange(n, device=dev)
    if pool.numel() < 2 or p <= 0:
        return list(tensors), torch.zeros(n, 1, h, w, dtype=torch.bool, device=dev), partner
    # a derangement of the pool (a shift of a random order): no sample is its own partner
    order = pool[torch.randperm(pool.numel(), generator=generator).to(dev)]
    partner[order] = order.roll(1)
    boxes = cutmix_boxes(n, h, w, p, dev, generator)
    keep = torch.zeros(n, dtype=torch.bool, device=dev)
    keep[pool] = True
    boxes &= keep.view(n, 1, 1, 1)
    out = [torch.where(boxes, t[partner], t) for t in tensors]
    return out, boxes, partner
