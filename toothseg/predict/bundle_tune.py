"""A bundle's fusion weights, threshold and post-processing, chosen on out-of-fold (OOF) predictions.

One weight per tag, shared equally by its folds. With one tag it is 1; with 2-3 tags the weights are searched on a
0.1 simplex grid maximising mean OOF Dice of the fused OOF maps (OOF maps of each tag come from that tag's fold
models, so fusing them at original size is an honest estimate); with more tags they are proportional to CV Dice.
The threshold and post-processing are then tuned on the fused OOF maps (see `toothseg.predict.threshold`); the run
config's explicit ``predict.*`` settings win over the tuned ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2

from toothseg.run.family import FoldDir
from toothseg.run.folder import RunDir

log = logging.getLogger("toothseg")


@dataclass(frozen=True)
class Tuning:
    weights: dict[str, float]
    fusion: dict
    tuned: dict | None  # threshold, postprocess and the OOF Dice they gain; None without OOF maps


def tune_on_oof(run: RunDir, fold_dirs: dict[str, list[Path]], cv_dice: dict[str, float | None]) -> Tuning:
    """Fusion weights, then threshold + post-processing, on the OOF maps every tag has for labelled images."""
    from toothseg.data.io import read_mask
    from toothseg.predict.fusion import fuse, tune_tag_weights
    from toothseg.predict.threshold import tune

    names = list(fold_dirs)
    equal = Tuning({n: 1.0 / len(names) for n in names}, {"method": "equal (no OOF)"}, None)
    gt_keys = {s.key: s.mask_path for s in run.read_samples() if s.mask_path} if run.samples.is_file() else {}
    per_tag = {n: {k: p for fd in dirs for k, p in FoldDir(fd).oof_maps().items() if k in gt_keys}
               for n, dirs in fold_dirs.items()}
    keys = sorted(set.intersection(*(set(v) for v in per_tag.values()))) if per_tag else []
    if not keys:
        log.warning("%s: no out-of-fold predictions with ground truth; threshold 0.5 and no post-processing", run.root)
        return equal
    gts, oof = [], {n: [] for n in names}
    for key in keys:
        gt = read_mask(gt_keys[key])
        maps = {n: cv2.imread(str(per_tag[n][key]), cv2.IMREAD_GRAYSCALE) for n in names}
        bad = [n for n, m in maps.items() if m is None or m.shape != gt.shape]
        if bad:
            log.warning("%s: OOF map of %s unreadable or not at the mask's size; left out of tuning", key, bad[0])
            continue
        gts.append(gt)
        for n in names:
            oof[n].append(maps[n])
    if not gts:
        return equal
    weights, fusion_info = tune_tag_weights(oof, gts, cv_dice)
    fused = [fuse([oof[n][i] for n in names], [weights[n] for n in names]) for i in range(len(gts))]
    tuned = tune(fused, gts)
    tuned["oof"]["keys_source"] = "train/<tag>/fold*/oof + samples.csv masks"
    return Tuning(weights, fusion_info, tuned)


def predict_settings(run: RunDir, tuned: dict | None) -> dict:
    """threshold, postprocess, tta, config and ``fixed_by_config`` (the run config's settings that beat tuning)."""
    out = {"threshold": tuned["threshold"] if tuned else 0.5,
           "postprocess": dict(tuned["postprocess"]) if tuned else {"min_component": 0, "fill_holes": False},
           "fixed_by_config": {}, "tta": ["hflip"], "config": None}
    if run.config.is_file():
        c = run.load_config()
        out["config"], out["tta"] = c.model_dump(mode="json"), list(c.predict.tta)
        if c.predict.threshold is not None:
            out["threshold"] = out["fixed_by_config"]["threshold"] = float(c.predict.threshold)
        for k in ("min_component", "fill_holes"):
            v = getattr(c.predict, k)
            if v is not None:
                out["postprocess"][k] = out["fixed_by_config"][k] = v
    return out
