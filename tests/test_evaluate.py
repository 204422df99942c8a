"""`toothseg evaluate`: matching by stem, failures and extras reported, summaries, CLI exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from toothseg.cli import app
from toothseg.data.io import write_png
from toothseg.evaluate.evaluate import CSV_COLUMNS, describe, evaluate, evaluate_arrays, summarise
from toothseg.evaluate.metrics import mask_metrics


def _blob(seed: int, shape: tuple[int, int] = (32, 64)) -> np.ndarray:
    return ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 3) > 0.5


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """GT dataset 'clinic' with a0..a5 (a5 empty: edentulous); predictions for a0..a3 (+ a4 wrong size, + extra)."""
    gt_dir, pred_dir = tmp_path / "clinic", tmp_path / "pred"
    for i in range(6):
        gt = _blob(i) if i < 5 else np.zeros((32, 64), bool)
        write_png(gt_dir / "masks" / f"a{i}.png", gt)
        if i < 4:
            write_png(pred_dir / f"a{i}.png", (ndimage.binary_dilation(gt) if i % 2 else gt).astype(np.uint8))
    write_png(pred_dir / "a4.png", np.zeros((16, 16), np.uint8))
    write_png(pred_dir / "stray.png", np.zeros((32, 64), np.uint8))
    return pred_dir, gt_dir


def _read_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {r["image_id"]: r for r in csv.DictReader(f)}


def test_evaluate_reports_everything(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = folders
    write_png(pred_dir / "a5.png", np.zeros((32, 64), bool))  # edentulous, correctly empty
    (pred_dir / "a3.png").write_bytes(b"not a png")  # unreadable prediction
    s = evaluate(pred_dir, gt_dir, out=tmp_path / "ev")
    rows = _read_rows(tmp_path / "ev" / "metrics.csv")
    assert list(next(iter(rows.values()))) == list(CSV_COLUMNS)
    assert set(rows) == {f"a{i}" for i in range(6)}
    assert rows["a0"]["status"] == "ok" and float(rows["a0"]["dice"]) == 1.0
    assert rows["a4"]["status"] == "size-mismatch" and float(rows["a4"]["dice"]) == 0.0
    assert float(rows["a4"]["hd"]) == pytest.approx(np.hypot(32, 64), abs=1e-4)
    assert rows["a3"]["status"] == "unreadable"
    assert rows["a5"]["status"] == "ok" and float(rows["a5"]["dice"]) == 1.0 and float(rows["a5"]["hd"]) == 0.0
    assert rows["a0"]["source"] == "clinic"
    assert s.missing == [] and sorted(s.failed) == ["a3", "a4"] and s.extra == ["stray"]
    assert s.n_images == 6 and s.n_failed == 2
    # the summary is over all six rows, failures included as zeros
    dices = [float(r["dice"]) for r in rows.values()]
    assert s.metrics["dice"]["mean"] == pytest.approx(np.mean(dices), abs=1e-5)
    lo, hi = s.metrics["dice"]["ci95"]
    assert lo <= s.metrics["dice"]["mean"] <= hi
    on_disk = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert on_disk["metrics"]["sts"]["mean"] == pytest.approx(s.metrics["sts"]["mean"])
    md = (tmp_path / "ev" / "summary.md").read_text()
    assert "| dice |" in md and "stray" in md and "image diagonal" in md


def test_missing_predictions_count_as_failures(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = folders
    s = evaluate(pred_dir, gt_dir, out=tmp_path / "ev")
    assert s.missing == ["a5"]
    rows = _read_rows(tmp_path / "ev" / "metrics.csv")
    assert rows["a5"]["status"] == "missing" and float(rows["a5"]["sts"]) == 0.0


def test_default_out_and_no_overwrite(folders: tuple[Path, Path]) -> None:
    from toothseg.errors import ToothsegError

    pred_dir, gt_dir = folders
    evaluate(pred_dir, gt_dir)
    assert (pred_dir / "evaluation" / "metrics.csv").is_file()
    before = (pred_dir / "evaluation" / "metrics.csv").read_text()
    with pytest.raises(ToothsegError, match="--overwrite"):
        evaluate(pred_dir, gt_dir)
    evaluate(pred_dir, gt_dir, overwrite=True)
    assert (pred_dir / "evaluation" / "metrics.csv").read_text() == before  # deterministic, CI included


def test_per_source_subfolder_and_mask_folder(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = folders
    nested = tmp_path / "nested" / "clinic"
    nested.mkdir(parents=True)
    for p in pred_dir.glob("*.png"):
        (nested / p.name).write_bytes(p.read_bytes())
    a = evaluate(tmp_path / "nested", gt_dir / "masks", out=tmp_path / "e1")  # PRED/<source>/, GT = masks folder
    b = evaluate(pred_dir, gt_dir, out=tmp_path / "e2")
    assert a.source == "clinic" and a.metrics["dice"] == b.metrics["dice"]


@pytest.mark.parametrize("case", ["no-pred-dir", "no-gt-dir", "no-match", "empty-gt", "bad-tolerance"])
def test_bad_input_raises_one_line(case: str, folders: tuple[Path, Path], tmp_path: Path) -> None:
    from toothseg.errors import ToothsegError

    pred_dir, gt_dir = folders
    kwargs = {}
    if case == "no-pred-dir":
        pred_dir = tmp_path / "nowhere"
    elif case == "no-gt-dir":
        gt_dir = tmp_path / "nowhere"
    elif case == "no-match":
        other = tmp_path / "other"
        write_png(other / "zzz.png", np.zeros((32, 64), bool))
        pred_dir = other
    elif case == "empty-gt":
        (tmp_path / "emptygt" / "masks").mkdir(parents=True)
        gt_dir = tmp_path / "emptygt"
    else:
        kwargs["tolerance"] = -1.0
    with pytest.raises(ToothsegError) as info:
        evaluate(pred_dir, gt_dir, out=tmp_path / "ev", **kwargs)
    assert "\n" not in str(info.value)


def test_evaluate_arrays_and_summarise() -> None:
    gt = _blob(7)
    pred = ndimage.binary_erosion(gt)
    rows = evaluate_arrays([("x", pred, gt), ("y", gt, gt), ("z", gt[:10], gt)], source="s")
    assert rows[0]["dice"] == pytest.approx(mask_metrics(pred, gt)["dice"])
    assert rows[1]["sts"] == 1.0 and rows[2]["status"] == "size-mismatch"
    s = summarise(rows)
    assert s["n_images"] == 3 and s["n_failed"] == 1 and "s" in s["by_source"]
    d = describe([1.0, 1.0, float("nan")])
    assert d == {"n": 2, "mean": 1.0, "median": 1.0, "std": 0.0, "ci95": [1.0, 1.0]}
    assert describe([])["mean"] is None


def test_cli_evaluate(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = folders
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "6 images" in res.output and "Dice" in res.output and "STS" in res.output
    assert "1 missing predictions: a5" in res.output and "stray" in res.output
    res = runner.invoke(app, ["evaluate", str(pred_dir), str(gt_dir), "--out", str(tmp_path / "ev")])
    assert res.exit_code != 0  # refuses to overwrite


def test_cli_main_exit_code_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import sys

    from toothseg.cli import main

    monkeypatch.setattr(sys, "argv", ["toothseg", "evaluate", str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "prediction folder not found" in capsys.readouterr().err
