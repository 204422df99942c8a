"""`toothseg suggest RUN`: rank the unlabelled X-rays by how much a label would teach the bundle.

Per image: every bundle member x view (the image and its mirror) predicts; their disagreement and the fused map's
entropy make the uncertainty score, and the encoder's pooled features describe the image. Copies (curation's
duplicate groups) count once; the strategy (`toothseg.suggest.strategy`: ``spread`` by default, ``typical`` or
``uncertain``) turns the candidates into picks. Per-image results are cached under the worklist's folder, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from toothseg.atomic import atomic_path
from toothseg.config import Config
from toothseg.data.io import read_image, write_png
from toothseg.data.layout import Sample
from toothseg.errors import ConfigError, InputError, ToothsegError
from toothseg.predict.fusion import fuse
from toothseg.pseudo.pool import unlabelled_pool
from toothseg.run.files import key_png
from toothseg.run.folder import RunDir, open_run, setup_logging
from toothseg.suggest.diversity import one_per_group
from toothseg.suggest.features import image_features
from toothseg.suggest.scoring import uncertainty
from toothseg.suggest.strategy import DEFAULT, Pick, check_strategy, pick
from toothseg.suggest.worklist import write_worklist

log = logging.getLogger("toothseg")


def _load_cached(path: Path, stamp: str, need_scores: bool) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["stamp"]) != stamp or (need_scores and "score" not in z.files):
                return None
            return {k: (z[k].astype(np.float32) if k == "features" else float(z[k]))
                    for k in z.files if k != "stamp"}
    except (OSError, ValueError, KeyError):
        return None


def _save_cached(path: Path, stamp: str, rec: dict) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, stamp=np.array(stamp), **{k: np.asarray(v) for k, v in rec.items()})


def _labelled_for_training(rd: RunDir) -> list[Sample]:
    curation = rd.read_curation()
    return [s for s in rd.read_samples() if s.labelled and curation.decision(s.key).use == "train"]


def _item(rank: int, p: Pick, rec: dict, copies: int) -> dict:
    """One worklist row (see `toothseg.suggest.worklist`)."""
    reason = p.reason + (f"; stands for {copies} near-duplicate(s)" if copies else "")
    return {"rank": rank, "key": p.key, "image_path": rec["image_path"], "prediction": rec["prediction"],
            "score": rec["score"], "disagreement": rec["disagreement"], "entropy": rec["entropy"],
            "uncertainty_rank": p.uncertainty_rank, "distance": p.distance, "reason": reason}


def suggest(run: str | Path, n: int = 50, out: str | Path | None = None, bundle: str | Path | None = None,
            folds: list[int] | None = None, oversample: float = 4.0, use_labelled: bool = True,
            threads: int | None = None, strategy: str = DEFAULT) -> dict:
    """Write a worklist of the ``n`` unlabelled images most worth labelling; returns a summary.

    ``out``: the worklist CSV (default RUN/suggest/worklist.csv; the JSON goes beside it). ``bundle``: default
    RUN/bundle. ``strategy``: ``spread`` (seeded draws weighted by uncertainty x squared feature distance from the
    labels and earlier picks), ``typical`` (typical images of the regions no label covers) or ``uncertain``
    (k-center greedy among the ``oversample x n`` most uncertain images).
    ``use_labelled``: count the run's labelled images as already chosen, so picks differ from them too.
    """
    from toothseg.predict.predictor import Predictor, read_or_skip, split_hflip

    strategy = check_strategy(strategy)
    if n < 1:
        raise ConfigError(f"--n {n}: ask for at least one image")
    if oversample < 1:
        raise ConfigError(f"oversample {oversample} must be >= 1")
    rd = open_run(run)
    setup_logging(rd)
    cfg = rd.load_config() if rd.config.is_file() else None
    csv_path = Path(out).expanduser() if out is not None else rd.root / "suggest" / "worklist.csv"
    if csv_path.suffix.lower() != ".csv":
        raise ConfigError(f"--out {csv_path}: give a .csv file name (the JSON is written beside it)")
    work = csv_path.parent / f"{csv_path.stem}.cache"
    pred_dir = csv_path.parent / f"{csv_path.stem}.pred"
    pool = unlabelled_pool(rd, "to rank")
    bundle_path = Path(bundle) if bundle is not None else rd.require(rd.bundle_dir / "bundle.json", "train").parent
    tta, _ = split_hflip(cfg.predict.tta if cfg else [])  # the mirror is always a view of its own here
    pred = Predictor.from_bundle(bundle_path, folds=folds, tta=tta,
                                 threads=threads or (cfg.train.threads if cfg else None))
    b = pred.bundle
    stamp = f"{b.root.resolve()}|{b.meta.get('created')}|{','.join(pred.member_names)}|{tta}"
    weights = [net.weight for net in pred.nets] * 2
    t0 = time.time()
    recs: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for i, s in enumerate(pool.samples):
        cpath = key_png(work, s.key).with_suffix(".npz")
        mask_path = key_png(pred_dir, s.key)
        rec = _load_cached(cpath, stamp, need_scores=True) if mask_path.is_file() else None
        if rec is None:
            if (img := read_or_skip(s, failed, "suggest")) is None:
                continue
            views = pred.member_views(img)
            rec = {**uncertainty(views, weights, pred.threshold), "features": image_features(pred, img)}
            write_png(mask_path, pred.to_mask(np.clip(fuse(list(views), weights), 0.0, 1.0)))
            _save_cached(cpath, stamp, rec)
        recs[s.key] = {**rec, "prediction": str(mask_path.resolve()), "image_path": str(s.image_path)}
        if (i + 1) % 25 == 0:
            log.info("suggest: %d/%d images scored (%.0f s)", i + 1, len(pool.samples), time.time() - t0)
    if not recs:
        raise ToothsegError(f"{rd.root}: none of the {len(pool.samples)} unlabelled images could be read; see the log")

    centres = None
    if use_labelled:
        feats = []
        for s in _labelled_for_training(rd):
            cpath = key_png(work / "labelled", s.key).with_suffix(".npz")
            rec = _load_cached(cpath, stamp, need_scores=False)
            if rec is None:
                try:
                    rec = {"features": image_features(pred, read_image(s.image_path))}
                except InputError as exc:
                    log.warning("suggest: labelled image left out of the diversity reference: %s", exc)
                    continue
                _save_cached(cpath, stamp, rec)
            feats.append(rec["features"])
        centres = np.stack(feats) if feats else None

    keys = sorted(recs, key=lambda k: (-recs[k]["score"], k))
    groups = {k: d.group for k, d in rd.read_curation().items.items()}
    kept, copies = one_per_group(keys, {k: recs[k]["score"] for k in keys}, groups)
    seed = cfg.seed if cfg is not None else Config().seed
    picks = pick(strategy, kept, recs, n, centres, oversample, seed)
    n_copies = Counter(copies.values())
    items = [_item(rank, p, recs[p.key], n_copies[p.key]) for rank, p in enumerate(picks, start=1)]
    meta = {"run": str(rd.root.resolve()), "bundle": str(b.root.resolve()), "bundle_created": b.meta.get("created"),
            "members": pred.member_names, "views": ["image", "hflip"], "threshold": pred.threshold,
            "n": n, "strategy": strategy, "seed": seed, "oversample": oversample, "use_labelled": centres is not None,
            "pool": len(pool.samples), "scored": len(recs), "candidates": len(kept), "duplicates_counted_once": copies,
            "skipped": pool.skipped, "failed": failed, "seconds": round(time.time() - t0, 1)}
    json_path = write_worklist(csv_path, meta, items)
    log.info("suggest: %d of %d unlabelled images picked (%d copies counted once, %d failed) -> %s",
             len(items), len(recs), len(copies), len(failed), csv_path)
    return {**{k: v for k, v in meta.items() if k not in ("duplicates_counted_once", "skipped")},
            "picked": len(items), "copies": len(copies), "csv": str(csv_path), "json": str(json_path)}
