"""The worklist `suggest` writes and `review` reads: ``worklist.csv`` for people, ``worklist.json`` for tools.

Each item: ``rank,key,image_path,prediction,score,disagreement,entropy,uncertainty_rank,distance,reason``;
``prediction`` is the bundle's 0/255 mask for the image at its own size, the starting point of a correction;
``uncertainty_rank`` counts among all candidates (one per duplicate group); ``distance`` is the feature distance to
the nearest labelled image or earlier pick (empty when there is none); ``reason`` depends on the strategy, which
the JSON's ``strategy`` records.
"""

from __future__ import annotations

from pathlib import Path

from toothseg.errors import InputError
from toothseg.run.files import read_json, write_csv, write_json

FIELDS = ["rank", "key", "image_path", "prediction", "score", "disagreement", "entropy", "uncertainty_rank",
          "distance", "reason"]


def write_worklist(csv_path: Path, meta: dict, items: list[dict]) -> Path:
    """Write ``csv_path`` and the JSON beside it (same stem); returns the JSON path."""
    write_csv(csv_path, FIELDS, ({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in it.items()}
                                 for it in items))
    json_path = csv_path.with_suffix(".json")
    write_json(json_path, {**meta, "items": items})
    return json_path


def read_worklist(path: str | Path) -> dict:
    """A worklist JSON (or the CSV, whose JSON sibling is read) as ``{..., "items": [...]}``."""
    p = Path(path).expanduser()
    if p.suffix.lower() == ".csv":
        p = p.with_suffix(".json")
    if not p.is_file():
        raise InputError(p, "worklist not found", "run 'toothseg suggest RUN' first or pass its worklist.json")
    try:
        data = read_json(p)
    except (OSError, ValueError) as exc:
        raise InputError(p, f"unreadable worklist ({exc})", "rerun 'toothseg suggest'") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise InputError(p, "not a toothseg worklist (no 'items' list)", "rerun 'toothseg suggest'")
    return data
