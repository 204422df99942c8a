"""The k-fold training driver: every training stage of every fold goes through `train_fold` / `fit_stage`.

A *plan* is a list of `Stage`s, each seeing part of a fold's `FoldData` (labelled, pseudo-labelled and unlabelled
items) and validated on the fold's labelled validation images only. Supervised training is the plan `SUPERVISED`;
pseudo-label and consistency schedules are plans (`toothseg.pseudo.schedules.plan`) plus their extra items; hard
mining (`toothseg.train.engine`) is one more stage on each fold's best model. A plan's last stage trains the fold
folder (train/<tag>/fold<k>), earlier ones train/<tag>/<stage>/fold<k>; each writes ``stage.json``.
Families are named by `model_tag` and summarised over their folds in model.json by `write_model_json`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toothseg.config import Config, ModelConfig
from toothseg.durations import format_hhmmss, parse_hhmmss
from toothseg.errors import ConfigError, InputError
from toothseg.models.factory import uses_encoder
from toothseg.run.family import Family, FoldDir, summarise
from toothseg.run.folder import Folds, RunDir
from toothseg.train import fit
from toothseg.train.dataset import TrainItem
from toothseg.train.module import SegModule
from toothseg.train.oof import score_fold
from toothseg.train.provenance import record_fold

log = logging.getLogger("toothseg")


@dataclass(frozen=True)
class Stage:
    """One training stage: which data it sees (labelled, offline pseudo-labelled, the unlabelled pool online),
    whether it starts from the previous stage, its epochs (default: ``pseudo.pretrain_epochs`` for "pretrain",
    else ``train.epochs``) and its LightningModule class (default `SegModule`)."""

    name: str
    labelled: bool = True
    pseudo: bool = False
    init_from_previous: bool = False
    unlabelled: bool = False
    epochs: int | None = None
    module: type[SegModule] | None = None


SUPERVISED = [Stage("train")]


@dataclass
class FoldData:
    """The items one fold's stages see."""

    train: list[TrainItem]
    val: list[TrainItem]
    pseudo: list[TrainItem] = field(default_factory=list)
    unlabelled: list[TrainItem] | None = None


def labelled_items(rd: RunDir) -> dict[str, TrainItem]:
    """Every usable labelled item by key, with curation applied (``label-from:<key>`` takes that key's mask)."""
    samples = {s.key: s for s in rd.read_samples()}
    curation = rd.read_curation()
    out: dict[str, TrainItem] = {}
    for key, s in samples.items():
        d = curation.decision(key)
        src = samples.get(d.label_from) if d.label_from is not None else s
        if d.use != "drop" and src is not None and src.mask_path is not None:
            out[key] = TrainItem(key=key, image_path=s.image_path, mask_path=src.mask_path)
    return out


def select_folds(folds: Folds, wanted: list[int] | None, what: str = "--fold") -> list[int]:
    """The fold numbers ``wanted`` (None: every fold of folds.json), each checked against folds.json."""
    if wanted is None:
        return sorted(folds)
    missing = [k for k in wanted if k not in folds]
    if missing:
        raise ConfigError(f"{what} {missing[0]}: folds.json has folds {sorted(folds)}; pass one of them or 'all'")
    return list(wanted)


def split_items(items: dict[str, TrainItem], split: dict[str, list[str]], folds_path: Path) -> tuple[list, list]:
    """(train, val) items of one fold's split; a key without a usable labelled sample is an error in folds.json."""
    missing = [k for k in split["train"] + split["val"] if k not in items]
    if missing:
        raise InputError(folds_path, f"key '{missing[0]}' (+{len(missing) - 1} more) has no usable labelled sample "
                         "in samples.csv/curation.json", "re-run 'toothseg prepare' so the files agree")
    return [items[k] for k in split["train"]], [items[k] for k in split["val"]]


def model_tag(mcfg: ModelConfig, scale: tuple[int, int]) -> str:
    """``<arch>-<encoder>-<h>x<w>``, e.g. ``unet-tu-tf_efficientnetv2_b0-320x640``; families that ignore
    ``model.encoder`` (SAM-ViT) are named ``<name>-<h>x<w>``."""
    size = f"{int(scale[0])}x{int(scale[1])}"
    if not uses_encoder(mcfg):
        return f"{mcfg.name.lower()}-{size}"
    return f"{mcfg.name.lower()}-{mcfg.encoder.replace('/', '_')}-{size}"


def write_model_json(fam: Family, mcfg: ModelConfig, scale: tuple[int, int], resize: str,
                     extra: dict | None = None) -> dict:
    """model.json with the CV means over the folds scored so far (a previous hard-mining report is kept)."""
    folds = [f.k for f in fam.folds() if f.oof_csv.is_file()]
    s = summarise(fam.read_oof())
    info = {"tag": fam.tag, "model": mcfg.model_dump(mode="json"), "scale": [int(scale[0]), int(scale[1])],
            "resize": resize, "folds": folds, "cv_dice": s["dice"], "cv_iou": s["iou"], "cv_hd95": s["hd95"],
            "n_oof": s["n"]}
    old = fam.info()
    if "hard_mining" in old:
        info["hard_mining"] = old["hard_mining"]
    info.update(extra or {})
    fam.write_info(info)
    return info


