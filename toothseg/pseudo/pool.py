"""The unlabelled images worth pseudo-labelling, read from the run folder's samples.csv and curation.json.

An unlabelled copy of a labelled image (curation ``use == "label-from:<key>"``) already has a real label, and a
pseudo-label for it would also leak that labelled image into every fold where it is validated; such copies are
skipped, as are curated-out images (``use == "drop"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toothseg.data.layout import Sample
from toothseg.errors import InputError
from toothseg.run.folder import RunDir


@dataclass
class Pool:
    """The images to pseudo-label and, per skipped key, why it was skipped."""

    samples: list[Sample] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def unlabelled_pool(run: RunDir, purpose: str | None = None) -> Pool:
    """Unlabelled samples to pseudo-label, skipping copies of labelled images and dropped images; with ``purpose``
    (e.g. "to pseudo-label") an empty pool is an `InputError` saying what the images were wanted for."""
    curation = run.read_curation()
    pool = Pool()
    for s in run.read_samples():
        if s.labelled:
            continue
        use = curation.decision(s.key).use
        if use.startswith("label-from:") or use == "drop":
            pool.skipped[s.key] = use
        else:
            pool.samples.append(s)
    if purpose is not None and not pool.samples:
        raise InputError(run.samples, f"no unlabelled image {purpose} ({len(pool.skipped)} skipped as copies of "
                         "labelled images or dropped)", "add unlabelled X-rays (DIR/unlabelled/) and rerun "
                         "'toothseg prepare'")
    return pool
