"""Shared helpers for the training tests (no tests here): a tiny run folder drawn from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from toothseg.config import Config, build_config, save_config
from toothseg.data.layout import discover, write_index


def draw_pair(rng: np.random.Generator, h: int = 64, w: int = 128, empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy 'X-ray' with bright elliptical 'teeth' and their mask (0/255)."""
    img = rng.normal(60, 12, (h, w)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    if not empty:
        for _ in range(int(rng.integers(3, 7))):
            c = (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10)))
            ax = (int(rng.integers(4, 10)), int(rng.integers(6, 14)))
            cv2.ellipse(mask, c, ax, 0, 0, 360, 255, -1)
    img[mask > 0] = np.clip(img[mask > 0].astype(int) + 120, 0, 255).astype(np.uint8)
    return img, mask


def make_dataset(root: Path, n: int = 12, h: int = 64, w: int = 128, seed: int = 0) -> Path:
    """root/toy/{images,masks}/*.png; one image has an empty mask (edentulous)."""
    rng = np.random.default_rng(seed)
    d = root / "toy"
    (d / "images").mkdir(parents=True, exist_ok=True)
    (d / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, mask = draw_pair(rng, h, w, empty=(i == 0))
        cv2.imwrite(str(d / "images" / f"{i:03d}.png"), img)
        cv2.imwrite(str(d / "masks" / f"{i:03d}.png"), mask)
    return d


def make_run(root: Path, n: int = 12, n_folds: int = 2, overrides: list[str] | None = None,
             h: int = 64, w: int = 128) -> tuple[Path, Config]:
    """A run folder as prepare writes it: config.yaml, samples.csv, folds.json (keys split round-robin)."""
    data = make_dataset(root / "data", n, h, w)
    run = root / "run"
    cfg = build_config("tiny", overrides=["train.scales=[[64, 128]]", "train.epochs=1", "train.num_workers=0",
                                          "train.threads=2", *(overrides or [])])
    save_config(cfg, run / "config.yaml")
    ds = discover([data])
    write_index(ds, run / "samples.csv")
    keys = sorted(s.key for s in ds.labelled)
    folds = {str(k): {"train": [x for i, x in enumerate(keys) if i % n_folds != k],
                      "val": [x for i, x in enumerate(keys) if i % n_folds == k]} for k in range(n_folds)}
    (run / "folds.json").write_text(json.dumps(folds))
    return run, cfg
