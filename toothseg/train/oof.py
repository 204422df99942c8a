"""Out-of-fold scoring: a fold's best model predicts its validation images at their ORIGINAL resolution.

Writes ``oof.csv`` (``key,dice,iou,hd95``) and ``oof/<source>/<image_id>.png`` (tooth probability x 255, uint8,
original size). These per-sample scores drive hard-sample mining; the maps feed threshold/fusion tuning.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toothseg.data.io import read_image, read_mask, write_png
from toothseg.data.preprocess import from_network, to_network
from toothseg.evaluate.metrics import mask_metrics
from toothseg.train.dataset import TrainItem

OOF_COLUMNS = ("key", "dice", "iou", "hd95")


@torch.no_grad()
def predict_probability(model: nn.Module, img_u8: np.ndarray, size: tuple[int, int], resize: str) -> np.ndarray:
    """Tooth probability at the image's own size, through the shared to_network/from_network mapping."""
    x, place = to_network(img_u8, size, resize)
    dev = next(model.parameters()).device
    logits = model(torch.from_numpy(x)[None, None].to(dev))
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    return from_network(prob, place)


def score_items(model: nn.Module, items: list[TrainItem], size: tuple[int, int], resize: str, out_dir: Path,
                threshold: float = 0.5) -> list[dict]:
    """Predict, save OOF maps and write ``out_dir/oof.csv``; returns the rows."""
    model.eval()
    rows = []
    for item in items:
        img = read_image(item.image_path)
        prob = predict_probability(model, img, size, resize)
        write_png(out_dir / "oof" / item.source / f"{item.image_id}.png",
                  np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8))
        gt = read_mask(item.mask_path) if item.mask_path is not None else read_image(item.soft_path) >= 128
        m = mask_metrics(prob >= threshold, gt)
        rows.append({"key": item.key, "dice": m["dice"], "iou": m["iou"], "hd95": m["hd95"]})
    write_oof_csv(out_dir / "oof.csv", rows)
    return rows


def write_oof_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=OOF_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({"key": r["key"], "dice": f"{r['dice']:.6f}", "iou": f"{r['iou']:.6f}",
                        "hd95": f"{r['hd95']:.4f}"})
    tmp.replace(path)


def read_oof_csv(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return [{"key": r["key"], "dice": float(r["dice"]), "iou": float(r["iou"]), "hd95": float(r["hd95"])}
                for r in csv.DictReader(f)]


def summarise(rows: list[dict]) -> dict[str, float]:
    """Mean Dice/IoU/HD95 over rows (NaN-free: the metric conventions never yield NaN)."""
    if not rows:
        return {"dice": float("nan"), "iou": float("nan"), "hd95": float("nan"), "n": 0}
    return {"dice": float(np.mean([r["dice"] for r in rows])), "iou": float(np.mean([r["iou"] for r in rows])),
            "hd95": float(np.mean([r["hd95"] for r in rows])), "n": len(rows)}
