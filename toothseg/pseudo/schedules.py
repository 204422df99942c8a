"""Training schedules that use pseudo-labels, built on the training engine's `fit_model`.

    labelled           labelled images only, from scratch (trains a teacher)
    labelled-continue  the teacher continued on labelled images only (the control arm: same extra time and steps)
    pretrain           pseudo-labelled images first, then fine-tune on labelled images
    mix                labelled + pseudo-labelled images together
    pretrain-mix       pseudo pretraining, then fine-tune on labelled + pseudo (the write-up's best)
    consistency        online weak-to-strong consistency with an EMA teacher on the unlabelled pool (consistency.py)

Every schedule but ``labelled`` has a teacher (the supervised tag that labelled, or ``pseudo.teacher``); with
``pseudo.warm_start`` each student stage that does not continue a previous stage starts from the teacher's fold-k
weights, so the extra budget refines what the teacher knows instead of re-learning it.

For every fold k the student is validated on fold k's *labelled* validation images only, never on pseudo-labels, so
its CV score is comparable with the labelled-only baseline. Pseudo-labels come from the teacher's fold ensemble;
unlabelled copies of labelled images are never pseudo-labelled (pool.py), so no validation label reaches a student
through a duplicate. Iterative rounds: the students' fold ensemble becomes the next round's teacher.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from toothseg.config import ModelConfig
from toothseg.errors import ConfigError, InputError
from toothseg.pseudo.consistency import ConsistencyModule
from toothseg.pseudo.label import default_teacher, pseudo_label
from toothseg.pseudo.pool import unlabelled_pool
from toothseg.run.family import FoldDir, read_oof, summarise
from toothseg.run.folder import RunDir, open_run
from toothseg.run.pseudo_labels import PseudoLabels
from toothseg.train.dataset import TrainItem
from toothseg.train.kfold import (SUPERVISED, FoldData, Stage, labelled_items, model_tag, select_folds, split_items,
                                  train_fold, write_model_json)

log = logging.getLogger("toothseg")

PLANS: dict[str, list[Stage]] = {
    "labelled": SUPERVISED,
    "labelled-continue": SUPERVISED,  # the same stage, warm-started from the teacher
    "pretrain": [Stage("pretrain", False, True), Stage("finetune", True, False, init_from_previous=True)],
    "mix": [Stage("train", labelled=True, pseudo=True)],
    "pretrain-mix": [Stage("pretrain", False, True), Stage("finetune", True, True, init_from_previous=True)],
    "consistency": [Stage("train", labelled=True, pseudo=False, unlabelled=True, module=ConsistencyModule)],
}
SCHEDULES = tuple(PLANS)


def plan(schedule: str) -> list[Stage]:
    """The stages of ``schedule``."""
    if schedule not in PLANS:
        raise ConfigError(f"pseudo.schedule='{schedule}' is unknown; choose one of: {', '.join(SCHEDULES)}")
    return PLANS[schedule]


def uses_pseudo_labels(run: str | Path, schedule: str | None = None) -> bool:
    """Whether ``schedule`` (default: the run's ``pseudo.schedule``) trains on offline pseudo-labels."""
    name = schedule or open_run(run).load_config().pseudo.schedule
    return any(st.pseudo for st in plan(name))


def pseudo_items(run: RunDir, pseudo_dir: Path, soft: bool = False, weight: float = 1.0,
                 pixel_confidence: bool = False) -> list[TrainItem]:
    """TrainItems for the selected rows of ``pseudo_dir/scores.csv`` (hard masks, or soft maps to distil on);
    with ``pixel_confidence`` each carries its soft map, from which the dataset marks the confident pixels."""
    labels = PseudoLabels(Path(pseudo_dir))
    if not labels.scores_csv.is_file():
        raise InputError(labels.scores_csv, "no pseudo-labels", f"run 'toothseg pseudo-label {run.root}' first")
    by_key = {s.key: s for s in run.read_samples()}
    out = []
    for row in (r for r in labels.read_scores() if r.selected):
        if row.key not in by_key:
            raise InputError(labels.scores_csv, f"key '{row.key}' is not in samples.csv",
                             f"rerun 'toothseg pseudo-label {run.root} --overwrite'")
        soft_p = labels.soft(row.key)
        out.append(TrainItem(row.key, by_key[row.key].image_path, labels.hard(row.key), soft_p if soft else None,
                             pseudo=True, weight=weight, confidence_path=soft_p if pixel_confidence else None))
    return out


def unlabelled_items(run: RunDir) -> list[TrainItem]:
    """TrainItems (image only) of the run's unlabelled pool (pool.py: copies of labelled images excluded)."""
    return [TrainItem(s.key, s.image_path, pseudo=True)
            for s in unlabelled_pool(run, "for consistency training").samples]


ARCH_KEYS = ("name", "encoder", "decoder_channels", "extra")  # what must match for a teacher's weights to fit


def teacher_weights(run: RunDir, teacher: str, fold: int, model: ModelConfig | None = None) -> Path | None:
    """The teacher's fold-``fold`` checkpoint to warm-start from; None for a bundle teacher (no per-fold family)
    or a teacher of another architecture than ``model`` (the student's)."""
    if teacher == "bundle":
        log.warning("teacher 'bundle' has no per-fold weights: students start from scratch (set pseudo.teacher "
                    "to a train/<tag> to warm-start them)")
        return None
    fam = run.family(teacher)
    if model is not None and fam.info_file.is_file():
        t_arch = {k: (fam.info().get("model") or {}).get(k) for k in ARCH_KEYS}
        s_arch = {k: v for k, v in model.model_dump(mode="json").items() if k in ARCH_KEYS}
        if t_arch != s_arch:
            log.warning("teacher %s is a %s/%s, the student a %s/%s: students start from scratch (set "
                        "pseudo.teacher to a family of the student's architecture to warm-start them)", teacher,
                        t_arch["name"], t_arch["encoder"], s_arch["name"], s_arch["encoder"])
            return None
    ckpt = fam.fold(fold).best_ckpt
    if not ckpt.is_file():
        raise InputError(ckpt, f"teacher '{teacher}' has no fold {fold} weights to warm-start from",
                         f"train fold {fold} of the teacher first or set pseudo.warm_start=false")
    return ckpt


def student_tag(teacher_tag: str, schedule: str, soft: bool, round_: int) -> str:
    """train/<tag> of a schedule's students: the base teacher tag plus schedule, '-soft' and '-r<round>' (round > 1)."""
    base = teacher_tag.removesuffix("-labelled")
    return f"{base}-{schedule}" + ("-soft" if soft else "") + (f"-r{round_}" if round_ > 1 else "")


def cv_metrics(fold_dirs: list[Path]) -> dict[str, float | int]:
    """Mean per-image Dice / IoU / HD95 over the folds' oof.csv files (each image once, out of fold)."""
    rows = []
    for p in (FoldDir(fd).oof_csv for fd in fold_dirs):
        if not p.is_file():
            raise InputError(p, "fold has no out-of-fold scores", "re-run this fold's training")
        rows += read_oof(p)
    s = summarise(rows)
    return {"n_images": s["n"], **{m: round(s[m], 6) for m in ("dice", "iou", "hd95")}}


def retrain(run: str | Path, schedule: str | None = None, rounds: int | None = None, soft: bool | None = None,
            folds: list[int] | None = None, teacher: str | None = None, max_time: str | None = None,
            resume: bool = True) -> dict[str, Any]:
    """Train students with a pseudo-label schedule for every fold (and round); returns the per-round CV metrics.

    Arguments left None come from the run's config (``pseudo.*``); ``max_time`` overrides ``train.max_time``.
    """
    rd = open_run(run)
    cfg = rd.load_config()
    p = cfg.pseudo
    stages = plan(schedule or p.schedule)  # checks the name before it is assigned
    if rounds is not None and rounds < 1:
        raise ConfigError(f"rounds={rounds}: pseudo.rounds must be >= 1 (1 = one teacher -> student round)")
    p.schedule = schedule or p.schedule
    p.rounds = rounds or p.rounds
    p.soft = p.soft if soft is None else soft
    fold_map = rd.read_folds()
    fold_ids = select_folds(fold_map, folds, "fold")
    uses_pseudo = any(st.pseudo for st in stages)
    has_teacher = p.schedule != "labelled"
    scale = tuple((cfg.model.scales or cfg.train.scales)[0])
    # labelled-only: named after the model, no teacher needed
    base = teacher or p.teacher or (default_teacher(rd) if has_teacher else model_tag(cfg.model, scale))
    current_teacher = base
    summary: dict[str, Any] = {"schedule": p.schedule, "soft": p.soft, "folds": fold_ids, "rounds": []}
    items = labelled_items(rd)
    for r in range(1, (p.rounds if uses_pseudo else 1) + 1):
        labels = rd.pseudo_labels(r)
        p_items: list = []
        if uses_pseudo:
            if labels.read_info().get("teacher") == current_teacher and labels.scores_csv.is_file():
                log.info("pseudo-labels in %s are from teacher %s: reused", labels.path, current_teacher)
            else:
                pseudo_label(rd.root, teacher=current_teacher, out=labels.path, folds=fold_ids, overwrite=True)
            p_items = pseudo_items(rd, labels.path, soft=p.soft, weight=p.pseudo_weight,
                                   pixel_confidence=p.pixel_confidence)
        u_items = unlabelled_items(rd) if any(st.unlabelled for st in stages) else None
        tag = student_tag(base, p.schedule, p.soft, r)
        fam = rd.family(tag)
        round_teacher = current_teacher if has_teacher else None
        warmed = []
        for k in fold_ids:
            lab, val = split_items(items, fold_map[k], rd.folds)
            warm = teacher_weights(rd, current_teacher, k, cfg.model) if has_teacher and p.warm_start else None
            warmed.append(warm is not None)
            train_fold(cfg, stages, FoldData(lab, val, p_items, u_items), fam.fold(k), fold_map[k], resume=resume,
                       warm=warm, max_time=max_time, model_cfg=cfg.model, scale=scale)
        cv = cv_metrics([fam.fold(k).path for k in fold_ids])
        write_model_json(fam, cfg.model, scale, cfg.train.resize, extra={
            "schedule": p.schedule, "soft": p.soft, "round": r, "teacher": round_teacher,
            "pseudo_dir": str(labels.path) if uses_pseudo else None, "n_pseudo": len(p_items),
            "n_unlabelled": len(u_items or []), "pretrain_share": p.pretrain_share,
            "warm_start": bool(warmed) and all(warmed), "pixel_confidence": p.pixel_confidence,
            "pseudo_strong_aug": p.pseudo_strong_aug})
        log.info("%s: CV Dice %.4f IoU %.4f HD95 %.2f over %d images", tag, cv["dice"], cv["iou"], cv["hd95"],
                 cv["n_images"])
        summary["rounds"].append({"round": r, "tag": tag, "teacher": round_teacher, "n_pseudo": len(p_items), **cv})
        current_teacher = tag
    summary["tag"] = summary["rounds"][-1]["tag"]
    return summary
