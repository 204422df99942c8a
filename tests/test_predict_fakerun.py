"""A tiny fake training run (what toothseg/train writes), built in the test, plus checks of the bundle built from it.

The OOF maps are drawn so that the right answers are known: teeth get probability ~0.42 (under 0.5) and the
background carries small bright specks, so an honest tuner must lower the threshold and remove small components.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from toothseg.config import build_config, save_config
from toothseg.models.factory import create_model

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


def make_run(root: Path, tags: dict[str, tuple[int, int]] = TAGS, folds: int = 2, seed: int = 0) -> Path:
    """RUN/ with config.yaml, samples.csv, train/<tag>/{model.json, fold<k>/{best.ckpt, oof.csv, oof/...}}."""
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
    with (run / "samples.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "source", "image_id", "image_path", "mask_path"])
        for i, k in enumerate(keys):
            w.writerow([k, "synth", f"img{i}", str(data / "images" / f"img{i}.png"), str(data / "masks" / f"img{i}.png")])
        w.writerow(["synth/u0", "synth", "u0", str(data / "images" / "img0.png"), ""])
    model_d = cfg.model.model_dump(mode="json")
    for t_i, (tag, scale) in enumerate(tags.items()):
        tdir = run / "train" / tag
        for k in range(folds):
            net = create_model(cfg.model, load_weights=False)
            fd = tdir / f"fold{k}"
            fd.mkdir(parents=True)
            ckpt = {"state_dict": {"model." + n: v for n, v in net.state_dict().items()},
                    "hyper_parameters": {"model": model_d, "scale": list(scale), "resize": "resize"},
                    "epoch": 1}
            torch.save(ckpt, fd / "best.ckpt")
            val = keys[k::folds]
            rows = []
            for key in val:
                src, iid = key.split("/")
                (fd / "oof" / src).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(fd / "oof" / src / f"{iid}.png"), draw_oof(rng, gts[key]))
                rows.append(f"{key},0.8,0.7,3.0")
            (fd / "oof.csv").write_text("key,dice,iou,hd95\n" + "\n".join(rows) + "\n")
        (tdir / "model.json").write_text(json.dumps({"tag": tag, "model": model_d, "scale": list(scale),
                                                     "resize": "resize", "folds": list(range(folds)),
                                                     "cv_dice": 0.8 + 0.01 * t_i}))
    return run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("predict"))


def test_fake_run_layout(fake_run: Path) -> None:
    assert (fake_run / "samples.csv").is_file()
    for tag in TAGS:
        assert sorted(p.name for p in (fake_run / "train" / tag).glob("fold*")) == ["fold0", "fold1"]
        assert len(list((fake_run / "train" / tag).glob("fold*/oof/synth/*.png"))) == N_IMAGES
