"""`toothseg train RUN`: k-fold training of every configured model at every scale, OOF scoring, hard mining.

For each model in ``[cfg.model] + cfg.models`` and each of its scales (``model.scales`` or else
``cfg.train.scales``; one *tag*,
``<arch>-<encoder>-<h>x<w>``) and each requested fold k, writes ``RUN/train/<tag>/fold<k>/`` (best/last
checkpoints, metrics.csv, oof.csv, oof/) and then ``RUN/train/<tag>/model.json`` with the CV means over the folds
trained so far. Hard mining (``train.hard_fraction`` > 0 and ``train.hard_repeat`` > 0) runs once every fold of
folds.json has OOF scores: see `toothseg.train.hard_mining` and `_hard_mining` below.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path

import torch

from toothseg.config import Config, ModelConfig, build_config, save_config
from toothseg.data.layout import read_index
from toothseg.durations import format_hhmmss, parse_hhmmss
from toothseg.errors import ConfigError, InputError
from toothseg.models.checkpoint import module_from_checkpoint
from toothseg.rundir import RunDir, open_run, read_json, setup_logging, write_json
from toothseg.train.dataset import TrainItem
from toothseg.train.fit import FitResult, fit_model, has_checkpoints, is_main_process
from toothseg.train.hard_mining import hard_keys, oversample
from toothseg.train.oof import read_oof_csv, score_items, summarise
from toothseg.train.provenance import check_fold, record_fold

log = logging.getLogger("toothseg")

HARD_EPOCH_SHARE = 0.2  # the hard-mining fine-tune gets 20% of the epochs (and of the time budget)
HARD_LR_SHARE = 0.3  # ... at 30% of the peak learning rate, no warm-up: it starts from a trained model


def model_tag(mcfg: ModelConfig, scale: tuple[int, int]) -> str:
    """``<arch>-<encoder>-<h>x<w>``, e.g. ``unet-tu-tf_efficientnetv2_b0-320x640``; families that ignore
    ``model.encoder`` (SAM-ViT) are named ``<name>-<h>x<w>``."""
    from toothseg.models.factory import uses_encoder

    size = f"{int(scale[0])}x{int(scale[1])}"
    if not uses_encoder(mcfg):
        return f"{mcfg.name.lower()}-{size}"
    return f"{mcfg.name.lower()}-{mcfg.encoder.replace('/', '_')}-{size}"


# -- config ----------------------------------------------------------------------------------------------------
def resolve_config(rd: RunDir, preset: str | None, overrides: list[str] | None, max_time: str | None) -> Config:
    """The run's config, optionally re-based on another preset (curation settings kept) and overridden."""
    cfg = rd.load_config()
    if preset is not None or overrides:
        with tempfile.TemporaryDirectory() as tmp:
            base = cfg.model_dump(mode="json")
            if preset is not None:  # keep what prepare decided; take model/train/... from the preset
                base = {"curate": base["curate"], "seed": base["seed"]}
            y = Path(tmp) / "config.yaml"
            y.write_text(__import__("yaml").safe_dump(base))
            cfg = build_config(preset or cfg.preset, yaml_path=y, overrides=overrides)
    if max_time is not None:
        parse_hhmmss(max_time, "--max-time")
        cfg.train.max_time = max_time
    return cfg


def check_weights(mcfg: ModelConfig) -> None:
    """Requested pretrained weights must already be on disk (a file or the offline timm/HF cache)."""
    from toothseg.models.pretrained import cached_timm_weights

    if not mcfg.weights:
        return
    if mcfg.weights == "cache":
        if not mcfg.encoder.startswith("tu-") or cached_timm_weights(mcfg.encoder[3:]) is None:
            raise ConfigError(f"model.weights=cache: no cached weights for encoder '{mcfg.encoder}' (looked in the "
                              "Hugging Face cache, offline); download them on a connected machine or pass a file")
    elif not Path(mcfg.weights).expanduser().is_file():
        raise ConfigError(f"{mcfg.weights}: weights file not found; pass an existing .pth/.safetensors file or "
                          "omit model.weights to train from scratch")


# -- items -----------------------------------------------------------------------------------------------------
def labelled_items(rd: RunDir) -> dict[str, TrainItem]:
    """Every usable labelled item by key, with curation applied (``label-from:<key>`` takes that key's mask)."""
    samples = {s.key: s for s in read_index(rd.samples)}
    items_meta = read_json(rd.curation).get("items", {}) if rd.curation.is_file() else {}
    out: dict[str, TrainItem] = {}
    for key, s in samples.items():
        use = str(items_meta.get(key, {}).get("use", "train"))
        mask = s.mask_path
        if use == "drop":
            continue
        if use.startswith("label-from:"):
            src = samples.get(use.split(":", 1)[1])
            mask = src.mask_path if src is not None else None
        if mask is not None:
            out[key] = TrainItem(key=key, image_path=s.image_path, mask_path=mask)
    return out


