"""The bar to clear: a plain supervised smp U-Net script, as a user would write it (mission.md).

mobilenetv3_large_100 encoder (timm, 'tu-'), from scratch; BCE + Dice; AdamW lr 3e-4, constant; batch 4;
horizontal flip only; 320x640 resize; trained for a fixed wall-clock budget on fold 0's training images of a
prepared run, then scored ONCE (final weights, threshold 0.5) on fold 0's validation images at their original
resolution with toothseg.evaluate.metrics (the same metric code as `toothseg train`'s OOF scores).

    python bench/baseline_smp_unet.py --run /tmp/bench_tufts/run --minutes 30 --out /tmp/bench_tufts/baseline.json

The final weights are saved next to ``--out`` (``model.pt``). ``--predict IMAGES:MASKS_OUT`` (repeatable) writes
0/255 PNG masks named by image stem for ``toothseg evaluate``, timed (images/s, end to end including PNG I/O);
with ``--weights model.pt`` training is skipped, so a separate process can be timed for speed and peak memory:

    python bench/baseline_smp_unet.py --weights /tmp/bench/smp/model.pt --out /tmp/bench/smp/predict.json \
        --predict ../shared/data/ufba425/images:/tmp/bench/smp/ufba425
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


def build_model() -> torch.nn.Module:
    return smp.Unet("tu-mobilenetv3_large_100", encoder_weights=None, in_channels=1, classes=1)


@torch.no_grad()
def predict_mask(model: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    """Final-weights prediction at 320x640, resized back to the image, threshold 0.5 (no TTA)."""
    model.eval()
    x = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    prob = torch.sigmoid(model(torch.from_numpy(x)[None, None]))[0, 0].numpy()
    prob = cv2.resize(prob, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return prob >= 0.5


def predict_folder(model: torch.nn.Module, spec: str) -> dict:
    """``IMAGES:MASKS_OUT`` -> 0/255 PNG per image stem; returns count and end-to-end images/s."""
    src, dst = (Path(p) for p in spec.rsplit(":", 1))
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif"})
    t0 = time.monotonic()
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(dst / f"{p.stem}.png"), predict_mask(model, img).astype(np.uint8) * 255)
    secs = time.monotonic() - t0
    return {"images": str(src), "out": str(dst), "n": len(files), "seconds": round(secs, 1),
            "images_per_s": round(len(files) / secs, 3) if secs else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="run folder from 'toothseg prepare' (folds.json)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", type=Path, help="skip training: load these final weights (model.pt)")
    ap.add_argument("--predict", action="append", default=[], metavar="IMAGES:MASKS_OUT",
                    help="write masks for every image in IMAGES to MASKS_OUT (repeatable)")
    a = ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(a.threads)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.weights is not None:
        model = build_model()
        model.load_state_dict(torch.load(a.weights, map_location="cpu", weights_only=True))
        res = {"script": "bench/baseline_smp_unet.py", "weights": str(a.weights), "threads": a.threads,
               "predict": [predict_folder(model, spec) for spec in a.predict]}
        a.out.write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return
    if a.run is None:
        ap.error("--run is required unless --weights is given")
    samples = {s.key: s for s in read_index(a.run / "samples.csv")}
    fold = json.loads((a.run / "folds.json").read_text())[str(a.fold)]
    pair = lambda k: (str(samples[k].image_path), str(samples[k].mask_path))  # noqa: E731
    train = [pair(k) for k in fold["train"]]
    val = [pair(k) for k in fold["val"]]

    model = build_model()
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

    weights = a.out.parent / "model.pt"
    torch.save(model.state_dict(), weights)

    model.eval()
    rows = []
    for img_p, mask_p in val:
        img = cv2.imread(img_p, cv2.IMREAD_GRAYSCALE)
        gt = cv2.imread(mask_p, cv2.IMREAD_GRAYSCALE) > 0
        rows.append(mask_metrics(predict_mask(model, img), gt))
    res = {"script": "bench/baseline_smp_unet.py", "run": str(a.run), "fold": a.fold, "minutes": a.minutes,
           "threads": a.threads, "steps": steps, "epochs_completed": epochs, "train_seconds": round(train_s, 1),
           "weights": str(weights), "n_val": len(rows),
           **{m: float(np.mean([r[m] for r in rows])) for m in ("dice", "iou", "hd95")},
           "predict": [predict_folder(model, spec) for spec in a.predict]}
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
