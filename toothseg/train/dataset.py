"""Training samples: what one item is (`TrainItem`) and how it becomes a tensor pair (`SegDataset`), or a labelled
sample paired with an unlabelled image's weak and strong views (`PairedDataset`, consistency training).

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

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from toothseg.data.io import read_image, read_mask
from toothseg.data.preprocess import fit, normalise
from toothseg.errors import InputError

log = logging.getLogger("toothseg")


@dataclass(frozen=True)
class TrainItem:
    """One training/validation sample. ``soft_path`` (probability PNG x255) wins over ``mask_path`` as target;
    ``confidence_path`` (a teacher probability PNG x255) marks the pixels a pseudo-label is sure of."""

    key: str
    image_path: Path
    mask_path: Path | None = None
    soft_path: Path | None = None
    pseudo: bool = False
    weight: float = 1.0
    confidence_path: Path | None = None


def load_target(item: TrainItem, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Read the item's target at the image's size: (uint8 0..255 array, is_hard)."""
    if item.soft_path is not None:
        tgt = read_image(item.soft_path)
        path, hard = item.soft_path, False
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


def confident_pixels(prob_u8: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 0/255: pixels whose probability p (0..255) has max(p, 1-p) >= ``threshold``."""
    p = prob_u8.astype(np.float32) / 255.0
    return (np.maximum(p, 1.0 - p) >= threshold - 1e-6).astype(np.uint8) * 255


Fitted = tuple[np.ndarray, np.ndarray, bool, "np.ndarray | None"]


def fitted_item(item: TrainItem, size: tuple[int, int], resize: str, pixel_threshold: float | None = None) -> Fitted:
    """Read the item and fit it to the network ``size``: (uint8 image, uint8 target, is_hard, uint8 0/255 mask of
    its confident pixels, or None when every pixel counts)."""
    img = read_image(item.image_path)
    tgt, hard = load_target(item, img.shape)
    img_s, _ = fit(img, size, resize, interp=cv2.INTER_AREA)  # exactly as `to_network` fits
    y, _ = fit(tgt, size, resize, interp=cv2.INTER_NEAREST if hard else cv2.INTER_LINEAR)
    valid = None
    if pixel_threshold is not None and item.confidence_path is not None:
        conf = read_image(item.confidence_path)
        if conf.shape != img.shape:
            raise InputError(item.confidence_path, f"probability map is {conf.shape[1]}x{conf.shape[0]} but "
                             f"its image is {img.shape[1]}x{img.shape[0]}", "pseudo-label again (--overwrite)")
        valid, _ = fit(confident_pixels(conf, pixel_threshold), size, resize, interp=cv2.INTER_NEAREST)
    return img_s, y, hard, valid


class SegDataset(Dataset):
    """(image, target) pairs at one network size; ``augment`` is an albumentations pipeline or None; ``cache``
    keeps each item's fitted arrays in memory after its first read.

    ``strong``: an extra photometric pipeline for pseudo-labelled items only. ``pixel_threshold``: items with a
    ``confidence_path`` get a ``valid`` mask of their confident pixels (others are ignored by the loss).
    """

    def __init__(self, items: list[TrainItem], size: tuple[int, int], resize: str = "resize", augment=None,
                 strong=None, pixel_threshold: float | None = None, cache: bool = False) -> None:
        if not items:
            raise InputError("<dataset>", "no training items", "check the run's folds.json and curation.json")
        self.items = list(items)
        self.size = (int(size[0]), int(size[1]))
        self.resize = resize
        self.augment = augment
        self.strong = strong
        self.pixel_threshold = pixel_threshold
        self._cache: dict[TrainItem, Fitted] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.items)

    def _pair(self, item: TrainItem) -> Fitted:
        if self._cache is None:
            return fitted_item(item, self.size, self.resize, self.pixel_threshold)
        hit = self._cache.get(item)
        if hit is None:  # oversampled (hard-mining) copies of an item are the same key: read once
            hit = fitted_item(item, self.size, self.resize, self.pixel_threshold)
            for arr in hit[:2] + hit[3:]:
                if arr is not None:
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
        img_s, y, hard, valid = self._pair(item)
        if self.augment is not None and valid is None:
            out = self.augment(image=img_s, mask=y)
            img_s, y = out["image"], out["mask"]
        elif self.augment is not None:  # pixels moved in from outside the image are ignored too
            out = self.augment(image=img_s, masks=[y, valid])
            img_s, (y, valid) = out["image"], out["masks"]
        if self.strong is not None and item.pseudo:
            img_s = self.strong(image=img_s)["image"]
        x = normalise(img_s)
        y = y.astype(np.float32) / 255.0
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None],
            "target": torch.from_numpy(np.ascontiguousarray(y))[None],
            "valid": torch.ones(1, *self.size, dtype=torch.bool) if valid is None
            else torch.from_numpy(np.ascontiguousarray(valid > 127))[None],
            "hard": torch.tensor(hard),
            "pseudo": torch.tensor(item.pseudo),
            "weight": torch.tensor(float(item.weight), dtype=torch.float32),
            "index": torch.tensor(i),
        }


class PairedDataset(Dataset):
    """A labelled sample plus one unlabelled image (weak and strong view) per index, for consistency training.

    The epoch is the labelled set (so DDP shards it as usual); each index draws a random unlabelled image. The
    weak view is the usual augmentation, the strong view a photometric perturbation *of the weak view*, so the
    two stay pixel-aligned. Keys: the labelled sample's, plus ``u_weak``, ``u_strong`` (1, H, W).
    """

    def __init__(self, labelled: SegDataset, unlabelled: list[TrainItem], strong, seed: int = 0) -> None:
        if not unlabelled:
            raise InputError("<unlabelled pool>", "no unlabelled images for consistency training",
                             "add unlabelled X-rays (DIR/unlabelled/) and rerun 'toothseg prepare'")
        self.labelled = labelled
        self.unlabelled = list(unlabelled)
        self.strong = strong
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.labelled)

    def _draw(self) -> int:
        if self._rng is None:  # one stream per DDP rank and loader worker, so they draw different images
            info = torch.utils.data.get_worker_info()
            rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
            self._rng = np.random.default_rng([self.seed, rank, info.id if info is not None else 0])
        return int(self._rng.integers(len(self.unlabelled)))

    def _read_unlabelled(self) -> np.ndarray:
        """A random readable unlabelled image; an unreadable one is reported once and left out from then on."""
        while self.unlabelled:
            j = self._draw()
            try:
                return read_image(self.unlabelled[j].image_path)
            except InputError as exc:
                log.warning("consistency: %s; left out of the unlabelled pool", exc)
                self.unlabelled.pop(j)
        raise InputError("<unlabelled pool>", "no readable unlabelled image left", "check the unlabelled X-rays")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        out = self.labelled[i]
        img = self._read_unlabelled()
        weak, _ = fit(img, self.labelled.size, self.labelled.resize, interp=cv2.INTER_AREA)
        if self.labelled.augment is not None:
            weak = self.labelled.augment(image=weak)["image"]
        strong = self.strong(image=weak)["image"] if self.strong is not None else weak
        out["u_weak"] = torch.from_numpy(np.ascontiguousarray(normalise(weak), dtype=np.float32))[None]
        out["u_strong"] = torch.from_numpy(np.ascontiguousarray(normalise(strong), dtype=np.float32))[None]
        return out