def read_folds(rd: RunDir) -> dict[int, dict[str, list[str]]]:
    rd.require(rd.folds, "prepare")
    raw = read_json(rd.folds)
    try:
        return {int(k): {"train": list(v["train"]), "val": list(v["val"])} for k, v in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(rd.folds, "not of the form {\"0\": {\"train\": [keys], \"val\": [keys]}}",
                         "re-create it with 'toothseg prepare'") from None


def select_folds(folds: dict[int, dict], fold: int | str) -> list[int]:
    if str(fold) == "all":
        return sorted(folds)
    try:
        k = int(fold)
    except ValueError:
        raise ConfigError(f"--fold '{fold}': pass a fold number or 'all'") from None
    if k not in folds:
        raise ConfigError(f"--fold {k}: folds.json has folds {sorted(folds)}; pass one of them or 'all'")
    return [k]


def split_items(items: dict[str, TrainItem], split: dict[str, list[str]], folds_path: Path) -> tuple[list, list]:
    missing = [k for k in split["train"] + split["val"] if k not in items]
    if missing:
        raise InputError(folds_path, f"key '{missing[0]}' (+{len(missing) - 1} more) has no usable labelled sample "
                         "in samples.csv/curation.json", "re-run 'toothseg prepare' so the files agree")
    return [items[k] for k in split["train"]], [items[k] for k in split["val"]]


# -- one tag ---------------------------------------------------------------------------------------------------
def _device(cfg: Config) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and cfg.train.accelerator != "cpu" else "cpu")


def score_fold(cfg: Config, ckpt: Path, val: list[TrainItem], fold_dir: Path) -> list[dict]:
    """OOF scores of ``ckpt`` on ``val`` at the original resolution -> fold_dir/oof.csv + oof/."""
    module = module_from_checkpoint(ckpt)
    model = module.model.to(_device(cfg)).eval()
    hp = module.hparams
    if (fold_dir / "oof").is_dir():
        shutil.rmtree(fold_dir / "oof")
    return score_items(model, val, tuple(hp["scale"]), hp["resize"], fold_dir)


def write_model_json(tag_dir: Path, tag: str, mcfg: ModelConfig, scale: tuple[int, int], resize: str,
                     extra: dict | None = None) -> dict:
    folds, rows = [], []
    for fd in sorted(tag_dir.glob("fold*/oof.csv")):
        name = fd.parent.name[4:]
        if name.isdigit():
            folds.append(int(name))
            rows += read_oof_csv(fd)
    s = summarise(rows)
    info = {"tag": tag, "model": mcfg.model_dump(mode="json"), "scale": [int(scale[0]), int(scale[1])],
            "resize": resize, "folds": sorted(folds), "cv_dice": s["dice"], "cv_iou": s["iou"],
            "cv_hd95": s["hd95"], "n_oof": s["n"]}
    old = read_json(tag_dir / "model.json") if (tag_dir / "model.json").is_file() else {}
    if "hard_mining" in old:
        info["hard_mining"] = old["hard_mining"]
    info.update(extra or {})
    write_json(tag_dir / "model.json", info)
    return info


def _hard_mining(cfg: Config, tag_dir: Path, folds: dict[int, dict], items: dict[str, TrainItem],
                 folds_path: Path, mcfg: ModelConfig, scale: tuple[int, int], resume: bool) -> dict | None:
    """Fine-tune each fold's best model with the hardest OOF samples of its training set oversampled; keep the
    result only where it improves that fold's val Dice (both measured the same way, at network resolution)."""
    tc = cfg.train
    if tc.hard_fraction <= 0 or tc.hard_repeat <= 0:
        return None
    if not all((tag_dir / f"fold{k}" / "oof.csv").is_file() for k in folds):
        log.info("hard mining needs OOF scores from every fold (%d); train --fold all to enable it", len(folds))
        return None
    rows = [r for k in folds for r in read_oof_csv(tag_dir / f"fold{k}" / "oof.csv")]
    prev = read_json(tag_dir / "model.json").get("hard_mining") if (tag_dir / "model.json").is_file() else None
    hard = prev["keys"] if prev and resume else hard_keys(rows, tc.hard_fraction)
    ft_cfg = cfg.model_copy(deep=True)
    ft_cfg.train.lr = tc.lr * HARD_LR_SHARE
    ft_cfg.train.warmup_epochs = 0.0
    ft_epochs = max(1, math.ceil(tc.epochs * HARD_EPOCH_SHARE))
    ft_time = None
    if tc.max_time:
        ft_time = format_hhmmss(max(60, int(parse_hhmmss(tc.max_time) * HARD_EPOCH_SHARE)))
    report: dict = {"fraction": tc.hard_fraction, "repeat": tc.hard_repeat, "keys": hard, "folds": {}}
    for k, split in folds.items():
        fd = tag_dir / f"fold{k}"
        train, val = split_items(items, split, folds_path)
        before = FitResult.from_json(read_json(fd / "fit.json"), fd).best_val_dice
        res = fit_model(ft_cfg, oversample(train, hard, tc.hard_repeat), val, fd / "hard",
                        init_weights=fd / "best.ckpt", max_time=ft_time, resume=resume, epochs=ft_epochs,
                        model_cfg=mcfg, scale=scale)
        if not is_main_process():
            continue
        kept = res.best_val_dice is not None and before is not None and res.best_val_dice > before
        if kept:
            if not (fd / "best_before_hard.ckpt").is_file():  # a resumed run may have promoted it already
                shutil.copyfile(fd / "best.ckpt", fd / "best_before_hard.ckpt")
            shutil.copyfile(res.best_ckpt, fd / "best.ckpt")
            score_fold(cfg, fd / "best.ckpt", val, fd)
        n_hard = sum(1 for it in train if it.key in set(hard))
        report["folds"][str(k)] = {"hard_in_train": n_hard, "val_dice_before": before,
                                   "val_dice_after": res.best_val_dice, "kept": kept}
        log.info("fold %d hard mining: %d hard samples x%d, val Dice %.4f -> %.4f (%s)", k, n_hard, tc.hard_repeat,
                 before or float("nan"), res.best_val_dice or float("nan"), "kept" if kept else "discarded")
    return report


