"""Training augmentation (albumentations, on uint8 images at network size, before normalisation).

OPGs vary mostly in exposure, contrast, noise and small positioning changes, so the pipeline is photometric plus
a small affine; horizontal flips are safe because the mask is binary (tooth vs background) and dentition is
near-symmetric. Masks (hard 0/1 or soft 0..1 float targets) follow the geometric transforms with nearest
interpolation, so hard masks stay binary.
"""

from __future__ import annotations

import albumentations as A
import cv2
import torch

from toothseg.errors import ConfigError

LEVELS = ("none", "light", "strong")


def run_seed() -> int:
    """Albumentations 2 draws from its own generator; seeding it from torch's (set by the run's one seed) makes the
    augmentation follow that seed too."""
    return torch.initial_seed() % 2**32


def build_augment(level: str) -> A.Compose | None:
    """Return the augmentation pipeline for ``level`` ('none' -> None)."""
    if level == "none":
        return None
    if level == "light":
        return A.Compose([
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
        ], seed=run_seed())
    if level == "strong":
        return A.Compose([
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-7, 7), shear=(-3, 3),
                     interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                     border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
            A.OneOf([
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=1.0),
                A.RandomGamma(gamma_limit=(75, 135), p=1.0),
                A.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=1.0),
            ], p=0.7),
            A.OneOf([
                A.GaussNoise(std_range=(0.01, 0.05), p=1.0),
                A.GaussianBlur(blur_limit=(3, 5), p=1.0),
                A.MotionBlur(blur_limit=(3, 5), p=1.0),
            ], p=0.3),
        ], seed=run_seed())
    raise ConfigError(f"train.augment '{level}' is unknown; choose one of: {', '.join(LEVELS)}")
