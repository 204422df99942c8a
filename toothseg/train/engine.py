"""`toothseg train RUN`: k-fold training of every configured model at every scale, OOF scoring, hard mining.

For each model in ``[cfg.model] + cfg.models`` and each of its scales (``model.scales`` or else
``cfg.train.scales``; one *tag*, ``<arch>-<encoder>-<h>x<w>``) and each requested fold k, writes
``RUN/train/<tag>/fold<k>/`` (best/last checkpoints, metrics.csv, oof.csv, oof/) and then
``RUN/train/<tag>/model.json`` with the CV means over the folds trained so far. Hard mining
(``train.hard_fraction`` > 0 and ``train.hard_repeat`` > 0) runs once every fold of folds.json has OOF scores: see
`toothseg.train.hard_mining` and `_hard_mining` below.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from toothseg.atomic import atomic_copy
from toothseg.config import Config, ModelConfig, build_config, save_config
from toothseg.durations import format_hhmmss, parse_hhmmss
from toothseg.errors import InputError, ToothsegError
from toothseg.folds_arg import parse_folds
from toothseg.models.pretrained import weights_file
from toothseg.run.family import Family, FoldDir
from toothseg.run.folder import Folds, RunDir, open_run, setup_logging
from toothseg.train.dataset import TrainItem
from toothseg.train.fit import FitResult, has_checkpoints, is_main_process
from toothseg.train.hard_mining import hard_keys, oversample
from toothseg.train.kfold import (SUPERVISED, FoldData, Stage, fit_stage, labelled_items, model_tag, select_folds,
                                  split_items, train_fold, write_model_json)
from toothseg.train.oof import score_fold
from toothseg.train.provenance import check_fold

log = logging.getLogger("toothseg")

HARD_EPOCH_SHARE = 0.2  # the hard-mining fine-tune gets 20% of the epochs (and of the time budget)
HARD_LR_SHARE = 0.3  # ... at 30% of the peak learning rate, no warm-up: it starts from a trained model


def resolve_config(rd: RunDir, preset: str | None, overrides: list[str] | None, max_time: str | None) -> Config:
    """The run's config, optionally re-based on another preset (curation settings kept) and overridden."""
    cfg = rd.load_config()
    if preset is not None or overrides:
        base = cfg.model_dump(mode="json")
        if preset is not None:  # keep what prepare decided; take model/train/... from the preset
            base = {"curate": base["curate"], "seed": base["seed"]}
        cfg = build_config(preset or cfg.preset, rd.config, overrides, mapping=base)
    if max_time is not None:
        parse_hhmmss(max_time, "--max-time")
        cfg.train.max_time = max_time
    return cfg


def _hard_mining(cfg: Config, fam: Family, folds: Folds, items: dict[str, TrainItem], folds_path: Path,
                 mcfg: ModelConfig, scale: tuple[int, int], resume: bool) -> dict | None:
    """Fine-tune each fold's best model with the hardest OOF samples of its training set oversampled; keep the
    result only where it improves that fold's val Dice (both measured the same way, at network resolution)."""
    tc = cfg.train
    if tc.hard_fraction <= 0 or tc.hard_repeat <= 0:
        return None
    if not all(fam.fold(k).oof_csv.is_file() for k in folds):
        log.info("hard mining needs OOF scores from every fold (%d); train --fold all to enable it", len(folds))
        return None
    prev = fam.info().get("hard_mining")
    hard = prev["keys"] if prev and resume else hard_keys(fam.read_oof(only=list(folds)), tc.hard_fraction)
    ft_cfg = cfg.model_copy(deep=True)
    ft_cfg.train.lr = tc.lr * HARD_LR_SHARE
    ft_cfg.train.warmup_epochs = 0.0
    stage = Stage("hard", epochs=max(1, math.ceil(tc.epochs * HARD_EPOCH_SHARE)))
    ft_time = format_hhmmss(max(60, int(parse_hhmmss(tc.max_time) * HARD_EPOCH_SHARE))) if tc.max_time else None
    report: dict = {"fraction": tc.hard_fraction, "repeat": tc.hard_repeat, "keys": hard, "folds": {}}
    for k, split in folds.items():
        fd = fam.fold(k)
        train, val = split_items(items, split, folds_path)
        before = FitResult.from_json(fd.read_fit(), fd.path).best_val_dice
        res = fit_stage(ft_cfg, stage, FoldData(oversample(train, hard, tc.hard_repeat), val),
                        FoldDir(fd.path / "hard"), init=fd.best_ckpt, max_time=ft_time, resume=resume, model_cfg=mcfg,
                        scale=scale)
        if not is_main_process():
            continue
        kept = res.best_val_dice is not None and before is not None and res.best_val_dice > before
        if kept:
            if not fd.before_hard_ckpt.is_file():  # a resumed run may have promoted it already
                atomic_copy(fd.best_ckpt, fd.before_hard_ckpt)
            atomic_copy(res.best_ckpt, fd.best_ckpt)
            score_fold(cfg, fd.best_ckpt, val, fd.path)
        n_hard = sum(1 for it in train if it.key in set(hard))
        report["folds"][str(k)] = {"hard_in_train": n_hard, "val_dice_before": before,
                                   "val_dice_after": res.best_val_dice, "kept": kept}
        log.info("fold %d hard mining: %d hard samples x%d, val Dice %.4f -> %.4f (%s)", k, n_hard, tc.hard_repeat,
                 before or float("nan"), res.best_val_dice or float("nan"), "kept" if kept else "discarded")
    return report


