"""Helpers the semi-supervised benchmarks share: duplicate-group units, seeded whole-group selection, training effort.

Labels are hidden, and test images held out, a whole duplicate group at a time: a copy of a kept image must never
end up unlabelled (or in the test split) while its twin trains with its mask.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from toothseg.run.folder import read_json


def unit_of(key: str, items: dict) -> str:
    """The unit a key is kept or hidden with: its duplicate group ('g<id>' from curation.json), else itself."""
    g = items.get(key, {}).get("group")
    return f"g{g}" if g is not None else f"k{key}"


def group_units(keys: list[str], items: dict) -> dict[str, list[str]]:
    """``keys`` by unit (see `unit_of`), in the order given."""
    units: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        units[unit_of(key, items)].append(key)
    return dict(units)


def take_units(units: dict[str, list[str]], order: list[str], target: int) -> list[str]:
    """Keys of whole units, taken in ``order`` until at least ``target`` keys are taken."""
    out: list[str] = []
    for u in order:
        if len(out) >= target:
            break
        out += units[u]
    return out


def train_effort(tag_dir: Path, fold: int | None = None) -> dict:
    """Optimizer steps and training seconds actually spent (all stages; all folds or one), from each fit.json.

    A wall-clock budget on a shared machine buys different numbers of steps from row to row; tables show both.
    """
    fits = [read_json(p) for p in tag_dir.rglob("fit.json")
            if fold is None or f"fold{fold}" in p.relative_to(tag_dir).parts]
    return {"steps": sum(int(f.get("global_step", 0)) for f in fits),
            "train_minutes": sum(float(f.get("seconds", 0.0)) for f in fits) / 60}
