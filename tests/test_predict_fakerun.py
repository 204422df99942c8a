"""The trained fake run (tests/helpers/fakerun.py) holds what toothseg/train writes."""

from __future__ import annotations

from pathlib import Path

from helpers.fakerun import N_IMAGES, TAGS


def test_fake_run_layout(fake_run: Path) -> None:
    assert (fake_run / "samples.csv").is_file()
    for tag in TAGS:
        assert sorted(p.name for p in (fake_run / "train" / tag).glob("fold*")) == ["fold0", "fold1"]
        assert len(list((fake_run / "train" / tag).glob("fold*/oof/synth/*.png"))) == N_IMAGES
