"""``pseudo/`` (and ``pseudo/round<r>/``): a teacher's pseudo-labels for the unlabelled pool.

``scores.csv`` (``key,score,<each confidence>[,stability],selected``), ``soft/<source>/<id>.png`` (fused
probability x 255), ``hard/<source>/<id>.png`` (0/255) and ``pseudo.json`` (teacher, settings, counts).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toothseg.run.files import Child, key_png, read_csv, read_json, to_float, write_csv, write_json


@dataclass(frozen=True)
class PseudoRow:
    key: str
    selected: bool
    scores: dict[str, float]  # "score" (the selection score) and each confidence measure


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.6f}"


@dataclass(frozen=True)
class PseudoLabels:
    path: Path

    scores_csv = Child("scores.csv")
    info_file = Child("pseudo.json")

    def soft(self, key: str) -> Path:
        return key_png(self.path / "soft", key)

    def hard(self, key: str) -> Path:
        return key_png(self.path / "hard", key)

    def clear_maps(self) -> None:
        for sub in ("soft", "hard"):
            shutil.rmtree(self.path / sub, ignore_errors=True)

    def read_scores(self) -> list[PseudoRow]:
        rows = read_csv(self.scores_csv)
        return [PseudoRow(r["key"], str(r.get("selected", "")).strip().lower() in ("1", "true"),
                          {c: to_float(v) for c, v in r.items() if c not in ("key", "selected")}) for r in rows]

    def write_scores(self, rows: list[PseudoRow], names: list[str]) -> None:
        """``names``: the score columns after ``score``, in order."""
        write_csv(self.scores_csv, ["key", "score", *names, "selected"],
                  ([r.key, *(_fmt(r.scores[n]) for n in ["score", *names]), int(r.selected)] for r in rows))

    def read_info(self) -> dict[str, Any]:
        return read_json(self.info_file) if self.info_file.is_file() else {}

    def write_info(self, info: dict[str, Any]) -> None:
        write_json(self.info_file, info)
