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

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toothseg.config import Config, ModelConfig
from toothseg.data.layout import read_index
from toothseg.errors import ConfigError, InputError
from toothseg.rundir import RunDir, open_run, read_json, write_json

log = logging.getLogger("toothseg")

SCHEDULES = ("labelled", "labelled-continue", "pretrain", "mix", "pretrain-mix", "consistency")


@dataclass(frozen=True)
class Stage:
    """One training stage of a schedule: which data it sees (labelled, offline pseudo-labelled, the unlabelled pool
    online) and whether it starts from the previous stage."""

    name: str
    labelled: bool
    pseudo: bool
    init_from_previous: bool = False
    unlabelled: bool = False


def plan(schedule: str) -> list[Stage]:
    """The stages of ``schedule``."""
    stages = {
        "labelled": [Stage("train", labelled=True, pseudo=False)],
        "labelled-continue": [Stage("train", labelled=True, pseudo=False)],
        "consistency": [Stage("train", labelled=True, pseudo=False, unlabelled=True)],
        "pretrain": [Stage("pretrain", False, True), Stage("finetune", True, False, init_from_previous=True)],
        "mix": [Stage("train", labelled=True, pseudo=True)],
        "pretrain-mix": [Stage("pretrain", False, True), Stage("finetune", True, True, init_from_previous=True)],
    }
    if schedule not in stages:
        raise ConfigError(f"pseudo.schedule='{schedule}' is unknown; choose one of: {', '.join(SCHEDULES)}")
    return stages[schedule]


def uses_pseudo_labels(run: str | Path, schedule: str | None = None) -> bool:
    """Whether ``schedule`` (default: the run's ``pseudo.schedule``) trains on offline pseudo-labels."""
    name = schedule or open_run(run).load_config().pseudo.schedule
    return any(st.pseudo for st in plan(name))


def _seconds(hhmmss: str) -> int:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return h * 3600 + m * 60 + s


def _hhmmss(seconds: float) -> str:
    s = max(1, int(round(seconds)))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def stage_budget(cfg: Config, stage: Stage, n_stages: int, max_time: str | None = None) -> dict[str, Any]:
    """Epochs, wall-clock and step budget of one stage.

    Pretraining runs ``pseudo.pretrain_epochs`` epochs; other stages ``train.epochs``. With ``pseudo.pretrain_share``
    > 0 a two-stage schedule splits one model's ``max_time`` / ``max_steps`` between its stages, so every schedule
    costs the same compute (the fair comparison); with 0 each stage gets the whole budget.
    """
    share = 1.0
    if n_stages > 1 and cfg.pseudo.pretrain_share > 0:
        share = cfg.pseudo.pretrain_share if stage.name == "pretrain" else 1.0 - cfg.pseudo.pretrain_share
    budget_time = max_time or cfg.train.max_time
    steps = cfg.train.max_steps
    return {
        "epochs": cfg.pseudo.pretrain_epochs if stage.name == "pretrain" else cfg.train.epochs,
        "max_time": _hhmmss(_seconds(budget_time) * share) if budget_time else None,
        "max_steps": max(1, int(math.floor(steps * share))) if steps > 0 else -1,
    }


