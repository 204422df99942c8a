"""export_nnunet_raw: a prepared run -> nnU-Net v2 raw layout with the run's group-aware split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toothseg.curate.prepare import prepare
from toothseg.data.io import read_mask_array
from toothseg.data.layout import Sample
from toothseg.data.nnunet_export import (CASES_FILE, case_name, export_nnunet_images, export_nnunet_raw,
                                         rename_predictions)
from toothseg.data.synth import synth
from toothseg.errors import ToothsegError
from toothseg.run.folder import read_json


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nnexport")
    data = root / "synthx"
    synth(data, labelled=12, unlabelled=4, height=64, width=128, seed=3)
    run = root / "run"
    prepare([data], out=run, preset="tiny", n_folds=2)
    return run


def test_export_layout_labels_and_dataset_json(prepared: Path, tmp_path: Path) -> None:
    out = export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=7, name="Teeth")
    assert out == tmp_path / "raw" / "Dataset007_Teeth"
    folds = read_json(prepared / "folds.json")
    keys = sorted({k for f in folds.values() for part in ("train", "val") for k in f[part]})
    assert keys, "prepare kept no labelled sample"

    images = sorted(p.name[: -len("_0000.png")] for p in (out / "imagesTr").glob("*_0000.png"))
    labels = sorted(p.stem for p in (out / "labelsTr").glob("*.png"))
    assert images == labels == sorted(case_name(k) for k in keys)
    assert len(list((out / "imagesTr").iterdir())) == len(images)  # nothing but *_0000.png
    for case in labels:
        lab = read_mask_array(out / "labelsTr" / f"{case}.png")
        img = read_mask_array(out / "imagesTr" / f"{case}_0000.png")
        assert lab.ndim == 2 and img.ndim == 2 and lab.shape == img.shape
        assert lab.dtype == np.uint8 and img.dtype == np.uint8
        assert set(np.unique(lab).tolist()) <= {0, 1}
    assert any(read_mask_array(out / "labelsTr" / f"{c}.png").any() for c in labels)

    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "X-ray"}
    assert ds["labels"] == {"background": 0, "tooth": 1}
    assert ds["numTraining"] == len(labels)
    assert ds["file_ending"] == ".png"

    cases = json.loads((out / CASES_FILE).read_text())
    assert cases == {case_name(k): k for k in keys}


def test_splits_final_names_are_cases(prepared: Path, tmp_path: Path) -> None:
    out = export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=8)
    cases = {p.stem for p in (out / "labelsTr").glob("*.png")}
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 2
    for fold in splits:
        assert set(fold["train"]) <= cases and set(fold["val"]) <= cases
        assert fold["val"] and not set(fold["train"]) & set(fold["val"])
    assert set().union(*(f["val"] for f in splits)) == cases  # every case validated exactly once
    assert splits == read_json(prepared / "splits_final.json")


def test_split_comes_from_folds_json_when_the_run_predates_splits_final(prepared: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old_run"
    shutil.copytree(prepared, old)
    (old / "splits_final.json").unlink()
    out = export_nnunet_raw(old, tmp_path / "raw", dataset_id=9)
    assert json.loads((out / "splits_final.json").read_text()) == read_json(prepared / "splits_final.json")


def test_subset_keys_filter_the_split(prepared: Path, tmp_path: Path) -> None:
    folds = read_json(prepared / "folds.json")
    keep = folds["0"]["train"][:3] + folds["0"]["val"][:2]
    out = export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=9, keys=keep)
    cases = {p.stem for p in (out / "labelsTr").glob("*.png")}
    assert cases == {case_name(k) for k in keep}
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 5
    split0 = json.loads((out / "splits_final.json").read_text())[0]
    assert set(split0["train"]) | set(split0["val"]) == cases
    with pytest.raises(ToothsegError, match="not a sample"):
        export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=10, keys=["nope/x"])


def test_refuses_non_empty_output_without_overwrite(prepared: Path, tmp_path: Path) -> None:
    out = export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=11)
    (out / "labelsTr" / "stale.png").write_bytes(b"")
    with pytest.raises(ToothsegError, match="not empty"):
        export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=11)
    assert (out / "labelsTr" / "stale.png").exists()  # untouched
    again = export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=11, overwrite=True)
    assert again == out and not (out / "labelsTr" / "stale.png").exists()
    with pytest.raises(ToothsegError):
        export_nnunet_raw(prepared, tmp_path / "raw", dataset_id=1000)


def test_case_name_clash_is_refused(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    samples = [Sample("src", "a b", img), Sample("src", "a_b", img)]
    with pytest.raises(ToothsegError, match="both become"):
        export_nnunet_images(samples, tmp_path / "in")


def test_images_for_predict_and_renaming_back(prepared: Path, tmp_path: Path) -> None:
    from toothseg.data.layout import read_index

    samples = read_index(prepared / "samples.csv")[:4]
    inp = export_nnunet_images(samples, tmp_path / "in")
    assert sorted(p.name for p in inp.glob("*.png")) == sorted(f"{case_name(s.key)}_0000.png" for s in samples)
    # fake nnU-Net output: <case>.png label maps
    pred = tmp_path / "pred"
    pred.mkdir()
    for s in samples:
        (pred / f"{case_name(s.key)}.png").write_bytes((inp / f"{case_name(s.key)}_0000.png").read_bytes())
    counts = rename_predictions(pred, inp / CASES_FILE, tmp_path / "renamed")
    assert counts == {samples[0].source: 4}
    assert sorted(p.stem for p in (tmp_path / "renamed" / samples[0].source).glob("*.png")) == sorted(
        s.image_id for s in samples)
    (pred / "stranger.png").write_bytes(b"")
    with pytest.raises(ToothsegError, match="stranger"):
        rename_predictions(pred, inp / CASES_FILE, tmp_path / "renamed2")
