"""The pseudo-label pool: unlabelled copies of labelled images and dropped images are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.fakerun import write_curation, write_samples
from toothseg.errors import InputError
from toothseg.pseudo.pool import unlabelled_pool
from toothseg.run.folder import RunDir


def make_run(root: Path, curation: dict | None) -> RunDir:
    unlabelled = (("a", 2), ("a", 3), ("b", 4), ("b", 5))
    write_samples(root, [["a/1", "a", "1", f"{root}/i1.png", f"{root}/m1.png"]]
                  + [[f"{s}/{i}", s, str(i), f"{root}/i{i}.png", ""] for s, i in unlabelled])
    if curation is not None:
        write_curation(root, curation["items"], curation["summary"], curation["threshold"])
    return RunDir(root)


def test_copies_of_labelled_and_dropped_images_are_skipped(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"summary": {}, "threshold": 10, "items": {
        "a/1": {"group": 0, "use": "train", "reason": ""},
        "a/2": {"group": 0, "use": "label-from:a/1", "reason": "copy of a/1"},
        "a/3": {"group": None, "use": "train", "reason": ""},
        "b/4": {"group": 1, "use": "drop", "reason": "unreadable"}}})
    pool = unlabelled_pool(run)
    assert [s.key for s in pool.samples] == ["a/3", "b/5"]  # b/5 has no curation entry: usable
    assert pool.skipped == {"a/2": "label-from:a/1", "b/4": "drop"}


def test_run_without_curation_uses_every_unlabelled_image(tmp_path: Path) -> None:
    pool = unlabelled_pool(make_run(tmp_path, None))
    assert [s.key for s in pool.samples] == ["a/2", "a/3", "b/4", "b/5"]


def test_bad_curation_and_missing_samples_are_input_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path, None)
    run.curation.write_text("{not json")
    with pytest.raises(InputError, match="curation.json"):
        unlabelled_pool(run)
    run.curation.write_text(json.dumps({"items": [1, 2]}))
    with pytest.raises(InputError, match="items"):
        unlabelled_pool(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="prepare"):
        unlabelled_pool(RunDir(empty))
