"""`fit_model`: train one network on given items into one folder (best checkpoint, metrics.csv, fit.json).

The lower-level entry point shared by `toothseg train` (k-fold) and the semi-supervised stages (pseudo-label
pretraining, real+pseudo mixes, distillation). Lightning runs the loop: checkpoints, CSV logs, progress bar,
wall-clock budget (`max_time`), resume (`ckpt_path`), DDP (`devices`/`strategy`/`num_nodes`, the standard
Lightning/torchrun way) and mixed precision. The CPU levers (issue 13) are composed from small modules: the
budget planner (`budget`), phase timing (`phases`) and its summary (`profile`), machine-dependent settings
(`hardware`), the in-memory cache (`dataset`), the validation interval (`validation`: every ``train.val_every``
epochs and always the final weights) and Lightning's EMA weight averaging.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from toothseg.config import Config, ModelConfig
from toothseg.durations import parse_hhmmss
from toothseg.errors import ConfigError, ToothsegError
from toothseg.models.checkpoint import safe_load, save_weights_only
from toothseg.models.pretrained import load_pretrained
from toothseg.run.family import FoldDir
from toothseg.run.folder import write_json
from toothseg.train.augment import build_augment
from toothseg.train.budget import BudgetSchedule
from toothseg.train.dataset import PairedDataset, SegDataset, TrainItem
from toothseg.train.ema import WarmupEMA
from toothseg.train.hardware import cpu_has_bf16, resolve_workers
from toothseg.train.logs import flatten_metrics
from toothseg.train.module import SegModule
from toothseg.train.phases import PhaseTimes
from toothseg.train.profile import profile_lines, profile_summary
from toothseg.train.snapshots import Snapshots
from toothseg.train.strong_augment import build_strong_photometric
from toothseg.train.validation import ValidationSchedule

log = logging.getLogger("toothseg")

CKPT_EVERY_STEPS = 25  # last.ckpt is also refreshed this often inside an epoch, so a kill loses little


@dataclass
class FitResult:
    out_dir: Path
    best_ckpt: Path
    best_val_dice: float | None
    global_step: int
    epochs: int
    seconds: float
    metrics_csv: Path

    def to_json(self) -> dict:
        """Paths relative to ``out_dir`` (fit.json lives there), so a moved or copied run folder still works."""
        base = Path(self.out_dir)
        return {k: (os.path.relpath(v, base) if k != "out_dir" else ".") if isinstance(v, Path) else v
                for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict, base: Path) -> "FitResult":
        """Read fit.json; every path is anchored at ``base`` (its folder), including the absolute paths older
        versions wrote (all of them name files directly in the fold folder). Keys it no longer has (older
        versions' ``last_ckpt``) are ignored."""
        paths = {"out_dir", "best_ckpt", "metrics_csv"}
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        base = Path(base)
        return cls(**{k: (base if k == "out_dir" else base / Path(v).name) if k in paths else v
                      for k, v in d.items()})


def is_main_process() -> bool:
    """False in the extra processes DDP launches (they re-run the command with RANK/LOCAL_RANK set)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0 \
        and int(os.environ.get("NODE_RANK", "0")) == 0


def resolve_precision(precision: str, accelerator: str) -> str:
    """'auto': 16-bit mixed on CUDA (bf16 where supported), bf16-mixed on CPUs with native bf16 (AMX/AVX512-BF16:
    about 1.5x faster training here) unless ONEDNN_MAX_CPU_ISA hides it, else full fp32."""
    if precision != "auto":
        return precision
    if _on_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def has_checkpoints(out_dir: Path) -> bool:
    return out_dir.is_dir() and any(out_dir.glob("*.ckpt"))


def _loader(ds: SegDataset, batch: int, shuffle: bool, workers: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=workers, drop_last=shuffle and len(ds) > batch,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def hard_stop(budget: str | None) -> timedelta | None:
    """Lightning's real-time Timer: the stop that holds even when the budget planner's estimates are off."""
    return timedelta(seconds=parse_hhmmss(budget)) if budget else None


def fit_model(cfg: Config, train_items: list[TrainItem], val_items: list[TrainItem], out_dir: Path,
              init_weights: Path | None = None, max_time: str | None = None, resume: bool = False,
              epochs: int | None = None, *, model_cfg: ModelConfig | None = None,
              scale: tuple[int, int] | None = None, overwrite: bool = False,
              callbacks: list[L.Callback] | None = None, unlabelled_items: list[TrainItem] | None = None,
              module_cls: type[SegModule] = SegModule) -> FitResult:
    """Train ``model_cfg`` (default ``cfg.model``) at ``scale`` (default its first own scale, else of ``train.scales``).

    Writes ``out_dir/best.ckpt`` (weights only), ``metrics.csv`` and, last, ``fit.json``, which marks the folder
    finished. ``best`` is chosen by val Dice (at network resolution); with no ``val_items`` it is the last state.
    While training, ``last.ckpt`` holds the full state (optimizer included); it is removed once finished.
    ``resume`` continues an unfinished folder from ``last.ckpt`` (a finished one returns its recorded result);
    without it an existing folder with checkpoints is refused unless ``overwrite``. ``init_weights``: a
    checkpoint/state dict to start from (e.g. a pseudo-label pretrained model). ``max_time``/``epochs`` override
    ``cfg.train``; ``callbacks`` are added to the Trainer's. ``unlabelled_items``: each training sample is paired
    with one of them (weak + strong view) for ``module_cls`` (e.g. `toothseg.pseudo.consistency.ConsistencyModule`)
    to learn from.
    """
    out_dir = Path(out_dir)
    tcfg = cfg.train
    mcfg = model_cfg or cfg.model
    size = tuple(scale or (mcfg.scales or tcfg.scales)[0])
    if size[0] % 32 or size[1] % 32:
        raise ConfigError(f"scale {size[0]}x{size[1]}: both sides must be multiples of 32 (e.g. 320x640)")
    n_epochs = int(epochs or tcfg.epochs)
    budget = max_time if max_time is not None else tcfg.max_time
    fd = FoldDir(out_dir)
    last = fd.last_ckpt
    main = is_main_process()
    if main and overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    if resume and fd.finished:
        log.info("%s: already finished; skipped (pass --overwrite to train it again)", out_dir)
        if main:
            fd.drop_resume_state()  # left behind by a kill between fit.json and its removal
        return FitResult.from_json(fd.read_fit(), out_dir)
    if main and not resume and has_checkpoints(out_dir):
        raise ToothsegError(f"{out_dir}: holds checkpoints from an earlier run; pass --resume to continue it or "
                            "--overwrite to start again")
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path is not None:
        safe_load(last, f"delete {out_dir} or pass --overwrite to train this model again")  # refuse before Lightning
    if resume and ckpt_path is None:
        log.info("%s: no last.ckpt to resume from; starting this model from scratch", out_dir)

    if not torch.cuda.is_available() or tcfg.accelerator == "cpu":
        torch.set_num_threads(tcfg.threads or os.cpu_count() or 1)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    pcfg = cfg.pseudo
    workers = resolve_workers(tcfg.num_workers, tcfg.cache, _on_gpu(tcfg.accelerator))
    train_ds = SegDataset(train_items, size, tcfg.resize, build_augment(tcfg.augment),
                          strong=build_strong_photometric() if pcfg.pseudo_strong_aug else None,
                          pixel_threshold=pcfg.confidence_threshold if pcfg.pixel_confidence else None,
                          cache=tcfg.cache)
    val_ds = SegDataset(val_items, size, tcfg.resize, None, cache=tcfg.cache) if val_items else None
    if workers > 0:  # workers fork with the cache already filled instead of each decoding every file
        for ds in (train_ds, val_ds):
            if ds is not None:
                ds.warm()
    if unlabelled_items:
        train_ds = PairedDataset(train_ds, unlabelled_items, build_strong_photometric(), cfg.seed)
    module = module_cls(model=mcfg.model_dump(mode="json"), scale=list(size), resize=tcfg.resize,
                        train=tcfg.model_dump(mode="json"), pseudo=pcfg.model_dump(mode="json"))
    if ckpt_path is None:  # ``init_weights`` (a checkpoint to start from) win over the model's pretrained weights
        init = mcfg if init_weights is None else mcfg.model_copy(update={"weights": str(init_weights)})
        load_pretrained(module.model, init)
        if init_weights is not None:
            log.info("initialised from %s", init_weights)

    phases = PhaseTimes()
    ckpt = partial(ModelCheckpoint, dirpath=out_dir, save_top_k=1, enable_version_counter=False)
    callbacks = [*(callbacks or []), phases, ckpt(filename="last", every_n_train_steps=CKPT_EVERY_STEPS)]
    if val_ds is not None:
        callbacks += [ValidationSchedule(tcfg.val_every),
                      ckpt(filename="best", monitor="val_dice", mode="max", save_last=True)]
    else:
        callbacks.append(ckpt(filename="last", every_n_epochs=1))
    if tcfg.ema_decay > 0:  # validation, best/last checkpoints and so bundles get the averaged weights
        callbacks.append(WarmupEMA(decay=tcfg.ema_decay))
    if pcfg.stability_keep > 0:  # snapshots for the ST++ pseudo-label filter
        callbacks.append(Snapshots(out_dir))
    train_loader = _loader(train_ds, tcfg.batch_size, True, workers)
    val_loader = _loader(val_ds, tcfg.batch_size, False, workers) if val_ds is not None else None
    planner = None
    if budget is not None:
        planner = BudgetSchedule(parse_hhmmss(budget), phases, n_epochs, tcfg,
                                 val_batches=len(val_loader) if val_loader is not None else 0,
                                 ckpt_every=CKPT_EVERY_STEPS)
        callbacks.append(planner)
    precision = resolve_precision(tcfg.precision, tcfg.accelerator)
    trainer = L.Trainer(
        max_epochs=n_epochs, max_steps=tcfg.max_steps, max_time=hard_stop(budget),
        accelerator=tcfg.accelerator, devices=tcfg.devices, num_nodes=tcfg.num_nodes, strategy=tcfg.strategy,
        precision=precision, accumulate_grad_batches=tcfg.accumulate,
        gradient_clip_val=tcfg.grad_clip or None, limit_train_batches=tcfg.limit_train_batches,
        check_val_every_n_epoch=tcfg.val_every, num_sanity_val_steps=0, callbacks=callbacks,
        logger=CSVLogger(save_dir=str(out_dir), name="logs"), log_every_n_steps=10,
        default_root_dir=str(out_dir), enable_model_summary=False,
    )
    t0 = time.monotonic()
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.monotonic() - t0
    best = fd.best_ckpt
    result = FitResult(out_dir, best, None, int(trainer.global_step), int(trainer.current_epoch),
                       seconds, out_dir / "metrics.csv")
    trainer.save_checkpoint(last)  # the final state, whatever stopped the loop (collective under DDP)
    if not trainer.is_global_zero:
        return result
    # best.ckpt keeps the weights only; with no validation run (no val items, or the budget ended inside the first
    # epoch) they are the final state's
    save_weights_only(best if best.is_file() else last, best)
    if planner is not None:
        write_json(out_dir / "budget.json", planner.report(trainer))
    if tcfg.profile:
        info = profile_summary(phases, time.monotonic() - t0, {
            "precision": precision, "num_workers": workers, "cache": tcfg.cache,
            "channels_last": bool(getattr(module, "_channels_last", False)),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "budget": planner.report(trainer) if planner is not None else None})
        write_json(out_dir / "profile.json", info)
        for line in profile_lines(info):
            log.info("profile %s: %s", out_dir.name, line)
    rows = flatten_metrics(out_dir / "logs", out_dir / "metrics.csv")
    scores = [r["val_dice"] for r in rows if "val_dice" in r]
    result.best_val_dice = max(scores) if scores else None
    fd.finish(result.to_json())
    return result
