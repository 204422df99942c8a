"""`toothseg pseudo-label RUN`: a teacher's fold ensemble (with TTA) labels every unlabelled image worth labelling.

Writes, under RUN/pseudo/ (architecture.md): ``soft/<source>/<id>.png`` (fused probability x 255),
``hard/<source>/<id>.png`` (0/255 at the teacher's OOF-tuned threshold and post-processing), ``scores.csv``
(``key,score,<each confidence>[,stability],selected``) and ``pseudo.json`` (teacher, settings, counts). With
``pseudo.stability_keep`` > 0 only the most stable share of the images (ST++, `stability.py`) stays selected.

The teacher is one trained model family (``train/<tag>``): a bundle of that family alone is built in the pseudo
folder, so the threshold is tuned on its out-of-fold maps alone, whatever else the run has trained.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from toothseg.data.io import write_png
from toothseg.errors import ConfigError, InputError, ToothsegError
from toothseg.pseudo.confidence import SCORES, confidence_scores
from toothseg.pseudo.pool import unlabelled_pool
from toothseg.pseudo.select import check_selection, select
from toothseg.run.folder import RunDir, open_run, setup_logging
from toothseg.run.pseudo_labels import PseudoLabels, PseudoRow

log = logging.getLogger("toothseg")


def default_teacher(run: RunDir) -> str:
    """The supervised model family (no schedule) with the best CV Dice."""
    tags = {f.tag: i for f in run.families() if (i := f.info()) and i.get("schedule") in (None, "labelled")}
    if not tags:
        raise InputError(run.train_dir, "no trained supervised model (train/<tag>/model.json)",
                         f"run 'toothseg train {run.root}' first or set pseudo.teacher")
    return max(sorted(tags), key=lambda t: tags[t].get("cv_dice") or 0.0)


WEAK_TEACHER_DICE = 0.7  # a heuristic floor (not measured): below it most pseudo-masks are badly wrong


def teacher_cv_dice(bundle_meta: dict) -> float | None:
    """The teacher's out-of-fold Dice (fused, tuned threshold) from its bundle, None when unknown."""
    oof = bundle_meta.get("oof") or {}
    d = oof.get("dice_with_postprocess", oof.get("dice_tuned_threshold"))
    return float(d) if d is not None else None


def _resolve_teacher(run: RunDir, teacher: str | None, out: Path) -> tuple[str, Path]:
    """The teacher's name and bundle: RUN/bundle for "bundle", else a bundle of ``train/<tag>`` alone (threshold
    tuned on its OOF maps) built at ``out/teacher``."""
    from toothseg.predict.bundle_build import build_bundle

    if teacher == "bundle":
        return "bundle", run.require(run.bundle_dir / "bundle.json", "train").parent
    tag = teacher or default_teacher(run)
    fam = run.family(tag)
    if not fam.info_file.is_file() and not fam.folds(trained=True):
        raise InputError(fam.path, f"teacher '{tag}' has no trained folds", "train it first or set pseudo.teacher")
    return tag, build_bundle(run.root, out=out / "teacher", members=[tag])


