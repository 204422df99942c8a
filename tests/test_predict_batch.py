"""`predict` / `toothseg predict` over folders with bad files: outputs, records, summary, failures, no overwrite."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from helpers.fakerun import draw_sample
from toothseg.cli import app
from toothseg.errors import ToothsegError
from toothseg.predict.bundle_build import build_bundle
from toothseg.predict.batch import predict


@pytest.fixture(scope="module")
def bundle_dir(fake_run: Path) -> Path:
    return build_bundle(fake_run)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(1)
    cv2.imwrite(str(d / "a.png"), draw_sample(rng, (70, 140))[0])
    cv2.imwrite(str(d / "b.jpg"), draw_sample(rng, (81, 160))[0])
    (d / "sub").mkdir()
    tifffile.imwrite(d / "sub" / "c.tif", (draw_sample(rng, (64, 128))[0].astype(np.uint16) * 200))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "notes.txt").write_text("not an image")
    return d


def _rows(out: Path) -> dict[str, dict]:
    with (out / "summary.csv").open() as f:
        return {r["stem"]: r for r in csv.DictReader(f)}


def test_predict_folder_with_bad_file(bundle_dir: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    s = predict(bundle_dir, [str(inputs), str(inputs / "missing.png")], out, save_prob=True, folds=[0], batch_size=2,
                workers=2, threads=1)
    assert (s.n_ok, s.n_failed, s.n_skipped) == (3, 2, 0)
    errors = " ".join(f["error"] for f in s.failures)
    assert "broken.png" in errors and "missing.png" in errors
    for stem, shape in {"a": (70, 140), "b": (81, 160), "c": (64, 128)}.items():
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        assert cv2.imread(str(out / "prob" / f"{stem}.png"), cv2.IMREAD_UNCHANGED).shape == shape
        assert cv2.imread(str(out / "overlays" / f"{stem}.png")).shape == (*shape, 3)
        rec = json.loads((out / "json" / f"{stem}.json").read_text())
        assert rec["tooth_area_px"] == int((mask > 0).sum()) and rec["height"] == shape[0]
        assert rec["threshold"] < 0.5 and rec["members"] == [m for m in rec["members"] if m.endswith("fold0")]
        assert {"n_components", "mean_confidence", "postprocess", "tta", "outputs"} <= set(rec)
    rows = _rows(out)
    assert rows["a"]["status"] == "ok" and rows["broken"]["status"] == "failed" and rows["missing"]["status"] == "failed"


def test_existing_outputs_are_not_overwritten(bundle_dir: Path, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = predict(bundle_dir, [str(inputs / "a.png")], out, folds=[0], tta=False, threads=1)
    assert first.n_ok == 1
    mask_file = out / "masks" / "a.png"
    cv2.imwrite(str(mask_file), np.zeros((70, 140), np.uint8))  # mark it: a re-run must leave it alone
    again = predict(bundle_dir, [str(inputs / "a.png")], out, folds=[0], tta=False, threads=1)
    assert (again.n_ok, again.n_skipped) == (0, 1)
    assert cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED).max() == 0
    assert _rows(out)["a"]["status"] == "skipped" and _rows(out)["a"]["tooth_area_px"] != ""
    forced = predict(bundle_dir, [str(inputs / "a.png")], out, folds=[0], tta=False, overwrite=True, threads=1)
    assert forced.n_ok == 1
    rec = json.loads((out / "json" / "a.json").read_text())
    assert (cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED) > 0).sum() == rec["tooth_area_px"]


def test_same_stem_twice_is_reported(bundle_dir: Path, inputs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes((inputs / "a.png").read_bytes())
    s = predict(bundle_dir, [str(inputs / "a.png"), str(other / "a.png")], tmp_path / "out", folds=[0], tta=False,
                overlay=False, threads=1)
    assert s.n_ok == 1 and s.n_failed == 1 and "already used" in s.failures[0]["error"]
    assert not (tmp_path / "out" / "overlays").exists()


def test_no_usable_input_is_an_error(bundle_dir: Path, inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(ToothsegError, match="no image to predict"):
        predict(bundle_dir, [str(inputs / "notes.txt")], tmp_path / "out", threads=1)


def test_cli_exit_codes(bundle_dir: Path, inputs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", str(bundle_dir), str(inputs / "a.png"), str(inputs / "sub" / "*.tif"),
                             "--out", str(tmp_path / "o1"), "--folds", "1", "--no-tta", "--threads", "1"])
    assert ok.exit_code == 0, ok.output
    assert "2 predicted" in ok.output
    bad = runner.invoke(app, ["predict", str(bundle_dir), str(inputs), "--out", str(tmp_path / "o2"), "--folds", "1",
                              "--no-tta", "--threads", "1", "--threshold", "0.3"])
    assert bad.exit_code == 1 and "1 failed" in bad.output
    assert json.loads((tmp_path / "o2" / "json" / "a.json").read_text())["threshold"] == 0.3
    nob = runner.invoke(app, ["predict", str(tmp_path), str(inputs / "a.png"), "--out", str(tmp_path / "o3")])
    assert isinstance(nob.exception, ToothsegError) and "bundle" in str(nob.exception)
    badfold = runner.invoke(app, ["predict", str(bundle_dir), str(inputs / "a.png"), "--out", str(tmp_path / "o4"),
                                  "--folds", "x"])
    assert badfold.exit_code == 2


def test_postprocess_overrides_reach_the_masks(bundle_dir: Path, inputs: Path, tmp_path: Path) -> None:
    tuned = json.loads((bundle_dir / "bundle.json").read_text())["postprocess"]
    assert tuned["min_component"] > 0  # the fake run plants specks that tuning removes
    a = predict(bundle_dir, [str(inputs / "a.png")], tmp_path / "tuned", folds=[0], threads=1, overlay=False)
    b = predict(bundle_dir, [str(inputs / "a.png")], tmp_path / "raw", folds=[0], threads=1, overlay=False,
                min_component=0, fill_holes=False)
    assert a.n_ok == b.n_ok == 1
    rec_a = json.loads((tmp_path / "tuned" / "json" / "a.json").read_text())
    rec_b = json.loads((tmp_path / "raw" / "json" / "a.json").read_text())
    assert rec_a["postprocess"] == tuned
    assert rec_b["postprocess"] == {"min_component": 0, "fill_holes": False}
    with pytest.raises(ToothsegError, match="min_component"):
        predict(bundle_dir, [str(inputs / "a.png")], tmp_path / "bad", min_component=-1)
