"""Measure the hash-distance distribution of a dataset to choose `curate.hash_threshold` (docs/curation.md).

    python -m toothseg.curate.calibrate DATA... [--sample 200]

Prints (1) the lowest-distance pairs, the ones to look at by eye: copies sit at the bottom, then a gap, then the
closest distinct patients; (2) the distance of synthetic copies of a sample of the images (re-exposure, crop,
rescale, re-export), the distances a threshold must cover.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from toothseg.curate.hashing import pair_distances, thumbnail
from toothseg.data.io import read_image
from toothseg.data.layout import discover


def _jpeg(a: np.ndarray, q: int = 60) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_GRAYSCALE)


def perturbations(rng: np.random.Generator) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The copy kinds an archive holds: gamma 0.6-1.6, contrast +-30%, crop <= 3% a side, rescale, JPEG, all."""
    def gamma(a: np.ndarray) -> np.ndarray:
        return (255.0 * (a / 255.0) ** rng.uniform(0.6, 1.6)).astype(np.uint8)

    def contrast(a: np.ndarray) -> np.ndarray:
        f = a.astype(np.float32)
        c, b = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
        return np.clip((f - f.mean()) * c + f.mean() + b, 0, 255).astype(np.uint8)

    def crop(a: np.ndarray) -> np.ndarray:
        h, w = a.shape
        t, b, left, r = (int(rng.uniform(0, 0.03) * s) for s in (h, h, w, w))
        return a[t : h - b, left : w - r]

    def rescale(a: np.ndarray) -> np.ndarray:
        s = rng.uniform(0.5, 1.5)
        return cv2.resize(a, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)

    return {"gamma": gamma, "contrast": contrast, "crop": crop, "rescale": rescale,
            "square": lambda a: cv2.resize(a, (512, 512), interpolation=cv2.INTER_AREA), "jpeg": _jpeg,
            "all": lambda a: _jpeg(crop(contrast(gamma(a))))}


def copy_distance(a: np.ndarray, b: np.ndarray, hash_size: int = 16) -> int:
    """What prepare would measure for this pair (raw distance, lowered by registration)."""
    d = pair_distances([thumbnail(a), thumbnail(b)], hash_size, align_bound=10**6)
    return int(d.final[0, 1])


def measure(data_dirs: list[str | Path], sample: int = 200, seed: int = 0, lowest: int = 15) -> dict:
    ds = discover(data_dirs)
    keys = [s.key for s in ds.samples]
    images = [read_image(s.image_path) for s in ds.samples]
    dist = pair_distances([thumbnail(a) for a in images])
    n = len(images)
    iu = np.triu_indices(n, 1)
    order = np.argsort(dist.final[iu], kind="stable")[:lowest]
    pairs = [(int(dist.final[iu][o]), int(dist.raw[iu][o]), keys[iu[0][o]], keys[iu[1][o]]) for o in order]
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, min(sample, n), replace=False)
    robust = {}
    for kind, fn in perturbations(rng).items():
        d = np.array([copy_distance(images[i], fn(images[i])) for i in idx])
        robust[kind] = {"median": float(np.median(d)), "p99": float(np.percentile(d, 99)), "max": int(d.max())}
    return {"images": n, "pairs": len(iu[0]), "registered": dist.n_registered, "lowest_pairs": pairs,
            "copies": robust}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+")
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()
    r = measure(args.data, args.sample)
    print(f"{r['images']} images, {r['pairs']} pairs, {r['registered']} registered")
    print("lowest pairs (final, raw, a, b): look at them to tell copies from distinct patients")
    for p in r["lowest_pairs"]:
        print("  %4d %4d  %s  %s" % p)
    print("synthetic copies of a sample (final distance): median / p99 / max")
    for k, v in r["copies"].items():
        print(f"  {k:9s} {v['median']:5.1f} {v['p99']:5.1f} {v['max']:4d}")


if __name__ == "__main__":
    main()
