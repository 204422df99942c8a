"""What the review page shows: items from a `suggest` worklist or a `toothseg predict` output folder.

An item's output name comes from the sample's own ``image_id`` and is checked against a strict pattern, so a
tampered worklist cannot make the server write outside its dataset folder.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from toothseg.errors import InputError
from toothseg.predict.outputs import OutputPaths, previous_record
from toothseg.run.files import read_csv, to_float
from toothseg.suggest.worklist import read_worklist

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SCORE_FIELDS = ("score", "disagreement", "entropy", "mean_confidence", "mean_certainty")


@dataclass(frozen=True)
class Item:
    id: str                      # URL-safe and unique within a session
    key: str                     # source/image_id
    name: str                    # file stem in the reviewed dataset
    image_path: Path
    prediction: Path | None
    scores: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def _scores(d: dict) -> dict[str, float]:
    return {k: v for k in SCORE_FIELDS if math.isfinite(v := to_float(d.get(k)))}  # the page's JSON cannot carry NaN


def _unique(items: list[dict], origin: Path) -> list[Item]:
    names = [d["image_id"] for d in items]
    out, seen = [], set()
    for d in items:
        name = d["image_id"] if names.count(d["image_id"]) == 1 else f"{d['source']}__{d['image_id']}"
        if not SAFE_NAME.match(name) or ".." in name:
            raise InputError(origin, f"image name '{name}' is not a plain file name",
                             "image names may hold letters, digits, '.', '_' and '-' only; regenerate the list")
        if name in seen:
            raise InputError(origin, f"'{d['key']}' is listed twice", "list each image once")
        seen.add(name)
        out.append(Item(id=name, key=d["key"], name=name, image_path=Path(d["image_path"]),
                        prediction=Path(d["prediction"]) if d.get("prediction") else None,
                        scores=_scores(d), reason=str(d.get("reason", ""))))
    return out


def from_worklist(path: Path) -> tuple[list[Item], dict]:
    """Items of a `suggest` worklist (JSON or its CSV) and the worklist's metadata."""
    data = read_worklist(path)
    rows = []
    for it in data["items"]:
        if not isinstance(it, dict) or "key" not in it or "image_path" not in it or "/" not in str(it["key"]):
            raise InputError(path, "a worklist item has no 'key' (source/image_id) or 'image_path'",
                             "rerun 'toothseg suggest'")
        source, image_id = str(it["key"]).split("/", 1)
        rows.append({**it, "source": source, "image_id": image_id})
    return _unique(rows, Path(path)), {"worklist": str(Path(path).resolve()), "bundle": data.get("bundle"),
                                       "bundle_created": data.get("bundle_created")}


def from_predictions(folder: Path) -> tuple[list[Item], dict]:
    """Items of a `toothseg predict` output folder (summary.csv + masks/ + json/)."""
    summary = folder / "summary.csv"
    if not summary.is_file():
        raise InputError(folder, "no summary.csv", "pass a folder written by 'toothseg predict'")
    rows, bundle = [], None
    for r in read_csv(summary):
        if r.get("status") not in ("ok", "skipped") or not r.get("input"):
            continue
        paths = OutputPaths(folder, r["stem"])
        rec = previous_record(paths) or {}
        bundle = bundle or rec.get("bundle")
        rows.append({"key": f"{folder.resolve().name}/{paths.stem}", "source": folder.resolve().name,
                     "image_id": paths.stem, "image_path": r["input"], "prediction": str(paths.mask),
                     "mean_confidence": rec.get("mean_confidence"), "mean_certainty": rec.get("mean_certainty")})
    if not rows:
        raise InputError(summary, "no predicted image listed", "run 'toothseg predict' into this folder first")
    return _unique(rows, summary), {"predictions": str(folder.resolve()), "bundle": bundle}


def resolve_source(source: str | Path) -> tuple[list[Item], dict, Path]:
    """Items, metadata and the default output folder for a run folder, worklist file or predict folder."""
    p = Path(source).expanduser()
    if p.is_file():
        return (*from_worklist(p), p.parent / "reviewed")
    if (p / "summary.csv").is_file() and (p / "masks").is_dir():
        return (*from_predictions(p), p / "reviewed")
    if (p / "suggest" / "worklist.json").is_file():
        return (*from_worklist(p / "suggest" / "worklist.json"), p / "reviewed")
    if p.is_dir():
        raise InputError(p, "no worklist (suggest/worklist.json) and not a 'toothseg predict' folder",
                         f"run 'toothseg suggest {p}' first, or pass a predict output folder")
    raise InputError(p, "not found", "pass a run folder, a worklist.json or a 'toothseg predict' output folder")
