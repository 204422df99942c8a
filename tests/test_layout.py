"""Dataset discovery: plain and nnU-Net layouts, several sources, orphans and duplicate stems."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from toothseg.data.layout import discover, read_index, write_index
from toothseg.errors import InputError


def _img(path, v: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 32), v, np.uint8)).save(path)


def _plain(root, labelled=("a", "b"), unlabelled=("u",)):
    for s in labelled:
        _img(root / "images" / f"{s}.png")
        _img(root / "masks" / f"{s}.png", 255)
    for s in unlabelled:
        _img(root / "unlabelled" / f"{s}.png")
    return root


def test_plain_layout(tmp_path):
    ds = discover([_plain(tmp_path / "clinicA")])
    assert sorted(s.key for s in ds.labelled) == ["clinicA/a", "clinicA/b"]
    assert [s.key for s in ds.unlabelled] == ["clinicA/u"]
    assert ds.problems == []


def test_nnunet_layout(tmp_path):
    root = tmp_path / "Dataset001_Teeth"
    for s in ("c1", "c2"):
        _img(root / "imagesTr" / f"{s}_0000.png")
        _img(root / "labelsTr" / f"{s}.png", 1)
    _img(root / "imagesTs" / "t1_0000.png")
    _img(root / "imagesTr" / "c1_0001.png")  # an extra channel
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "xray"}, "file_ending": ".png"}))
    ds = discover([root])
    assert sorted(s.image_id for s in ds.labelled) == ["c1", "c2"]
    assert ds.by_key()["Dataset001_Teeth/c1"].mask_path.name == "c1.png"
    assert [s.image_id for s in ds.unlabelled] == ["t1"]
    assert [(p.level, "c1_0001" in p.path) for p in ds.problems] == [("warning", True)]


def test_bad_dataset_json_is_reported(tmp_path):
    root = tmp_path / "nn"
    _img(root / "imagesTr" / "c1_0000.png")
    (root / "dataset.json").write_text("{not json")
    ds = discover([root])
    assert any(p.level == "error" and "dataset.json" in p.path for p in ds.problems)


def test_several_sources_keep_their_names(tmp_path):
    ds = discover([_plain(tmp_path / "tufts"), _plain(tmp_path / "ufba", labelled=("a",), unlabelled=())])
    assert {s.source for s in ds.samples} == {"tufts", "ufba"}
    assert "tufts/a" in ds.by_key() and "ufba/a" in ds.by_key()


def test_duplicate_stems_and_orphans(tmp_path):
    root = _plain(tmp_path / "d")
    _img(root / "images" / "a.jpg")  # a second file for stem 'a'
    _img(root / "masks" / "ghost.png", 255)  # mask without image
    _img(root / "images" / "nomask.png")  # image without mask
    _img(root / "unlabelled" / "b.png")  # stem both labelled and unlabelled
    ds = discover([root])
    found = {(p.level, p.path.split("/")[-1], p.problem.split(" ")[0]) for p in ds.problems}
    assert ("error", "a.png", "duplicate") in found
    assert ("error", "ghost.png", "mask") in found
    assert ("warning", "nomask.png", "image") in found
    assert ("error", "b.png", "stem") in found
    assert all(p.source == "d" for p in ds.problems)
    assert ds.by_key()["d/nomask"].mask_path is None


def test_unusable_folders(tmp_path):
    with pytest.raises(InputError, match="not found"):
        discover([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images/"):
        discover([tmp_path / "empty"])
    _plain(tmp_path / "x" / "same")
    _plain(tmp_path / "y" / "same")
    with pytest.raises(InputError, match="share the name"):
        discover([tmp_path / "x" / "same", tmp_path / "y" / "same"])
    ds = discover([tmp_path / "missing", tmp_path / "x" / "same"], strict=False)
    assert len(ds.samples) == 3 and [p.level for p in ds.problems] == ["error"]


def test_index_roundtrip(tmp_path):
    ds = discover([_plain(tmp_path / "s")])
    write_index(ds, tmp_path / "run" / "samples.csv")
    back = read_index(tmp_path / "run" / "samples.csv")
    assert [s.key for s in back] == [s.key for s in ds.samples]
    assert all(s.image_path.is_absolute() for s in back)
    assert [s.labelled for s in back] == [s.labelled for s in ds.samples]
