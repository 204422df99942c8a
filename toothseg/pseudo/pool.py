"""The unlabelled images worth pseudo-labelling, read from the run folder's samples.csv and curation.json.

An unlabelled copy of a labelled image (curation ``use == "label-from:<key>"``) already has a real label, and a
pseudo-label for it would also leak that labelled image into every fold where it is validated; such copies are
skipped, as are curated-out images (``use == "drop"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toothseg.data.layout import Sample, read_index
from toothseg.errors import InputError
from toothseg.rundir import RunDir, read_json


@dataclass
class Pool:
    """The images to pseudo-label and, per skipped key, why it was skipped."""

    samples: list[Sample] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def curation_items(run: RunDir) -> dict[str, dict]:
    """``curation.json``'s per-key decisions; a run without one (hand-made) counts every sample as usable."""
    if not run.curation.is_file():
        return {}
    try:
        data = read_json(run.curation)
    except ValueError as exc:
        raise InputError(run.curation, f"not valid JSON ({exc})", "rerun 'toothseg prepare' for this run") from None
    items = data.get("items", {}) if isinstance(data, dict) else None
    if not isinstance(items, dict):
        raise InputError(run.curation, "no 'items' mapping", "rerun 'toothseg prepare' for this run")
    return items


def unlabelled_pool(run: RunDir) -> Pool:
    """Unlabelled samples to pseudo-label, skipping copies of labelled images and dropped images."""
    samples = read_index(run.require(run.samples, "prepare"))
    items = curation_items(run)
    pool = Pool()
    for s in samples:
        if s.labelled:
            continue
        use = str(items.get(s.key, {}).get("use", "train"))
        if use.startswith("label-from:"):
            pool.skipped[s.key] = use
        elif use == "drop":
            pool.skipped[s.key] = "drop"
        else:
            pool.samples.append(s)
    return pool