def pseudo_label(run: str | Path, teacher: str | None = None, out: str | Path | None = None,
                 folds: list[int] | None = None, confidence: str | None = None, select_method: str | None = None,
                 select_value: float | None = None, overwrite: bool = False, limit: int | None = None) -> dict:
    """Pseudo-label RUN's unlabelled pool with a teacher ensemble; returns a summary (counts, settings, paths).

    ``teacher``: a train/<tag> (default: pseudo.teacher, else the best supervised family) or "bundle" (RUN/bundle).
    ``folds``: use only these folds of the teacher. Unset options come from the run's config (``pseudo.*``).
    """
    from toothseg.predict.fusion import fuse
    from toothseg.predict.postprocess import postprocess
    from toothseg.predict.predictor import Predictor, read_or_skip, split_hflip

    rd = open_run(run)
    setup_logging(rd)
    cfg = rd.load_config()
    conf = confidence or cfg.pseudo.confidence
    if conf not in SCORES:
        raise ConfigError(f"pseudo.confidence='{conf}' is unknown; choose one of: {', '.join(SCORES)}")
    method = select_method or cfg.pseudo.select
    value = cfg.pseudo.select_value if select_value is None else float(select_value)
    check_selection(method, value)
    teacher = teacher or cfg.pseudo.teacher
    labels = PseudoLabels(Path(out)) if out is not None else rd.pseudo_labels()
    out_dir = labels.path
    if labels.scores_csv.is_file() and not overwrite:
        raise ToothsegError(f"{labels.scores_csv}: pseudo-labels exist; pass --overwrite to label again")
    pool = unlabelled_pool(rd, "to pseudo-label")
    samples = pool.samples[:limit] if limit else pool.samples
    labels.clear_maps()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tag, bundle_dir = _resolve_teacher(rd, teacher, out_dir)
    # hflip is run here as separate views, so even a one-fold teacher has two members whose agreement is a score.
    tta, hflip = split_hflip(cfg.predict.tta)
    # train.threads also bounds inference: on a shared CPU, more torch threads than free cores is ~30x slower
    pred = Predictor.from_bundle(bundle_dir, folds=folds, threads=cfg.train.threads, tta=tta)
    thr, pp = pred.threshold, pred.postprocess
    teacher_dice = teacher_cv_dice(pred.bundle.meta if pred.bundle else {})
    if teacher_dice is not None and teacher_dice < WEAK_TEACHER_DICE:
        log.warning("pseudo-label: teacher %s has CV Dice %.3f (< %.2f): its pseudo-labels are mostly noise and "
                    "students trained on them will not beat it; train the teacher longer first", tag, teacher_dice,
                    WEAK_TEACHER_DICE)
    weights = [n.weight for n in pred.nets] * (2 if hflip else 1)
    log.info("pseudo-label: teacher %s (%d members incl. views, TTA %s, threshold %.2f), %d images (%d skipped)",
             tag, len(weights), cfg.predict.tta, thr, len(samples), len(pool.skipped))
    keep = cfg.pseudo.stability_keep
    stable = None
    if keep > 0:
        if tag == "bundle":
            raise ConfigError("pseudo.stability_keep > 0 needs a train/<tag> teacher with training snapshots, not "
                              "'bundle'; pass --teacher TAG or set pseudo.stability_keep=0")
        from toothseg.pseudo.stability import StabilityScorer

        stable = StabilityScorer(rd.train_dir / tag, folds)
    rows: dict[str, dict[str, float]] = {}  # key -> score and each confidence (and stability)
    failed: dict[str, str] = {}
    for i, s in enumerate(samples):
        if (img := read_or_skip(s, failed, "pseudo-label")) is None:
            continue
        members = pred.member_views(img, hflip)
        fused = fuse(list(members), weights)
        hard = postprocess(fused > thr, pp["min_component"], pp["fill_holes"])
        write_png(labels.soft(s.key), np.clip(np.rint(fused * 255.0), 0, 255).astype(np.uint8))
        write_png(labels.hard(s.key), hard.astype(bool))
        sc = confidence_scores(members, fused, thr)
        rows[s.key] = {"score": sc[conf], **sc}
        if stable is not None:
            rows[s.key]["stability"] = stable.score(img)
        if (i + 1) % 50 == 0:
            log.info("pseudo-label: %d/%d images (%.1f s)", i + 1, len(samples), time.time() - t0)
    chosen = select({k: r["score"] for k, r in rows.items()}, method, value)
    if stable is not None:
        steady = select({k: r["stability"] for k, r in rows.items()}, "quantile", keep)
        chosen = {k: bool(v and steady[k]) for k, v in chosen.items()}
    labels.write_scores([PseudoRow(k, chosen[k], r) for k, r in rows.items()],
                        list(SCORES) + (["stability"] if stable is not None else []))
    summary = {
        "teacher": tag, "teacher_cv_dice": teacher_dice, "bundle": str(bundle_dir), "members": len(weights),
        "tta": list(cfg.predict.tta), "threshold": thr, "postprocess": pp, "confidence": conf, "select": method,
        "select_value": value, "stability_keep": keep, "n_images": len(rows), "n_selected": int(sum(chosen.values())),
        "n_skipped": len(pool.skipped), "skipped": pool.skipped, "failed": failed, "seconds": round(time.time() - t0, 1),
        "out": str(out_dir),
    }
    labels.write_info(summary)
    log.info("pseudo-label: %d images labelled, %d selected (%s %s by %s), %d copies/dropped skipped, %.0f s",
             len(rows), summary["n_selected"], method, value, conf, len(pool.skipped), summary["seconds"])
    return summary
