"""Bench work folders: a bench starts fresh unless told to continue, never on top of an earlier run's results."""

from __future__ import annotations

from pathlib import Path


def fresh_work(work: Path, resume: bool, flag: str = "--resume") -> Path:
    """``work`` resolved and created; an existing non-empty one is refused unless ``resume``."""
    work = Path(work).expanduser().resolve()
    if work.exists() and any(work.iterdir()) and not resume:
        raise SystemExit(f"{work}: already exists; pass {flag} to continue it or choose a new folder")
    work.mkdir(parents=True, exist_ok=True)
    return work
