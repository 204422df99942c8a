"""The run folder: the unit of work. Every stage reads and writes plain files here (YAML, JSON, CSV, PNG).

`RunDir` owns every file name and format of a run; the files curation writes (samples, curation, duplicates,
folds) are read and written here, each model family under ``train/`` by `toothseg.run.family` and pseudo-labels
by `toothseg.run.pseudo_labels`. Every write is atomic (`toothseg.atomic`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from toothseg.config import Config, load_config, save_config
from toothseg.data.layout import Dataset, Sample, read_index, write_index
from toothseg.errors import InputError, ToothsegError
from toothseg.run.family import Family
from toothseg.run.files import Child, read_csv, read_json, write_csv, write_json
from toothseg.run.pseudo_labels import PseudoLabels

Folds = dict[int, dict[str, list[str]]]  # folds.json: {k: {"train": [keys], "val": [keys]}}


@dataclass(frozen=True)
class Decision:
    """Curation's decision for one sample (``curation.json`` items): ``use`` is "train", "drop" or
    "label-from:<key>" (an unlabelled copy that takes that labelled image's mask)."""

    use: str = "train"
    group: int | None = None
    reason: str = ""

    @property
    def label_from(self) -> str | None:
        return self.use.split(":", 1)[1] if self.use.startswith("label-from:") else None


@dataclass(frozen=True)
class Curation:
    """``curation.json``: the summary, the hash threshold and per-key decisions (a missing key is "train")."""

    items: dict[str, Decision] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    threshold: int | None = None

    def decision(self, key: str) -> Decision:
        return self.items.get(key, Decision())


@dataclass(frozen=True)
class RunDir:
    root: Path

    # What each stage writes; one place so stages never guess each other's file names.
    config = Child("config.yaml", "root")
    samples = Child("samples.csv", "root")
    duplicates = Child("duplicates.csv", "root")
    curation = Child("curation.json", "root")
    folds = Child("folds.json", "root")
    splits_final = Child("splits_final.json", "root")
    train_dir = Child("train", "root")
    pseudo_dir = Child("pseudo", "root")
    bundle_dir = Child("bundle", "root")
    reports_dir = Child("reports", "root")
    log_file = Child("toothseg.log", "root")

    def load_config(self) -> Config:
        return load_config(self.config)

    def save_config(self, cfg: Config) -> None:
        save_config(cfg, self.config)

    def require(self, path: Path, stage: str) -> Path:
        if not path.exists():
            raise ToothsegError(f"{path}: missing; run 'toothseg {stage} {self.root}' first")
        return path

    def read_samples(self) -> list[Sample]:
        return read_index(self.require(self.samples, "prepare"))

    def write_samples(self, ds: Dataset) -> None:
        write_index(ds, self.samples)  # atomic itself

    def read_curation(self) -> Curation:
        """``curation.json``; a run without one (hand-made) counts every sample as usable."""
        if not self.curation.is_file():
            return Curation()
        fix = f"rerun 'toothseg prepare' for {self.root}"
        try:
            data = read_json(self.curation)
        except ValueError as exc:
            raise InputError(self.curation, f"not valid JSON ({exc})", fix) from None
        items = data.get("items", {}) if isinstance(data, dict) else None
        if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
            raise InputError(self.curation, "no 'items' mapping", fix)
        return Curation({k: Decision(str(v.get("use", "train")), v.get("group"), str(v.get("reason", "")))
                         for k, v in items.items()}, data.get("summary") or {}, data.get("threshold"))

    def write_curation(self, data: dict) -> None:
        write_json(self.curation, data)

    def read_duplicates(self) -> list[dict[str, str]]:
        """``duplicates.csv`` rows as written (no file: no duplicate groups recorded)."""
        return read_csv(self.duplicates) if self.duplicates.is_file() else []

    def write_duplicates(self, rows: Iterable[list]) -> None:
        write_csv(self.duplicates, ["group_id", "source", "image_id", "labelled", "distance", "kept", "role"], rows)

    def read_folds(self) -> Folds:
        path = self.require(self.folds, "prepare")
        try:
            return {int(k): {"train": list(v["train"]), "val": list(v["val"])} for k, v in read_json(path).items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(self.folds, "not of the form {\"0\": {\"train\": [keys], \"val\": [keys]}}",
                             "re-create it with 'toothseg prepare'") from None

    def write_folds(self, folds: dict, nnunet_splits: list[dict]) -> None:
        """folds.json and its nnU-Net v2 twin splits_final.json."""
        write_json(self.folds, folds)
        write_json(self.splits_final, nnunet_splits)

    def family(self, tag: str) -> Family:
        return Family(self.train_dir / tag)

    def families(self) -> list[Family]:
        """Every model family under train/ (a folder with model.json or a fold folder), by tag."""
        if not self.train_dir.is_dir():
            return []
        fams = (Family(p) for p in sorted(self.train_dir.iterdir()) if p.is_dir())
        return [f for f in fams if f.info_file.is_file() or f.folds()]

    def pseudo_labels(self, round_: int = 1) -> PseudoLabels:
        """RUN/pseudo for round 1 (the 'pseudo-label' verb's output), RUN/pseudo/round<r> after that."""
        return PseudoLabels(self.pseudo_dir if round_ == 1 else self.pseudo_dir / f"round{round_}")


def open_run(root: str | Path, create: bool = False) -> RunDir:
    root = Path(root).expanduser()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        raise ToothsegError(f"{root}: run folder not found; create it with 'toothseg prepare DATA... --out {root}'")
    return RunDir(root)


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