def read_folds(run: RunDir) -> dict[int, dict[str, list[str]]]:
    path = run.require(run.folds, "prepare")
    try:
        raw = read_json(path)
        return {int(k): {"train": list(v["train"]), "val": list(v["val"])} for k, v in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(path, f"not a folds file ({exc.__class__.__name__})", "rerun 'toothseg prepare'") from None


def labelled_items(run: RunDir, keys: list[str]) -> list:
    """TrainItems for labelled keys (from samples.csv); a key without a mask is an error in folds.json."""
    from toothseg.train.dataset import TrainItem

    by_key = {s.key: s for s in read_index(run.require(run.samples, "prepare"))}
    out = []
    for k in keys:
        s = by_key.get(k)
        if s is None or s.mask_path is None:
            raise InputError(run.folds, f"fold key '{k}' is not a labelled sample in samples.csv",
                             "rerun 'toothseg prepare' so folds.json and samples.csv agree")
        out.append(TrainItem(k, s.image_path, s.mask_path))
    return out


def pseudo_items(run: RunDir, pseudo_dir: Path, soft: bool = False, weight: float = 1.0,
                 pixel_confidence: bool = False) -> list:
    """TrainItems for the selected rows of ``pseudo_dir/scores.csv`` (hard masks, or soft maps to distil on);
    with ``pixel_confidence`` each carries its soft map, from which the dataset marks the confident pixels."""
    from toothseg.train.dataset import TrainItem

    scores = pseudo_dir / "scores.csv"
    if not scores.is_file():
        raise InputError(scores, "no pseudo-labels", f"run 'toothseg pseudo-label {run.root}' first")
    by_key = {s.key: s for s in read_index(run.require(run.samples, "prepare"))}
    out = []
    with scores.open(newline="") as f:
        for row in csv.DictReader(f):
            if str(row.get("selected", "")).strip().lower() not in ("1", "true"):
                continue
            key = row["key"]
            if key not in by_key:
                raise InputError(scores, f"key '{key}' is not in samples.csv",
                                 f"rerun 'toothseg pseudo-label {run.root} --overwrite'")
            src, iid = key.split("/", 1)
            soft_p = pseudo_dir / "soft" / src / f"{iid}.png"
            out.append(TrainItem(key, by_key[key].image_path, pseudo_dir / "hard" / src / f"{iid}.png",
                                 soft_p if soft else None, pseudo=True, weight=weight,
                                 confidence_path=soft_p if pixel_confidence else None))
    return out


def unlabelled_items(run: RunDir) -> list:
    """TrainItems (image only) of the run's unlabelled pool (pool.py: copies of labelled images excluded)."""
    from toothseg.pseudo.pool import unlabelled_pool
    from toothseg.train.dataset import TrainItem

    pool = unlabelled_pool(run)
    if not pool.samples:
        raise InputError(run.samples, f"no unlabelled image for consistency training ({len(pool.skipped)} skipped "
                         "as copies of labelled images or dropped)",
                         "add unlabelled X-rays (DIR/unlabelled/) and rerun 'toothseg prepare'")
    return [TrainItem(s.key, s.image_path, pseudo=True) for s in pool.samples]


ARCH_KEYS = ("name", "encoder", "decoder_channels", "extra")  # what must match for a teacher's weights to fit


def teacher_weights(run: RunDir, teacher: str, fold: int, model: ModelConfig | None = None) -> Path | None:
    """The teacher's fold-``fold`` checkpoint to warm-start from; None for a bundle teacher (no per-fold family)
    or a teacher of another architecture than ``model`` (the student's)."""
    if teacher == "bundle":
        log.warning("teacher 'bundle' has no per-fold weights: students start from scratch (set pseudo.teacher "
                    "to a train/<tag> to warm-start them)")
        return None
    info = run.train_dir / teacher / "model.json"
    if model is not None and info.is_file():
        t_arch = {k: (read_json(info).get("model") or {}).get(k) for k in ARCH_KEYS}
        s_arch = {k: v for k, v in model.model_dump(mode="json").items() if k in ARCH_KEYS}
        if t_arch != s_arch:
            log.warning("teacher %s is a %s/%s, the student a %s/%s: students start from scratch (set "
                        "pseudo.teacher to a family of the student's architecture to warm-start them)", teacher,
                        t_arch["name"], t_arch["encoder"], s_arch["name"], s_arch["encoder"])
            return None
    ckpt = run.train_dir / teacher / f"fold{fold}" / "best.ckpt"
    if not ckpt.is_file():
        raise InputError(ckpt, f"teacher '{teacher}' has no fold {fold} weights to warm-start from",
                         f"train fold {fold} of the teacher first or set pseudo.warm_start=false")
    return ckpt


def student_tag(teacher_tag: str, schedule: str, soft: bool, round_: int) -> str:
    """train/<tag> of a schedule's students: the base teacher tag plus schedule, '-soft' and '-r<round>' (round > 1)."""
    base = teacher_tag.removesuffix("-labelled")
    return f"{base}-{schedule}" + ("-soft" if soft else "") + (f"-r{round_}" if round_ > 1 else "")


def trained_tags(run: RunDir) -> dict[str, dict]:
    """{tag: model.json} of every trained model family in RUN/train."""
    out: dict[str, dict] = {}
    if run.train_dir.is_dir():
        for p in sorted(run.train_dir.glob("*/model.json")):
            info = read_json(p)
            out[str(info.get("tag", p.parent.name))] = info
    return out


def default_teacher(run: RunDir) -> str:
    """The supervised model family (no schedule) with the best CV Dice."""
    tags = {t: i for t, i in trained_tags(run).items() if i.get("schedule") in (None, "labelled")}
    if not tags:
        raise InputError(run.train_dir, "no trained supervised model (train/<tag>/model.json)",
                         f"run 'toothseg train {run.root}' first or set pseudo.teacher")
    return max(sorted(tags), key=lambda t: tags[t].get("cv_dice") or 0.0)


def cv_metrics(fold_dirs: list[Path]) -> dict[str, float | int]:
    """Mean per-image Dice / IoU / HD95 over the folds' oof.csv files (each image once, out of fold)."""
    rows = []
    for fd in fold_dirs:
        p = fd / "oof.csv"
        if not p.is_file():
            raise InputError(p, "fold has no out-of-fold scores", "re-run this fold's training")
        with p.open(newline="") as f:
            rows += list(csv.DictReader(f))
    out: dict[str, float | int] = {"n_images": len(rows)}
    for m in ("dice", "iou", "hd95"):
        vals = [float(r[m]) for r in rows if r.get(m) not in (None, "", "nan")]
        out[m] = round(sum(vals) / len(vals), 6) if vals else float("nan")
    return out


def balance(labelled: list, pseudo: list, share: float) -> list:
    """Labelled items repeated (whole copies) until they make up at least ``share`` of labelled + pseudo.

    Without it a few labelled images drown among many pseudo-labelled ones and the student mostly copies its
    teacher's errors (seen once in the 10 % tufts scenario; not yet measured at equal steps: bench/RESULTS.md).
    """
    if not labelled or not pseudo or share <= 0:
        return list(labelled)
    need = share / (1.0 - share) * len(pseudo)
    return list(labelled) * max(1, math.ceil(need / len(labelled) - 1e-9))


def _fit_stages(cfg: Config, stages: list[Stage], lab: list, val: list, pseudo: list, tag_dir: Path, fold: int,
                max_time: str | None, resume: bool, warm: Path | None = None, unlabelled: list | None = None) -> Path:
    """Train one fold through the schedule's stages; returns the final stage's folder (RUN/train/<tag>/fold<k>).

    ``warm``: the teacher's fold checkpoint every stage that does not continue a previous one starts from.
    ``unlabelled``: the pool an ``unlabelled`` (consistency) stage pairs with its labelled images.
    """
    from toothseg.pseudo.consistency import ConsistencyModule
    from toothseg.train.fit import fit_model
    from toothseg.train.engine import score_fold
    from toothseg.train.module import SegModule

    prev: Path | None = None
    final = tag_dir / f"fold{fold}"
    for i, st in enumerate(stages):
        out = final if i == len(stages) - 1 else tag_dir / st.name / f"fold{fold}"
        lab_st = balance(lab, pseudo, cfg.pseudo.labelled_share) if st.labelled and st.pseudo else lab
        items = (lab_st if st.labelled else []) + (pseudo if st.pseudo else [])
        if st.pseudo and not pseudo:
            raise InputError(tag_dir, f"stage '{st.name}' needs pseudo-labels but none is selected",
                             "lower pseudo.select_value or use pseudo.select=all")
        done = out / "stage.json"
        if resume and done.is_file() and (out / "best.ckpt").is_file():
            log.info("fold %s %s: done before, reused (%s)", fold, st.name, out)
            prev = out / "best.ckpt"
            continue
        budget = stage_budget(cfg, st, len(stages), max_time)
        scfg = cfg.model_copy(deep=True)
        scfg.train.max_steps = budget["max_steps"]
        log.info("fold %s %s: %d labelled (incl. repeats) + %d pseudo items, budget %s", fold, st.name,
                 len(lab_st) if st.labelled else 0, len(pseudo) if st.pseudo else 0, budget)
        init = prev if st.init_from_previous else warm
        fit_model(scfg, items, val, out, init_weights=init, max_time=budget["max_time"], epochs=budget["epochs"],
                  resume=resume, unlabelled_items=unlabelled if st.unlabelled else None,
                  module_cls=ConsistencyModule if st.unlabelled else SegModule)
        if i == len(stages) - 1:
            score_fold(cfg, out / "best.ckpt", val, out)  # oof.csv + oof/ maps, as supervised training writes
        write_json(done, {"stage": st.name, "labelled": st.labelled, "pseudo": st.pseudo, "budget": budget,
                          "labelled_copies": len(lab_st) // max(1, len(lab)) if st.labelled else 0,
                          "n_train": len(items), "n_val": len(val), "init": str(init) if init else None,
                          "n_unlabelled": len(unlabelled or []) if st.unlabelled else 0})
        prev = out / "best.ckpt"
    return final


def pseudo_dir_for_round(run: RunDir, round_: int) -> Path:
    """RUN/pseudo for round 1 (the 'pseudo-label' verb's output), RUN/pseudo/round<r> after that."""
    return run.pseudo_dir if round_ == 1 else run.pseudo_dir / f"round{round_}"


def _ensure_pseudo(run: RunDir, teacher: str, out: Path, folds: list[int] | None) -> None:
    """Pseudo-label with ``teacher`` unless ``out`` already holds labels from that teacher."""
    from toothseg.pseudo.label import pseudo_label

    info = out / "pseudo.json"
    if info.is_file() and read_json(info).get("teacher") == teacher and (out / "scores.csv").is_file():
        log.info("pseudo-labels in %s are from teacher %s: reused", out, teacher)
        return
    pseudo_label(run.root, teacher=teacher, out=out, folds=folds, overwrite=True)


def retrain(run: str | Path, schedule: str | None = None, rounds: int | None = None, soft: bool | None = None,
            folds: list[int] | None = None, teacher: str | None = None, max_time: str | None = None,
            resume: bool = True) -> dict[str, Any]:
    """Train students with a pseudo-label schedule for every fold (and round); returns the per-round CV metrics.

    Arguments left None come from the run's config (``pseudo.*``); ``max_time`` overrides ``train.max_time``.
    """
    from toothseg.train.engine import write_model_json

    rd = open_run(run)
    cfg = rd.load_config()
    stages = plan(schedule or cfg.pseudo.schedule)  # checks the name before it is assigned
    if rounds is not None and rounds < 1:
        raise ConfigError(f"rounds={rounds}: pseudo.rounds must be >= 1 (1 = one teacher -> student round)")
    cfg.pseudo.schedule = schedule or cfg.pseudo.schedule
    cfg.pseudo.rounds = rounds or cfg.pseudo.rounds
    cfg.pseudo.soft = cfg.pseudo.soft if soft is None else soft
    fold_map = read_folds(rd)
    fold_ids = sorted(fold_map) if folds is None else list(folds)
    bad = [k for k in fold_ids if k not in fold_map]
    if bad:
        raise ConfigError(f"fold {bad[0]} is not in {rd.folds} (folds {sorted(fold_map)}); pick existing folds")
    uses_pseudo = any(st.pseudo for st in stages)
    has_teacher = cfg.pseudo.schedule != "labelled"
    base = teacher or cfg.pseudo.teacher or (default_teacher(rd) if has_teacher else None)
    if base is None:  # labelled-only: named after the model, no teacher needed
        from toothseg.train.engine import model_tag

        base = model_tag(cfg.model, (cfg.model.scales or cfg.train.scales)[0])
    n_rounds = cfg.pseudo.rounds if uses_pseudo else 1
    current_teacher = base
    summary: dict[str, Any] = {"schedule": cfg.pseudo.schedule, "soft": cfg.pseudo.soft, "folds": fold_ids,
                               "rounds": []}
    for r in range(1, n_rounds + 1):
        pdir = pseudo_dir_for_round(rd, r)
        p_items: list = []
        if uses_pseudo:
            _ensure_pseudo(rd, current_teacher, pdir, fold_ids)
            p_items = pseudo_items(rd, pdir, soft=cfg.pseudo.soft, weight=cfg.pseudo.pseudo_weight,
                                   pixel_confidence=cfg.pseudo.pixel_confidence)
        u_items = unlabelled_items(rd) if any(st.unlabelled for st in stages) else None
        tag = student_tag(base, cfg.pseudo.schedule, cfg.pseudo.soft, r)
        tag_dir = rd.train_dir / tag
        fold_dirs, warmed = [], []
        p = cfg.pseudo
        for k in fold_ids:
            lab = labelled_items(rd, fold_map[k]["train"])
            val = labelled_items(rd, fold_map[k]["val"])
            warm = teacher_weights(rd, current_teacher, k, cfg.model) if has_teacher and p.warm_start else None
            warmed.append(warm is not None)
            fold_dirs.append(_fit_stages(cfg, stages, lab, val, p_items, tag_dir, k, max_time, resume, warm,
                                         u_items))
        cv = cv_metrics(fold_dirs)
        write_model_json(tag_dir, tag, cfg.model, (cfg.model.scales or cfg.train.scales)[0], cfg.train.resize, extra={
            "schedule": p.schedule, "soft": p.soft, "round": r, "teacher": current_teacher if has_teacher else None,
            "pseudo_dir": str(pdir) if uses_pseudo else None, "n_pseudo": len(p_items),
            "n_unlabelled": len(u_items or []), "pretrain_share": p.pretrain_share,
            "warm_start": bool(warmed) and all(warmed), "pixel_confidence": p.pixel_confidence,
            "pseudo_strong_aug": p.pseudo_strong_aug})
        log.info("%s: CV Dice %.4f IoU %.4f HD95 %.2f over %d images", tag, cv["dice"], cv["iou"], cv["hd95"],
                 cv["n_images"])
        summary["rounds"].append({"round": r, "tag": tag, "teacher": current_teacher if has_teacher else None,
                                  "n_pseudo": len(p_items), **cv})
        current_teacher = tag
    summary["tag"] = summary["rounds"][-1]["tag"]
    return summary
