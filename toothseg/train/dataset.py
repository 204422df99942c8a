"""Training samples: what one item is (`TrainItem`) and how it becomes a tensor pair (`SegDataset`).

Pixels go through the shared preprocessing (`toothseg.data.preprocess`): the image is fitted to the network size
exactly as `to_network` does (`fit` with INTER_AREA), augmented on uint8, then `normalise`d; without augmentation
this is `to_network` itself, so training and inference see identical pixels. Masks are fitted with nearest
neighbour; soft (distillation) targets bilinearly.

Decoding a full-size X-ray and fitting it costs more than many augmentations, so with ``cache`` each item's fitted
uint8 image and target are kept in memory after the first read (about 0.4 MB per item at 320x640). This is exact:
everything random happens after fitting. `SegDataset.warm` fills the cache up front so that DataLoader workers
forked afterwards share it instead of each decoding every file again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from toothseg.data.io import read_image, read_mask
from toothseg.data.preprocess import fit, normalise
from toothseg.errors import InputError


@dataclass(frozen=True)
class TrainItem:
    """One training/validation sample. ``soft_path`` (probability PNG x255) wins over ``mask_path`` as target."""

    key: str
    image_path: Path
    mask_path: Path | None = None
    soft_path: Path | None = None
    pseudo: bool = False
    weight: float = 1.0

    @property
    def source(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def image_id(self) -> str:
        return self.key.split("/", 1)[-1]


def load_target(item: TrainItem, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Read the item's target at the image's size: (uint8 0..255 array, is_hard)."""
    if item.soft_path is not None:
        soft = read_image(item.soft_path)
        path, hard = item.soft_path, False
        tgt = soft
    elif item.mask_path is not None:
        tgt = read_mask(item.mask_path).astype(np.uint8) * 255
        path, hard = item.mask_path, True
    else:
        raise InputError(item.image_path, f"training item '{item.key}' has neither a mask nor a soft label",
                         "give every training item a mask_path or soft_path")
    if tgt.shape != shape:
        raise InputError(path, f"label is {tgt.shape[1]}x{tgt.shape[0]} but its image is {shape[1]}x{shape[0]}",
                         "save the label at the image's size")
    return tgt, hard


def fitted_pair(item: TrainItem, size: tuple[int, int], resize: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Read the item and fit image and target to the network ``size``: (uint8 image, uint8 target, is_hard)."""
    img = read_image(item.image_path)
    tgt, hard = load_target(item, img.shape)
    img_s, _ = fit(img, size, resize, interp=cv2.INTER_AREA)  # exactly as `to_network` fits
    y, _ = fit(tgt, size, resize, interp=cv2.INTER_NEAREST if hard else cv2.INTER_LINEAR)
    return img_s, y, hard


class SegDataset(Dataset):
    """(image, target) pairs at one network size; ``augment`` is an albumentations pipeline or None; ``cache``
    keeps each item's fitted arrays in memory after its first read."""

    def __init__(self, items: list[TrainItem], size: tuple[int, int], resize: str = "resize", augment=None,
                 cache: bool = False) -> None:
        if not items:
            raise InputError("<dataset>", "no training items", "check the run's folds.json and curation.json")
        self.items = list(items)
        self.size = (int(size[0]), int(size[1]))
        self.resize = resize
        self.augment = augment
        self._cache: dict[TrainItem, tuple[np.ndarray, np.ndarray, bool]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.items)

    def _pair(self, item: TrainItem) -> tuple[np.ndarray, np.ndarray, bool]:
        if self._cache is None:
            return fitted_pair(item, self.size, self.resize)
        hit = self._cache.get(item)
        if hit is None:  # oversampled (hard-mining) copies of an item are the same key: read once
            hit = fitted_pair(item, self.size, self.resize)
            for arr in hit[:2]:
                arr.flags.writeable = False  # an in-place augmentation must fail loudly, not corrupt the cache
            self._cache[item] = hit
        return hit

    def warm(self) -> None:
        """Read every item into the cache now (before DataLoader workers fork)."""
        if self._cache is not None:
            for item in self.items:
                self._pair(item)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.items[i]
        img_s, y, hard = self._pair(item)
        if self.augment is None:
            x = normalise(img_s)
        else:
            out = self.augment(image=img_s, mask=y)
            x, y = normalise(out["image"]), out["mask"]
        y = y.astype(np.float32) / 255.0
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None],
            "target": torch.from_numpy(np.ascontiguousarray(y))[None],
            "hard": torch.tensor(hard),
            "pseudo": torch.tensor(item.pseudo),
            "weight": torch.tensor(float(item.weight), dtype=torch.float32),
            "index": torch.tensor(i),
        }
