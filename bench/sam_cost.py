"""SAM-ViT measurements (issue 8).

  python bench/sam_cost.py cost [--variant b] [--size 1024 1024] [--backward] [--threads 2]
      parameter counts for b/l/h, CPU forward time and peak memory per image (and forward+backward if asked).
  python bench/sam_cost.py decoders [--steps 300] [--seeds 0 1]
      trains sam-vit-tiny with each decoder ('conv', 'sam') on synthetic tooth-like images and reports val Dice.

Peak memory is the process's max RSS (ru_maxrss) minus the RSS before the model was built, so run one measurement
per process (the script does: each 'cost' call measures one variant/size).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from toothseg.config import ModelConfig
from toothseg.data.preprocess import normalise
from toothseg.models import create_model


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cost(variant: str, size: tuple[int, int], backward: bool, repeats: int, decoder: str,
         grad_checkpoint: bool = False) -> dict:
    params = {}
    for v in ("b", "l", "h"):
        with torch.device("meta"):
            m = create_model(ModelConfig(name=f"sam-vit-{v}", extra={"decoder": decoder}))
        params[f"sam-vit-{v}"] = {"total": sum(p.numel() for p in m.parameters()),
                                  "encoder": sum(p.numel() for p in m.image_encoder.parameters())}
    base = _rss_mib()
    model = create_model(ModelConfig(name=f"sam-vit-{variant}",
                                     extra={"decoder": decoder, "grad_checkpoint": grad_checkpoint}))
    x = torch.randn(1, 1, *size)
    out = {"variant": variant, "decoder": decoder, "size": list(size), "params": params,
           "grad_checkpoint": grad_checkpoint,
           "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor() or
           platform.machine()}
    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    out["forward_s"] = times
    out["forward_peak_mib"] = round(_peak_mib() - base)
    if backward:
        model.train()
        t = time.perf_counter()
        y = model(x)
        F.binary_cross_entropy_with_logits(y, torch.zeros_like(y)).backward()
        out["forward_backward_s"] = time.perf_counter() - t
        out["train_peak_mib"] = round(_peak_mib() - base)
    return out


def synthetic_teeth(n: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """OPG-like toy images: two arched rows of bright, rotated ellipses (teeth, some missing) on noisy bone."""
    imgs = np.empty((n, h, w), np.float32)
    masks = np.zeros((n, h, w), np.float32)
    yy = np.linspace(-1, 1, w)
    for i in range(n):
        img = np.full((h, w), rng.uniform(60, 110), np.float32)
        img += 40 * np.exp(-((np.arange(h)[:, None] - h / 2) / (h / 3)) ** 2)  # jaw bone band
        mask = np.zeros((h, w), np.uint8)
        teeth = np.zeros((h, w), np.float32)
        for row, sign in ((0.38, 1), (0.62, -1)):
            count = int(rng.integers(10, 17))
            xs = np.linspace(0.08 * w, 0.92 * w, count) + rng.normal(0, 0.005 * w, count)
            for x in xs:
                if rng.random() < 0.12:  # missing tooth
                    continue
                u = yy[int(np.clip(x, 0, w - 1))]
                cy = h * row - sign * 0.12 * h * u * u + rng.normal(0, 0.01 * h)
                ax = (max(2, int(w / count * rng.uniform(0.32, 0.45))), max(3, int(h * rng.uniform(0.09, 0.14))))
                ang = float(np.degrees(np.arctan(sign * 0.24 * u * w / h)) + rng.normal(0, 4))
                cv2.ellipse(mask, (int(x), int(cy)), ax, ang, 0, 360, 1, -1)
                cv2.ellipse(teeth, (int(x), int(cy)), ax, ang, 0, 360, float(rng.uniform(70, 120)), -1)
        img += cv2.GaussianBlur(teeth, (0, 0), 1.0)
        img += rng.normal(0, rng.uniform(6, 14), (h, w)).astype(np.float32)
        img = cv2.GaussianBlur(img, (0, 0), 0.7)
        imgs[i] = normalise(np.clip(img, 0, 255).astype(np.uint8))
        masks[i] = mask
    return imgs, masks


def _dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred = (logits > 0).float()
    inter = (pred * target).sum(dim=(1, 2, 3))
    return float((2 * inter / (pred.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))).clamp_min(1e-6)).mean())


def train_decoder(decoder: str, steps: int, seed: int, size: tuple[int, int] = (128, 256), batch: int = 4,
                  lr: float = 1e-3) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val_x, val_y = (torch.from_numpy(a)[:, None] for a in synthetic_teeth(32, *size, np.random.default_rng(999)))
    model = create_model(ModelConfig(name="sam-vit-tiny", extra={"decoder": decoder}))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        x, y = (torch.from_numpy(a)[:, None] for a in synthetic_teeth(batch, *size, rng))
        logits = model(x)
        p = logits.sigmoid()
        dice_loss = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode():
        dice = _dice(model(val_x), val_y)
    return {"decoder": decoder, "seed": seed, "steps": steps, "val_dice": round(dice, 4),
            "train_s": round(train_s, 1), "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--variant", default="b", choices=["tiny", "b", "l", "h"])
    c.add_argument("--size", type=int, nargs=2, default=[1024, 1024])
    c.add_argument("--decoder", default="sam", choices=["conv", "sam"])
    c.add_argument("--backward", action="store_true")
    c.add_argument("--grad-checkpoint", action="store_true")
    c.add_argument("--repeats", type=int, default=2)
    c.add_argument("--threads", type=int, default=2)
    d = sub.add_parser("decoders")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--seeds", type=int, nargs="+", default=[0])
    d.add_argument("--decoders", nargs="+", default=["conv", "sam"])
    d.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.cmd == "cost":
        print(json.dumps(cost(a.variant, tuple(a.size), a.backward, a.repeats, a.decoder, a.grad_checkpoint)))
    else:
        for seed in a.seeds:
            for dec in a.decoders:
                print(json.dumps(train_decoder(dec, a.steps, seed)), flush=True)


if __name__ == "__main__":
    main()
