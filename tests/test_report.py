"""`toothseg report` on fake run folders written here in the exact file formats of docs/architecture.md."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from helpers.fakerun import write_curation, write_folds, write_samples
from toothseg.cli import app
from toothseg.data.io import write_png
from toothseg.errors import ToothsegError
from toothseg.evaluate.overlays import FN_RGB, FP_RGB, TP_RGB, error_overlay
from toothseg.evaluate.report import read_training_log, report

TAG = "unet-tu-tf_efficientnetv2_b0-128x256"
H, W = 48, 96


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_run(root: Path, n_per_source: int = 6, train: bool = True, evaluation: bool = True) -> Path:
    """A small run folder: two sources, curation, 2 folds with Lightning-style logs, OOF maps, pseudo scores."""
    rng = np.random.default_rng(0)
    data, run = root / "data", root / "run"
    samples, keys = [], []
    for src in ("clinicA", "clinicB"):
        for i in range(n_per_source):
            img = (ndimage.gaussian_filter(rng.random((H, W)), 2) * 255).astype(np.uint8)
            gt = ndimage.gaussian_filter(rng.random((H, W)), 3) > 0.5
            write_png(data / src / "images" / f"{i}.png", img)
            write_png(data / src / "masks" / f"{i}.png", gt)
            samples.append([f"{src}/{i}", src, str(i), str(data / src / "images" / f"{i}.png"),
                            str(data / src / "masks" / f"{i}.png")])
            keys.append(f"{src}/{i}")
        samples.append([f"{src}/u0", src, "u0", str(data / src / "images" / "0.png"), ""])
    write_samples(run, samples)
    _write_csv(run / "duplicates.csv", ["group_id", "source", "image_id", "labelled", "distance", "kept", "role"],
               [[0, "clinicA", "0", 1, 0, 1, "keep"], [0, "clinicB", "u0", 0, 3, 0, "copy"]])
    items = {k: {"group": None, "use": "train", "reason": ""} for k in keys}
    items["clinicB/u0"] = {"group": 0, "use": "label-from:clinicA/0", "reason": "unlabelled copy of a labelled image"}
    write_curation(run, items, {"images": len(samples), "groups": 1})
    folds = {"0": {"train": keys[1::2], "val": keys[0::2]}, "1": {"train": keys[0::2], "val": keys[1::2]}}
    write_folds(run, folds)
    if train:
        tag = run / "train" / TAG
        for k, fold in folds.items():
            fd = tag / f"fold{k}"
            log_rows = []
            for e in range(4):
                log_rows.append([e, e * 3 + 2, 1.0 / (e + 1), 1.1 / (e + 1), "", "", "", 3e-4 * (1 - e / 4)])
                log_rows.append([e, e * 3 + 2, "", "", 1.2 / (e + 1), 0.5 + 0.1 * e, 0.4 + 0.1 * e, ""])
            _write_csv(fd / "metrics.csv", ["epoch", "step", "train_loss_step", "train_loss_epoch", "val_loss",
                                            "val_dice", "val_iou", "lr"], log_rows)
            oof = []
            for j, key in enumerate(fold["val"]):
                src, iid = key.split("/")
                from toothseg.data.io import read_mask
                gt = read_mask(data / src / "masks" / f"{iid}.png")
                prob = ndimage.gaussian_filter(gt.astype(float), 1 + j)  # blurrier = worse
                prob[: H // 4 * (j % 2)] = 0.9  # a false-positive band on some
                write_png(fd / "oof" / src / f"{iid}.png", (prob * 255).astype(np.uint8))
                oof.append([key, 0.9 - 0.05 * j, 0.8 - 0.05 * j, 2.0 + j])
            _write_csv(fd / "oof.csv", ["key", "dice", "iou", "hd95"], oof)
        (tag / "model.json").write_text(json.dumps({"tag": TAG, "model": {"name": "unet", "encoder": "tu-x"},
                                                    "scale": [128, 256], "folds": [0, 1], "cv_dice": 0.8}))
        _write_csv(run / "pseudo" / "scores.csv", ["key", "score", "selected"],
                   [["clinicA/u0", 0.9, 1], ["clinicB/u0", 0.4, 0]])
        (run / "bundle").mkdir()
        (run / "bundle" / "bundle.json").write_text(json.dumps({"threshold": 0.4}))
    if evaluation:
        from toothseg.evaluate.evaluate import evaluate

        pred = root / "pred"
        for i in range(n_per_source):
            from toothseg.data.io import read_mask
            write_png(pred / f"{i}.png", ndimage.binary_dilation(read_mask(data / "clinicA" / "masks" / f"{i}.png")))
        evaluate(pred, data / "clinicA", out=run / "reports")
    return run


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_full_report_has_every_section(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = report(run)
    assert path == run / "reports" / "report.html"
    page = path.read_text()
    for needle in ("Dataset and curation", "clinicA", "clinicB", "Duplicates", "Folds", "Cross-validation", TAG,
                   "Training curves", "Held-out evaluation", "Per-source breakdown", "Pseudo-labels",
                   "1 selected", "Worst 8", "false positive", "false negative", "0.40"):
        assert needle in page, needle
    imgs = _images(page)
    assert len(imgs) >= 5 and all(b.startswith(b"\x89PNG") for b in imgs)
    assert page.count("<figure class='case'>") == 8
    assert "http://" not in page and "https://" not in page  # self-contained
    # per-fold table rows: fold0, fold1, all
    assert re.search(r"<td>fold0</td><td>6</td>", page) and re.search(r"<td>fold1</td><td>6</td>", page)


def test_report_skips_stages_not_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, train=False, evaluation=False)
    page = report(run).read_text()
    assert "clinicA" in page and "toothseg train" in page and "toothseg evaluate" in page
    assert "<figure" not in page


def test_report_survives_a_broken_item(tmp_path: Path) -> None:
    run = make_run(tmp_path, evaluation=False)
    bad = next((run / "train" / TAG / "fold0" / "oof" / "clinicA").glob("*.png"))
    bad.write_bytes(b"garbage")
    page = report(run, worst=20).read_text()
    assert "clinicA/" + bad.stem in page and page.count("<img class=\"overlay\"") == 11


def test_report_refuses_to_overwrite_explicit_out(tmp_path: Path) -> None:
    run = make_run(tmp_path, train=False, evaluation=False)
    target = tmp_path / "mine.html"
    target.write_text("keep me")
    with pytest.raises(ToothsegError, match="--overwrite"):
        report(run, out=target)
    assert target.read_text() == "keep me"
    report(run, out=target, overwrite=True)
    assert "<!DOCTYPE html>" in target.read_text()
    report(run)
    report(run)  # the run's own report is rebuilt without a flag


def test_report_bad_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ToothsegError, match="not found"):
        report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToothsegError, match="nothing to report"):
        report(tmp_path / "empty")


def test_training_log_collapses_split_rows(tmp_path: Path) -> None:
    p = tmp_path / "metrics.csv"
    _write_csv(p, ["epoch", "step", "train_loss_epoch", "val_dice"], [[0, 1, 0.5, ""], [0, 1, "", 0.7], [1, 3, 0.4, ""]])
    assert read_training_log(p) == {"train_loss_epoch": [(0.0, 0.5), (1.0, 0.4)], "val_dice": [(0.0, 0.7)]}


def test_error_overlay_colours() -> None:
    gt = np.zeros((4, 4), bool)
    pred = np.zeros((4, 4), bool)
    gt[0, :2] = pred[0, 0] = pred[1, 0] = True  # TP (0,0), FN (0,1), FP (1,0)
    rgb = error_overlay(np.full((4, 4), 100, np.uint8), pred, gt)
    assert tuple(rgb[0, 1]) == FN_RGB and tuple(rgb[1, 0]) == FP_RGB
    assert rgb[0, 0, 1] > rgb[0, 0, 0] and tuple(rgb[3, 3]) == (100, 100, 100)
    assert TP_RGB != FP_RGB != FN_RGB
    with pytest.raises(ValueError):
        error_overlay(None, pred, gt[:2])


def test_cli_report(tmp_path: Path) -> None:
    run = make_run(tmp_path, train=False)
    res = CliRunner().invoke(app, ["report", str(run), "--worst", "2"])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output and (run / "reports" / "report.html").is_file()


def test_report_says_why_a_consistency_run_has_no_pseudo_labels(tmp_path: Path) -> None:
    from toothseg.config import build_config
    from toothseg.run.folder import open_run

    run = make_run(tmp_path, train=False, evaluation=False)
    assert "toothseg pseudo-label" in report(run).read_text() and "online" not in report(run).read_text()
    open_run(run).save_config(build_config("tiny", overrides=["pseudo.schedule=consistency"]))
    page = report(run).read_text()
    assert "<code>consistency</code>, learns from the unlabelled images online" in page
    assert "pseudo/scores.csv not found" not in page
