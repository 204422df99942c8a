"""What each fold model was built from, so stale models are refused instead of silently reused.

``train/<tag>/built_from.json`` holds, per fold, a fingerprint of that fold's split (its train and val keys in
folds.json) and of the settings that shape the weights (the model and the training recipe, not run-time knobs such
as threads, devices or budgets). Training over existing checkpoints (``--resume`` or not) and bundle building
compare them with the run's current folds.json and config. Folds trained before these records existed are checked
by the keys in their ``oof.csv`` (the fold's validation images when it was scored).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from toothseg.config import Config, ModelConfig
from toothseg.errors import ToothsegError
from toothseg.run.family import Family, FoldDir, read_oof
from toothseg.run.files import read_json, write_json
# Train settings that do not change what a model learns from which data; changing them never makes a model stale.
RUNTIME_KEYS = {"max_time", "max_steps", "epochs", "threads", "num_workers", "devices", "num_nodes", "strategy",
                "accelerator", "precision", "limit_train_batches", "val_every"}


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_fingerprint(split: dict) -> str:
    return _digest({"train": sorted(split["train"]), "val": sorted(split["val"])})


def config_fingerprint(cfg: Config, mcfg: ModelConfig) -> str:
    # the seed sits with the training settings, where it lived before it became the config's one seed
    train = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in RUNTIME_KEYS} | {"seed": cfg.seed}
    return _digest({"model": mcfg.model_dump(mode="json"), "train": train})


def _records(tag_dir: Path) -> dict:
    p = Family(tag_dir).built_from_file
    try:
        rec = read_json(p) if p.is_file() else {}
    except (OSError, ValueError):
        rec = {}
    return rec if isinstance(rec, dict) else {}


def _stale(fold_dir: Path, why: str, fix: str) -> ToothsegError:
    return ToothsegError(f"{fold_dir}: {why}; {fix}")


def check_fold(fold_dir: Path, k: int, split: dict, cfg: Config | None = None, mcfg: ModelConfig | None = None,
               fix: str = "retrain it with 'toothseg train RUN --fold K --overwrite', or restore the old folds.json"
               ) -> None:
    """Refuse a fold model built from another split (or, with ``cfg``/``mcfg``, other settings)."""
    rec = _records(fold_dir.parent).get(str(k))
    if rec is not None:
        if rec.get("split") != split_fingerprint(split):
            raise _stale(fold_dir, f"trained on a different fold {k} split than folds.json now has (was "
                         "'toothseg prepare' re-run?)", fix)
        if cfg is not None and mcfg is not None and rec.get("config") != config_fingerprint(cfg, mcfg):
            raise _stale(fold_dir, "trained with other model/training settings than the config now asks for",
                         "pass --overwrite to retrain it with the new settings, or train into a new run folder")
        return
    oof = FoldDir(fold_dir).oof_csv
    if oof.is_file() and {r["key"] for r in read_oof(oof) if r["key"]} != set(split["val"]):
        raise _stale(fold_dir, f"its validation images (oof.csv) are not fold {k}'s in folds.json (was "
                     "'toothseg prepare' re-run?)", fix)


def record_fold(tag_dir: Path, k: int, split: dict, cfg: Config, mcfg: ModelConfig) -> None:
    recs = _records(tag_dir)
    recs[str(k)] = {"split": split_fingerprint(split), "config": config_fingerprint(cfg, mcfg)}
    write_json(Family(tag_dir).built_from_file, recs)


def check_run_folds(folds: dict[int, dict], fold_dirs: list[tuple[int | str, Path]]) -> None:
    """Bundle building: every fold model must come from the split folds.json has now."""
    fix = "retrain with 'toothseg train RUN --overwrite' (or restore the old folds.json) before building the bundle"
    for k, fd in fold_dirs:
        if not str(k).isdigit():
            continue
        split = folds.get(int(k))
        if split is None:
            raise _stale(fd, f"fold {k} is not in folds.json any more", fix)
        check_fold(fd, int(k), split, fix=fix)
