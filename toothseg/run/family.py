"""``train/<tag>/``: one trained model family (one model at one scale) and its fold folders.

A fold folder is ``fold<k>`` with k a fold number of folds.json; it is *trained* once it holds ``best.ckpt``.
It also holds ``oof.csv`` + ``oof/<source>/<image_id>.png`` (out-of-fold scores and maps) and ``stage.json``
(what its last training stage saw). Intermediate stages of a schedule live under ``train/<tag>/<stage>/fold<k>``.

A training folder (a fold folder, a stage's, hard mining's ``hard/``) is *finished* once it holds ``fit.json``,
written last. Until then ``last.ckpt`` holds Lightning's full training state (optimizer included) for
``--resume``; `FoldDir.finish` drops it, so a finished folder keeps only the weights in ``best.ckpt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from toothseg.run.files import Child, key_png, read_csv, read_json, write_csv, write_json

OOF_COLUMNS = ("key", "dice", "iou", "hd95")
BUILT_FROM = "built_from.json"  # per fold: what its model was built from (toothseg.train.provenance)


class OofRow(TypedDict):
    """One out-of-fold score: the fold model that did not train on ``key`` against its label."""

    key: str
    dice: float
    iou: float
    hd95: float


def read_oof(path: Path) -> list[OofRow]:
    return [OofRow(key=r["key"], dice=float(r["dice"]), iou=float(r["iou"]), hd95=float(r["hd95"]))
            for r in read_csv(path)]


def write_oof(path: Path, rows: list[OofRow]) -> None:
    write_csv(path, list(OOF_COLUMNS), ([r["key"], f"{r['dice']:.6f}", f"{r['iou']:.6f}", f"{r['hd95']:.4f}"]
                                        for r in rows))


def summarise(rows: list[OofRow]) -> dict[str, float]:
    """Mean Dice/IoU/HD95 over rows (NaN-free: the metric conventions never yield NaN)."""
    if not rows:
        return {"dice": float("nan"), "iou": float("nan"), "hd95": float("nan"), "n": 0}
    return {m: float(np.mean([r[m] for r in rows])) for m in OOF_COLUMNS[1:]} | {"n": len(rows)}


@dataclass(frozen=True)
class FoldDir:
    path: Path

    best_ckpt = Child("best.ckpt")
    last_ckpt = Child("last.ckpt")  # resume state, only while the fit is unfinished
    fit_file = Child("fit.json")  # the fit's result; its presence marks the fit finished
    before_hard_ckpt = Child("best_before_hard.ckpt")  # best.ckpt as it was before hard mining replaced it
    oof_csv = Child("oof.csv")
    oof_dir = Child("oof")
    stage_file = Child("stage.json")

    @property
    def k(self) -> int | None:
        """k of the folder's name ``fold<k>``; None for any other name."""
        name = self.path.name
        return int(name[4:]) if name.startswith("fold") and name[4:].isdigit() else None

    @property
    def trained(self) -> bool:
        return self.best_ckpt.is_file()

    @property
    def finished(self) -> bool:
        return self.fit_file.is_file()

    def read_fit(self) -> dict:
        return read_json(self.fit_file)

    def finish(self, fit: dict) -> None:
        """Record the fit as finished, then drop the resume state it no longer needs (in this order: a kill in
        between leaves a finished folder with a stale last.ckpt, which `drop_resume_state` clears later, never
        an unfinished one without it)."""
        write_json(self.fit_file, fit)
        self.drop_resume_state()

    def drop_resume_state(self) -> None:
        self.last_ckpt.unlink(missing_ok=True)

    def oof_map(self, key: str) -> Path:
        """Where the OOF probability map (x 255, original size) of sample ``key`` is stored."""
        return key_png(self.oof_dir, key)

    def oof_maps(self) -> dict[str, Path]:
        """{key: OOF map} of every map this fold has written."""
        return {f"{p.parent.name}/{p.stem}": p for p in sorted(self.oof_dir.glob("*/*.png"))}

    def write_stage(self, info: dict) -> None:
        write_json(self.stage_file, info)


@dataclass(frozen=True)
class Family:
    path: Path

    info_file = Child("model.json")
    built_from_file = Child(BUILT_FROM)

    @property
    def tag(self) -> str:
        return self.path.name

    def info(self) -> dict:
        """model.json (``{"tag", "model", "scale", "resize", "folds", "cv_dice", ...}``); {} before any fold."""
        return read_json(self.info_file) if self.info_file.is_file() else {}

    def write_info(self, info: dict) -> None:
        write_json(self.info_file, info)

    def fold(self, k: int) -> FoldDir:
        return FoldDir(self.path / f"fold{int(k)}")

    def stage(self, name: str) -> Family:
        """The folder of an intermediate training stage (e.g. ``pretrain``), with fold folders of its own."""
        return Family(self.path / name)

    def folds(self, trained: bool = False, only: list[int] | None = None) -> list[FoldDir]:
        """The fold folders by k (``trained``: those with best.ckpt; ``only``: of these fold numbers)."""
        found = [FoldDir(p) for p in self.path.iterdir() if p.is_dir()] if self.path.is_dir() else []
        return sorted((f for f in found if f.k is not None and (not trained or f.trained)
                       and (only is None or f.k in only)), key=lambda f: f.k or 0)

    def read_oof(self, only: list[int] | None = None) -> list[OofRow]:
        """The OOF rows of every fold that has them (each labelled image once, scored out of fold)."""
        return [r for f in self.folds(only=only) if f.oof_csv.is_file() for r in read_oof(f.oof_csv)]
