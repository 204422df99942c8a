"""Out-of-fold scoring: a fold's best model predicts its validation images at their ORIGINAL resolution.

Writes the fold folder's ``oof.csv`` and ``oof/<source>/<image_id>.png`` (tooth probability x 255, uint8,
original size; `toothseg.run.family.FoldDir`). These per-sample scores drive hard-sample mining; the maps feed
threshold/fusion tuning.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toothseg.config import Config
from toothseg.data.io import read_image, read_mask, write_png
from toothseg.data.preprocess import from_network, to_network
from toothseg.evaluate.metrics import mask_metrics
from toothseg.train.restore import module_from_checkpoint
from toothseg.run.family import FoldDir, OofRow, write_oof
from toothseg.train.dataset import TrainItem


@torch.no_grad()
def predict_probability(model: nn.Module, img_u8: np.ndarray, size: tuple[int, int], resize: str) -> np.ndarray:
    """Tooth probability at the image's own size, through the shared to_network/from_network mapping."""
    x, place = to_network(img_u8, size, resize)
    dev = next(model.parameters()).device
    logits = model(torch.from_numpy(x)[None, None].to(dev))
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    return from_network(prob, place)


def score_fold(cfg: Config | None, ckpt: Path, val: list[TrainItem], fold_dir: Path) -> list[OofRow]:
    """OOF scores of ``ckpt`` on ``val`` at the original resolution (threshold 0.5) -> fold_dir/oof.csv + oof/
    (replaced); returns the rows."""
    module = module_from_checkpoint(ckpt)
    use_cuda = torch.cuda.is_available() and (cfg is None or cfg.train.accelerator != "cpu")
    model = module.model.to(torch.device("cuda" if use_cuda else "cpu")).eval()
    size, resize = tuple(module.hparams["scale"]), module.hparams["resize"]
    fold = FoldDir(Path(fold_dir))
    shutil.rmtree(fold.oof_dir, ignore_errors=True)
    rows = []
    for item in val:
        prob = predict_probability(model, read_image(item.image_path), size, resize)
        write_png(fold.oof_map(item.key), np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8))
        gt = read_mask(item.mask_path) if item.mask_path is not None else read_image(item.soft_path) >= 128
        m = mask_metrics(prob >= 0.5, gt)
        rows.append(OofRow(key=item.key, dice=m["dice"], iou=m["iou"], hd95=m["hd95"]))
    write_oof(fold.oof_csv, rows)
    return rows
