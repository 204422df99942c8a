"""The run folder: the unit of work. Every stage reads and writes plain files here (YAML, JSON, CSV, PNG)."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toothseg.atomic import atomic_write_text
from toothseg.config import Config, load_config, save_config
from toothseg.errors import ToothsegError


@dataclass(frozen=True)
class RunDir:
    root: Path

    # What each stage writes; one place so stages never guess each other's file names.
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def samples(self) -> Path:
        return self.root / "samples.csv"

    @property
    def duplicates(self) -> Path:
        return self.root / "duplicates.csv"

    @property
    def curation(self) -> Path:
        return self.root / "curation.json"

    @property
    def folds(self) -> Path:
        return self.root / "folds.json"

    @property
    def splits_final(self) -> Path:
        return self.root / "splits_final.json"

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def pseudo_dir(self) -> Path:
        return self.root / "pseudo"

    @property
    def bundle_dir(self) -> Path:
        return self.root / "bundle"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def log_file(self) -> Path:
        return self.root / "toothseg.log"

    def load_config(self) -> Config:
        return load_config(self.config)

    def save_config(self, cfg: Config) -> None:
        save_config(cfg, self.config)

    def require(self, path: Path, stage: str) -> Path:
        if not path.exists():
            raise ToothsegError(f"{path}: missing; run 'toothseg {stage} {self.root}' first")
        return path


def open_run(root: str | Path, create: bool = False) -> RunDir:
    root = Path(root).expanduser()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        raise ToothsegError(f"{root}: run folder not found; create it with 'toothseg prepare DATA... --out {root}'")
    return RunDir(root)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically so an interrupted job never leaves a half-written file."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency, but curation does not need it
        pass


def setup_logging(run: RunDir | None = None, verbose: bool = False) -> logging.Logger:
    log = logging.getLogger("toothseg")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    if run is not None:
        target = str(run.log_file.resolve())
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in log.handlers):
            run.root.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(target)
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            log.addHandler(fh)
    log.propagate = False
    return log