def train_tag(cfg: Config, rd: RunDir, mcfg: ModelConfig, scale: tuple[int, int], fold_ids: list[int],
              folds: dict[int, dict], items: dict[str, TrainItem], resume: bool, overwrite: bool) -> dict:
    tag = model_tag(mcfg, scale)
    tag_dir = rd.train_dir / tag
    for k in fold_ids:
        fd = tag_dir / f"fold{k}"
        train, val = split_items(items, folds[k], rd.folds)
        log.info("[%s] fold %d: %d train / %d val images", tag, k, len(train), len(val))
        if is_main_process():
            record_fold(tag_dir, k, folds[k], cfg, mcfg)
        res = fit_model(cfg, train, val, fd, resume=resume, model_cfg=mcfg, scale=scale, overwrite=overwrite)
        if not is_main_process():
            continue
        if not (resume and (fd / "oof.csv").is_file() and (fd / "oof.csv").stat().st_mtime >= res.best_ckpt.stat().st_mtime):
            rows = score_fold(cfg, res.best_ckpt, val, fd)
            s = summarise(rows)
            log.info("[%s] fold %d OOF (original size): Dice %.4f IoU %.4f HD95 %.1f px", tag, k, s["dice"],
                     s["iou"], s["hd95"])
    if not is_main_process():
        return {}
    info = write_model_json(tag_dir, tag, mcfg, scale, cfg.train.resize)
    if set(fold_ids) == set(folds):
        report = _hard_mining(cfg, tag_dir, folds, items, rd.folds, mcfg, scale, resume)
        if report is not None:
            info = write_model_json(tag_dir, tag, mcfg, scale, cfg.train.resize, {"hard_mining": report})
    return info


# -- the verb --------------------------------------------------------------------------------------------------
def train(run: str | Path, fold: int | str = "all", preset: str | None = None, max_time: str | None = None,
          resume: bool = False, overrides: list[str] | None = None, overwrite: bool = False) -> dict:
    """Train RUN's folds for every model and scale; returns ``{"run", "models": {tag: model.json}}``."""
    rd = open_run(run)
    setup_logging(rd)
    cfg = resolve_config(rd, preset, overrides, max_time)
    folds = read_folds(rd)
    fold_ids = select_folds(folds, fold)
    items = labelled_items(rd)
    for mcfg in [cfg.model] + list(cfg.models):
        check_weights(mcfg)  # fail before config.yaml is rewritten or anything trains
    if not overwrite:  # fold models built from another split or other settings are never continued
        for mcfg in [cfg.model] + list(cfg.models):
            for scale in mcfg.scales or cfg.train.scales:
                tag_dir = rd.train_dir / model_tag(mcfg, tuple(scale))
                for k in fold_ids:
                    if has_checkpoints(tag_dir / f"fold{k}"):
                        check_fold(tag_dir / f"fold{k}", k, folds[k], cfg, mcfg)
    if is_main_process():
        save_config(cfg, rd.config)
    out: dict = {"run": str(rd.root), "models": {}}
    for mcfg in [cfg.model] + list(cfg.models):
        for scale in mcfg.scales or cfg.train.scales:  # a model's own scales (recipe: SAM at 1024) win
            info = train_tag(cfg, rd, mcfg, tuple(scale), fold_ids, folds, items, resume, overwrite)
            if info:
                out["models"][info["tag"]] = info
    if is_main_process():
        from toothseg.predict.bundle_build import build_bundle

        out["bundle"] = str(build_bundle(rd.root))
    return out