def trained_keys(run: RunDir) -> dict[int, set[str]] | None:
    """Per fold, the labelled keys an earlier run's fold models trained on; None when its folds.json is unreadable."""
    try:
        return {k: set(v["train"]) for k, v in run.read_folds().items()}
    except (ToothsegError, OSError):
        return None


def start_weights(init_run: RunDir, tag: str, k: int, val_keys: list[str],
                  earlier: dict[int, set[str]] | None) -> Path:
    """The checkpoint fold ``k`` of family ``tag`` starts from with ``--init-from``: the same family's fold ``k`` in
    ``init_run``, whose folds trained on ``earlier`` (`trained_keys`). Warns when that model trained on images this
    fold validates on (its val/OOF Dice is then optimistic; scores on a held-out folder are not)."""
    ckpt = init_run.family(tag).fold(k).best_ckpt
    if not ckpt.is_file():
        raise InputError(ckpt, f"--init-from {init_run.root}: no fold {k} model of {tag} to start from",
                         f"train fold {k} of that run with the same model and scale, or train without --init-from")
    seen = None if earlier is None else earlier.get(k, set()) & set(val_keys)
    if seen is None or seen:
        log.warning("[%s] fold %d starts from %s, which trained on %s of this fold's %d validation images: its "
                    "validation and OOF scores are optimistic (scores on a held-out folder are not)", tag, k, ckpt,
                    "an unknown number" if seen is None else len(seen), len(val_keys))
    return ckpt


def train_tag(cfg: Config, rd: RunDir, mcfg: ModelConfig, scale: tuple[int, int], fold_ids: list[int],
              folds: Folds, items: dict[str, TrainItem], resume: bool, overwrite: bool,
              starts: dict[int, Path] | None = None) -> dict:
    """Train folds ``fold_ids`` of one model at one scale (fold k from ``starts[k]`` where given), then its
    model.json and, once every fold has OOF scores, hard mining."""
    fam = rd.family(model_tag(mcfg, scale))
    for k in fold_ids:
        train, val = split_items(items, folds[k], rd.folds)
        log.info("[%s] fold %d: %d train / %d val images", fam.tag, k, len(train), len(val))
        train_fold(cfg, SUPERVISED, FoldData(train, val), fam.fold(k), folds[k], resume=resume, overwrite=overwrite,
                   model_cfg=mcfg, scale=scale, warm=(starts or {}).get(k))
    if not is_main_process():
        return {}
    info = write_model_json(fam, mcfg, scale, cfg.train.resize)
    if set(fold_ids) == set(folds):
        report = _hard_mining(cfg, fam, folds, items, rd.folds, mcfg, scale, resume)
        if report is not None:
            info = write_model_json(fam, mcfg, scale, cfg.train.resize, {"hard_mining": report})
    return info


def train(run: str | Path, fold: int | str = "all", preset: str | None = None, max_time: str | None = None,
          resume: bool = False, overrides: list[str] | None = None, overwrite: bool = False,
          init_from: str | Path | None = None) -> dict:
    """Train RUN's folds for every model and scale; returns ``{"run", "models": {tag: model.json}}``.

    ``init_from``: an earlier run whose fold k of the same model and scale each fold k starts from (fine-tuning it
    on this run's labels, e.g. after `toothseg review` added some), instead of ``model.weights``.
    """
    rd = open_run(run)
    if init_from is not None and not Path(init_from).expanduser().is_dir():
        raise InputError(init_from, "--init-from: no such run folder", "name a run trained earlier with the same "
                         "model and scale")
    init_run = open_run(init_from) if init_from is not None else None
    if init_run is not None and init_run.root.resolve() == rd.root.resolve():
        raise InputError(init_run.root, "--init-from names the run being trained", "name the earlier run folder")
    setup_logging(rd)
    cfg = resolve_config(rd, preset, overrides, max_time)
    folds = rd.read_folds()
    fold_ids = select_folds(folds, parse_folds(fold, "--fold"))
    items = labelled_items(rd)
    for mcfg in [cfg.model, *cfg.models]:
        if mcfg.weights:  # fail before config.yaml is rewritten or anything trains: the weights must be on disk
            weights_file(mcfg)
    # a model's own scales (recipe: SAM at 1024) win
    tags = [(mcfg, tuple(s)) for mcfg in [cfg.model, *cfg.models] for s in mcfg.scales or cfg.train.scales]
    if not overwrite:  # fold models built from another split or other settings are never continued
        for mcfg, scale in tags:
            for k in fold_ids:
                fold_dir = rd.family(model_tag(mcfg, scale)).fold(k).path
                if has_checkpoints(fold_dir):
                    check_fold(fold_dir, k, folds[k], cfg, mcfg)
    # every starting checkpoint is found before anything trains
    earlier = trained_keys(init_run) if init_run is not None else None
    starts = {tag: {k: start_weights(init_run, tag, k, folds[k]["val"], earlier) for k in fold_ids}
              for tag in (model_tag(mcfg, scale) for mcfg, scale in tags)} if init_run is not None else {}
    if is_main_process():
        save_config(cfg, rd.config)
    out: dict = {"run": str(rd.root), "models": {}}
    for mcfg, scale in tags:
        info = train_tag(cfg, rd, mcfg, scale, fold_ids, folds, items, resume, overwrite,
                         starts.get(model_tag(mcfg, scale)))
        if info:
            out["models"][info["tag"]] = info
    if is_main_process():
        from toothseg.predict.bundle_build import build_bundle

        out["bundle"] = str(build_bundle(rd.root))
    return out
