"""The run folder's file formats at their simplest: JSON and CSV, written atomically."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from toothseg.atomic import atomic_path, atomic_write_text


class Child:
    """A path attribute ``obj.<base> / name``: each file of a run is named in one place."""

    def __init__(self, name: str, base: str = "path") -> None:
        self.name, self.base = name, base

    def __get__(self, obj: Any, owner: type | None = None) -> Path:
        return getattr(obj, self.base) / self.name


def key_png(folder: Path, key: str) -> Path:
    """``folder/<source>/<image_id>.png``: where per-sample maps of sample ``key`` live."""
    source, image_id = key.split("/", 1)
    return folder / source / f"{image_id}.png"


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically so an interrupted job never leaves a half-written file."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence | Mapping]) -> None:
    """A CSV with ``header``; a mapping row is written in header order (missing cells empty, other keys ignored)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([r.get(c, "") for c in header] if isinstance(r, Mapping) else r for r in rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def to_float(v: Any) -> float:
    """A CSV/JSON cell as a number; empty or unparseable cells are NaN."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
