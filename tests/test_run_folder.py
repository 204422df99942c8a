"""The run-folder layer: each writer's output read back by its reader, one definition of a fold folder, bad files
refused with the file named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from toothseg.errors import InputError
from toothseg.run.family import Family, FoldDir, OofRow, read_oof, summarise, write_oof
from toothseg.run.folder import Decision, RunDir
from toothseg.run.pseudo_labels import PseudoLabels, PseudoRow


def test_folds_and_curation_round_trip(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.write_folds({"0": {"train": ["a/1"], "val": ["a/2"]}, "1": {"train": ["a/2"], "val": ["a/1"]}},
                   [{"train": ["a__1"], "val": ["a__2"]}, {"train": ["a__2"], "val": ["a__1"]}])
    assert rd.read_folds() == {0: {"train": ["a/1"], "val": ["a/2"]}, 1: {"train": ["a/2"], "val": ["a/1"]}}
    assert json.loads(rd.splits_final.read_text())[1] == {"train": ["a__2"], "val": ["a__1"]}
    assert rd.read_curation().decision("a/1") == Decision()  # no curation.json: every sample is usable
    rd.write_curation({"summary": {"groups": 1}, "threshold": 12, "items": {
        "a/1": {"group": 0, "use": "train", "reason": "finer"}, "u/3": {"group": 0, "use": "label-from:a/1"}}})
    cur = rd.read_curation()
    assert (cur.summary, cur.threshold, cur.decision("u/3").label_from, cur.decision("a/1").label_from) == (
        {"groups": 1}, 12, "a/1", None)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file behind


def test_bad_folds_and_curation_files_name_the_file(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.folds.write_text("{not json")
    with pytest.raises(InputError, match="folds.json"):
        rd.read_folds()
    rd.curation.write_text(json.dumps({"items": ["a/1"]}))
    with pytest.raises(InputError, match="curation.json.*'items'"):
        rd.read_curation()


def test_a_fold_folder_is_fold_and_a_number(tmp_path: Path) -> None:
    fam = RunDir(tmp_path).family("unet-320x640")
    for name in ("fold1", "fold0", "foldx", "fold_all", "pretrain", "fold10"):
        (fam.path / name).mkdir(parents=True)
    (fam.path / "fold1" / "best.ckpt").write_bytes(b"")
    assert [f.k for f in fam.folds()] == [0, 1, 10]
    assert [f.k for f in fam.folds(trained=True)] == [1] and [f.k for f in fam.folds(only=[0, 10])] == [0, 10]
    assert [f.tag for f in RunDir(tmp_path).families()] == ["unet-320x640"]
    assert fam.stage("pretrain").fold(0).path == fam.path / "pretrain" / "fold0"
    assert FoldDir(fam.path / "fold1").oof_map("src/img 1") == fam.path / "fold1" / "oof" / "src" / "img 1.png"


def test_oof_rows_round_trip_and_pool_over_folds(tmp_path: Path) -> None:
    fam = Family(tmp_path / "t")
    write_oof(fam.fold(0).oof_csv, [OofRow(key="a/1", dice=0.8, iou=0.7, hd95=4.0)])
    write_oof(fam.fold(1).oof_csv, [OofRow(key="a/2", dice=0.6, iou=0.5, hd95=8.0)])
    assert read_oof(fam.fold(0).oof_csv) == [{"key": "a/1", "dice": 0.8, "iou": 0.7, "hd95": 4.0}]
    assert [r["key"] for r in fam.read_oof()] == ["a/1", "a/2"] and len(fam.read_oof(only=[1])) == 1
    s = summarise(fam.read_oof())
    assert (s["n"], round(s["dice"], 6), s["hd95"]) == (2, 0.7, 6.0)
    assert math.isnan(summarise([])["dice"])


def test_pseudo_scores_round_trip(tmp_path: Path) -> None:
    labels = RunDir(tmp_path).pseudo_labels(2)
    assert labels.path == tmp_path / "pseudo" / "round2"
    labels.write_scores([PseudoRow("u/1", True, {"score": 0.9, "agreement": 0.9}),
                         PseudoRow("u/2", False, {"score": float("nan"), "agreement": 0.1})], ["agreement"])
    assert labels.scores_csv.read_text().splitlines()[0] == "key,score,agreement,selected"
    back = PseudoLabels(labels.path).read_scores()
    assert [(r.key, r.selected, r.scores["agreement"]) for r in back] == [("u/1", True, 0.9), ("u/2", False, 0.1)]
    assert math.isnan(back[1].scores["score"])
    assert labels.hard("u/1") == labels.path / "hard" / "u" / "1.png"
