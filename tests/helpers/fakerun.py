"""The fake run folders tests build: `make_run` (prepared: config, samples, folds, ready to train) and
`make_trained_run` (trained model families with checkpoints and OOF maps, ready for a bundle)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import torch

from toothseg.config import Config, build_config, save_config
from toothseg.data.layout import discover, write_index
from toothseg.models.factory import create_model
from toothseg.run.family import OofRow, write_oof
from toothseg.run.files import write_json
from toothseg.run.folder import RunDir


SAMPLE_FIELDS = ["key", "source", "image_id", "image_path", "mask_path"]


def write_samples(run: Path, rows: list[list[str]], append: bool = False) -> None:
    """RUN/samples.csv rows ``[key, source, image_id, image_path, mask_path]`` (mask empty = unlabelled)."""
    (run / "samples.csv").parent.mkdir(parents=True, exist_ok=True)
    with (run / "samples.csv").open("a" if append else "w", newline="") as f:
        w = csv.writer(f)
        if not append:
            w.writerow(SAMPLE_FIELDS)
        w.writerows(rows)


def write_curation(run: Path, items: dict[str, dict], summary: dict | None = None, threshold: int = 10) -> None:
    """RUN/curation.json: per-key ``{"group", "use", "reason"}`` decisions."""
    RunDir(run).write_curation({"summary": summary or {}, "items": items, "threshold": threshold})


def write_folds(run: Path, folds: dict[str, dict[str, list[str]]]) -> None:
    """RUN/folds.json: ``{"0": {"train": [keys], "val": [keys]}, ...}``."""
    write_json(RunDir(run).folds, folds)


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
    write_folds(run, folds)
    return run, cfg


TAGS = {"unet-tiny-64x128": (64, 128), "unet-tiny-96x192": (96, 192)}
N_IMAGES = 8
SHAPE = (90, 180)


def draw_sample(rng: np.random.Generator, shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A gray 'X-ray' with bright tooth-like ellipses, and their mask."""
    h, w = shape
    img = (rng.normal(60, 10, shape)).clip(0, 255).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    for k in range(6):
        cx = int(w * (0.15 + 0.14 * k))
        for cy in (int(h * 0.35), int(h * 0.68)):
            cv2.ellipse(mask, (cx, cy), (int(w * 0.05), int(h * 0.14)), 0, 0, 360, 1, -1)
    img[mask > 0] = np.clip(img[mask > 0].astype(int) + 120, 0, 255).astype(np.uint8)
    return img, mask.astype(bool)


def draw_oof(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """Under-confident teeth (0.42) and speckled background: known best threshold < 0.5, specks worth removing."""
    p = np.where(gt, 0.42, 0.08) + rng.normal(0, 0.02, gt.shape)
    h, w = gt.shape
    for _ in range(6):
        y, x = rng.integers(2, h - 4), rng.integers(2, w - 4)
        if not gt[y - 2:y + 4, x - 2:x + 4].any():
            p[y:y + 2, x:x + 2] = 0.9
    return np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)


def make_trained_run(root: Path, tags: dict[str, tuple[int, int]] = TAGS, folds: int = 2, seed: int = 0) -> Path:
    """RUN/ with config.yaml, samples.csv, train/<tag>/{model.json, fold<k>/{best.ckpt, oof.csv, oof/...}}.

    The OOF maps are drawn so that the right answers are known: teeth get probability ~0.42 (under 0.5) and the
    background carries small bright specks, so an honest tuner must lower the threshold and remove small components.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    run = root / "run"
    data = root / "data" / "synth"
    cfg = build_config("tiny")
    cfg.train.scales = list(tags.values())  # the config chose every family: all of them make the bundle
    save_config(cfg, run / "config.yaml")
    keys = []
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir(parents=True)
    gts = {}
    for i in range(N_IMAGES):
        img, gt = draw_sample(rng)
        cv2.imwrite(str(data / "images" / f"img{i}.png"), img)
        cv2.imwrite(str(data / "masks" / f"img{i}.png"), gt.astype(np.uint8) * 255)
        keys.append(f"synth/img{i}")
        gts[keys[-1]] = gt
    write_samples(run, [[k, "synth", f"img{i}", str(data / "images" / f"img{i}.png"),
                         str(data / "masks" / f"img{i}.png")] for i, k in enumerate(keys)]
                  + [["synth/u0", "synth", "u0", str(data / "images" / "img0.png"), ""]])
    model_d = cfg.model.model_dump(mode="json")
    for t_i, (tag, scale) in enumerate(tags.items()):
        family = RunDir(run).family(tag)
        for k in range(folds):
            net = create_model(cfg.model, load_weights=False)
            fold = family.fold(k)
            fold.path.mkdir(parents=True)
            ckpt = {"state_dict": {"model." + n: v for n, v in net.state_dict().items()},
                    "hyper_parameters": {"model": model_d, "scale": list(scale), "resize": "resize"},
                    "epoch": 1}
            torch.save(ckpt, fold.best_ckpt)
            val = keys[k::folds]
            for key in val:
                png = fold.oof_map(key)
                png.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(png), draw_oof(rng, gts[key]))
            write_oof(fold.oof_csv, [OofRow(key=key, dice=0.8, iou=0.7, hd95=3.0) for key in val])
        family.write_info({"tag": tag, "model": model_d, "scale": list(scale), "resize": "resize",
                           "folds": list(range(folds)), "cv_dice": 0.8 + 0.01 * t_i})
    return run
