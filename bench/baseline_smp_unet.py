"""The bar to clear: a plain supervised smp U-Net script, as a user would write it (mission.md).

mobilenetv3_large_100 encoder (timm, 'tu-'), from scratch; BCE + Dice; AdamW lr 3e-4, constant; batch 4;
horizontal flip only; 320x640 resize; trained for a fixed wall-clock budget on fold 0's training images of a
prepared run, then scored ONCE (final weights, threshold 0.5) on fold 0's validation images at their original
resolution with toothseg.evaluate.metrics (the same metric code as `toothseg train`'s OOF scores).

    python bench/baseline_smp_unet.py --run /tmp/bench_tufts/run --minutes 30 --out /tmp/bench_tufts/baseline.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader, Dataset

from toothseg.data.layout import read_index
from toothseg.evaluate.metrics import mask_metrics

H, W = 320, 640


class Pairs(Dataset):
    def __init__(self, pairs: list[tuple[str, str]], train: bool) -> None:
        self.pairs, self.train = pairs, train

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        img = cv2.imread(self.pairs[i][0], cv2.IMREAD_GRAYSCALE)
        mask = (cv2.imread(self.pairs[i][1], cv2.IMREAD_GRAYSCALE) > 0).astype(np.float32)
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        mask = cv2.resize(mask, (W, H), interpolation=cv2.INTER_NEAREST)
        if self.train and random.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        return torch.from_numpy(img.copy())[None], torch.from_numpy(mask.copy())[None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, type=Path, help="run folder from 'toothseg prepare' (folds.json)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(a.threads)
    samples = {s.key: s for s in read_index(a.run / "samples.csv")}
    fold = json.loads((a.run / "folds.json").read_text())[str(a.fold)]
    pair = lambda k: (str(samples[k].image_path), str(samples[k].mask_path))  # noqa: E731
    train = [pair(k) for k in fold["train"]]
    val = [pair(k) for k in fold["val"]]

    model = smp.Unet("tu-mobilenetv3_large_100", encoder_weights=None, in_channels=1, classes=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    bce, dice = torch.nn.BCEWithLogitsLoss(), smp.losses.DiceLoss("binary")
    loader = DataLoader(Pairs(train, True), batch_size=4, shuffle=True, num_workers=2, drop_last=True,
                        persistent_workers=True)
    t0, steps, epochs, budget = time.monotonic(), 0, 0, a.minutes * 60
    model.train()
    while time.monotonic() - t0 < budget:
        for x, y in loader:
            logits = model(x)
            loss = bce(logits, y) + dice(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps % 50 == 0:
                print(f"step {steps} loss {loss.item():.4f} {time.monotonic() - t0:.0f}s", flush=True)
            if time.monotonic() - t0 >= budget:
                break
        else:
            epochs += 1
    train_s = time.monotonic() - t0

    model.eval()
    rows = []
    with torch.no_grad():
        for img_p, mask_p in val:
            img = cv2.imread(img_p, cv2.IMREAD_GRAYSCALE)
            gt = cv2.imread(mask_p, cv2.IMREAD_GRAYSCALE) > 0
            x = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            prob = torch.sigmoid(model(torch.from_numpy(x)[None, None]))[0, 0].numpy()
            prob = cv2.resize(prob, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            rows.append(mask_metrics(prob >= 0.5, gt))
    res = {"script": "bench/baseline_smp_unet.py", "run": str(a.run), "fold": a.fold, "minutes": a.minutes,
           "threads": a.threads, "steps": steps, "epochs_completed": epochs, "train_seconds": round(train_s, 1),
           "n_val": len(rows), **{m: float(np.mean([r[m] for r in rows])) for m in ("dice", "iou", "hd95")}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