def stage_budget(cfg: Config, stage: Stage, n_stages: int, max_time: str | None = None) -> dict[str, Any]:
    """Epochs, wall-clock and step budget of one stage.

    With ``pseudo.pretrain_share`` > 0 a two-stage plan splits one model's ``max_time`` / ``max_steps`` between its
    stages, so every schedule costs the same compute (the fair comparison); with 0 each stage gets the whole budget.
    """
    share = 1.0
    if n_stages > 1 and cfg.pseudo.pretrain_share > 0:
        share = cfg.pseudo.pretrain_share if stage.name == "pretrain" else 1.0 - cfg.pseudo.pretrain_share
    budget_time = max_time or cfg.train.max_time
    steps = cfg.train.max_steps
    epochs = stage.epochs or (cfg.pseudo.pretrain_epochs if stage.name == "pretrain" else cfg.train.epochs)
    return {
        "epochs": epochs,
        "max_time": format_hhmmss(max(1, round(parse_hhmmss(budget_time) * share))) if budget_time else None,
        "max_steps": max(1, int(math.floor(steps * share))) if steps > 0 else -1,
    }


def balance(labelled: list, pseudo: list, share: float) -> list:
    """Labelled items repeated (whole copies) until they make up at least ``share`` of labelled + pseudo.

    Without it a few labelled images drown among many pseudo-labelled ones and the student mostly copies its
    teacher's errors (seen once in the 10 % tufts scenario; not yet measured at equal steps: bench/RESULTS.md).
    """
    if not labelled or not pseudo or share <= 0:
        return list(labelled)
    need = share / (1.0 - share) * len(pseudo)
    return list(labelled) * max(1, math.ceil(need / len(labelled) - 1e-9))


def fit_stage(cfg: Config, stage: Stage, data: FoldData, out: FoldDir, *, n_stages: int = 1,
              init: Path | None = None, max_time: str | None = None, resume: bool = False, overwrite: bool = False,
              model_cfg: ModelConfig | None = None, scale: tuple[int, int] | None = None) -> fit.FitResult:
    """Train one stage into ``out`` (a finished stage is reused on ``resume``) and record it in stage.json."""
    if stage.pseudo and not data.pseudo:
        raise InputError(out.path, f"stage '{stage.name}' needs pseudo-labels but none is selected",
                         "lower pseudo.select_value or use pseudo.select=all")
    pseudo = data.pseudo if stage.pseudo else []
    lab = balance(data.train, pseudo, cfg.pseudo.labelled_share) if stage.labelled else []
    items = lab + pseudo
    unlabelled = (data.unlabelled or []) if stage.unlabelled else []
    budget = stage_budget(cfg, stage, n_stages, max_time)
    scfg = cfg.model_copy(deep=True)
    scfg.train.max_steps = budget["max_steps"]
    log.info("%s %s: %d labelled (incl. repeats) + %d pseudo + %d unlabelled items, budget %s", out.path,
             stage.name, len(lab), len(pseudo), len(unlabelled), budget)
    res = fit.fit_model(scfg, items, data.val, out.path, init_weights=init, max_time=budget["max_time"],
                        epochs=budget["epochs"], resume=resume, overwrite=overwrite, model_cfg=model_cfg,
                        scale=scale, unlabelled_items=unlabelled or None, module_cls=stage.module or SegModule)
    if fit.is_main_process():
        out.write_stage({"stage": stage.name, "labelled": stage.labelled, "pseudo": stage.pseudo, "budget": budget,
                         "labelled_copies": len(lab) // max(1, len(data.train)),
                         "n_train": len(items), "n_val": len(data.val), "init": str(init) if init else None,
                         "n_unlabelled": len(unlabelled)})
    return res


def train_fold(cfg: Config, stages: list[Stage], data: FoldData, fold: FoldDir, split: dict[str, list[str]], *,
               resume: bool, overwrite: bool = False, warm: Path | None = None, max_time: str | None = None,
               model_cfg: ModelConfig | None = None, scale: tuple[int, int] | None = None) -> fit.FitResult | None:
    """Train fold ``fold`` through ``stages`` and score it out of fold; returns the last stage's fit (None on
    DDP ranks other than the main one, which write nothing).

    ``warm``: the checkpoint every stage that does not continue the previous one starts from (a teacher's fold).
    ``split``: the fold's keys in folds.json, recorded in built_from.json with the model and training settings.
    """
    mcfg = model_cfg or cfg.model
    if fit.is_main_process():
        record_fold(fold.path.parent, fold.k, split, cfg, mcfg)
    res, prev = None, None
    for i, st in enumerate(stages):
        out = fold if i == len(stages) - 1 else Family(fold.path.parent).stage(st.name).fold(fold.k)
        res = fit_stage(cfg, st, data, out, n_stages=len(stages), init=prev if st.init_from_previous else warm,
                        max_time=max_time, resume=resume, overwrite=overwrite, model_cfg=mcfg, scale=scale)
        prev = out.best_ckpt
    if not fit.is_main_process():
        return None
    if not (resume and fold.oof_csv.is_file() and fold.oof_csv.stat().st_mtime >= fold.best_ckpt.stat().st_mtime):
        s = summarise(score_fold(cfg, fold.best_ckpt, data.val, fold.path))
        log.info("%s OOF (original size): Dice %.4f IoU %.4f HD95 %.1f px", fold.path, s["dice"], s["iou"], s["hd95"])
    return res
