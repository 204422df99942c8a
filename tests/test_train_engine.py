"""`toothseg train` end to end on a tiny drawn run folder: files and their contracts, refusals, bad options."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import pytest
import torch
from typer.testing import CliRunner

from helpers.fakerun import make_run
from toothseg.cli import app
from toothseg.errors import ConfigError, ToothsegError
from toothseg.train.engine import model_tag, train

TAG = "unet-tu-tf_efficientnetv2_b0-64x128"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fold trained for one epoch (the module's other tests read its outputs)."""
    root = tmp_path_factory.mktemp("train")
    run, cfg = make_run(root, n=8, overrides=["train.hard_fraction=0"])
    out = train(run, fold=0)
    return run, out


def test_fold_outputs_follow_the_contract(trained):
    run, out = trained
    fd = run / "train" / TAG / "fold0"
    for name in ("best.ckpt", "metrics.csv", "oof.csv", "fit.json"):
        assert (fd / name).is_file(), name
    assert not (fd / "last.ckpt").exists()  # resume state, removed once the fold finished
    ck = torch.load(fd / "best.ckpt", map_location="cpu", weights_only=False)
    assert "optimizer_states" not in ck
    assert all(k.startswith("model.") for k in ck["state_dict"])
    assert ck["hyper_parameters"]["scale"] == [64, 128] and ck["hyper_parameters"]["resize"] == "resize"
    assert ck["hyper_parameters"]["model"]["name"] == "unet"
    rows = list(csv.DictReader((fd / "metrics.csv").open()))
    assert rows and {"epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr"} <= set(rows[0])
    assert rows[-1]["val_dice"] != "" and rows[-1]["train_loss"] != ""
    oof = list(csv.DictReader((fd / "oof.csv").open()))
    folds = json.loads((run / "folds.json").read_text())
    assert [r["key"] for r in oof] == folds["0"]["val"] and list(oof[0]) == ["key", "dice", "iou", "hd95"]
    for r in oof:  # OOF maps at the original image size (drawn at 64x128 here... check against the image)
        src, iid = r["key"].split("/")
        png = cv2.imread(str(fd / "oof" / src / f"{iid}.png"), cv2.IMREAD_UNCHANGED)
        img = cv2.imread(str(run.parent / "data" / src / "images" / f"{iid}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype.name == "uint8" and png.shape == img.shape


def test_model_json_and_return_value(trained):
    run, out = trained
    info = json.loads((run / "train" / TAG / "model.json").read_text())
    assert info["tag"] == TAG and info["scale"] == [64, 128] and info["folds"] == [0]
    assert info["model"]["encoder"] == "tu-tf_efficientnetv2_b0" and info["resize"] == "resize"
    assert 0 <= info["cv_dice"] <= 1 and 0 <= info["cv_iou"] <= 1 and info["cv_hd95"] >= 0
    assert out["models"][TAG]["cv_dice"] == info["cv_dice"]


def test_refuses_to_overwrite_checkpoints_without_resume(trained):
    run, _ = trained
    with pytest.raises(ToothsegError, match="fold0.*--resume.*--overwrite"):
        train(run, fold=0)


def test_resume_of_a_finished_fold_is_a_no_op(trained):
    run, _ = trained
    fd = run / "train" / TAG / "fold0"
    before = (fd / "best.ckpt").stat().st_mtime
    train(run, fold=0, resume=True)
    assert (fd / "best.ckpt").stat().st_mtime == before


def test_bad_fold_and_bad_options(trained):
    run, _ = trained
    with pytest.raises(ConfigError, match="--fold 7"):
        train(run, fold=7)
    with pytest.raises(ConfigError, match="HH:MM:SS"):
        train(run, fold=0, max_time="30min")
    with pytest.raises(ConfigError, match="multiples of 32"):
        train(run, fold=0, overrides=["train.scales=[[100, 200]]"])


def test_cli_reports_errors_in_one_line(trained):
    run, _ = trained
    res = CliRunner().invoke(app, ["train", str(run), "--fold", "9"])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)


def test_model_tag_names():
    from toothseg.config import ModelConfig

    assert model_tag(ModelConfig(name="Unet", encoder="tu-tf_efficientnetv2_b0"), (320, 640)) == \
        "unet-tu-tf_efficientnetv2_b0-320x640"


def test_missing_folds_file(tmp_path):
    run, _ = make_run(tmp_path, n=4)
    (run / "folds.json").unlink()
    with pytest.raises(ToothsegError, match="folds.json"):
        train(run, fold=0)


def test_missing_pretrained_weights_fail_clearly_without_download(trained, monkeypatch, tmp_path):
    run, _ = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ConfigError, match="nope.pth"):
        train(run, fold=1, overrides=["model.weights=/nonexistent/nope.pth"])
    with pytest.raises(ConfigError, match="no cached weights"):
        train(run, fold=1, overrides=["model.weights=cache"])
    assert not (run / "train" / TAG / "fold1" / "best.ckpt").exists()


def test_init_from_starts_each_fold_from_the_earlier_runs_fold(trained, tmp_path):
    run, _ = trained
    new = tmp_path / "new"
    for name in ("config.yaml", "samples.csv", "folds.json"):
        (new / name).parent.mkdir(parents=True, exist_ok=True)
        (new / name).write_bytes((run / name).read_bytes())
    with pytest.raises(ToothsegError, match="no fold 1 model of .*train fold 1 of that run"):
        train(new, fold=1, init_from=run)
    assert not list(new.glob("train/*/fold1/*.ckpt"))  # refused before anything trained
    with pytest.raises(ToothsegError, match="names the run being trained"):
        train(run, fold=0, init_from=run)
    start = run / "train" / TAG / "fold0" / "best.ckpt"
    train(new, fold=0, init_from=run)
    stage = json.loads((new / "train" / TAG / "fold0" / "stage.json").read_text())
    assert stage["init"] == str(start)
    log = new / "toothseg.log"
    assert "optimistic" not in log.read_text()  # same folds: the start never saw this fold's validation images
    # new folds (as after `prepare` with reviewed images added): the overlap is named, training goes on
    folds = json.loads((new / "folds.json").read_text())
    folds["0"], folds["1"] = folds["1"], folds["0"]
    (new / "folds.json").write_text(json.dumps(folds))
    train(new, fold=0, init_from=run, overwrite=True)
    n = len(folds["0"]["val"])
    assert f"which trained on {n} of this fold's {n} validation images: its validation and OOF scores are " \
        "optimistic" in log.read_text()
    assert json.loads((new / "train" / TAG / "fold0" / "stage.json").read_text())["init"] == str(start)
    # an earlier run without a readable folds.json: what it trained on is unknown, so it warns and goes on
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "folds.json").unlink()
    train(new, fold=0, init_from=old, overwrite=True)
    assert "which trained on an unknown number of this fold's" in log.read_text()


def test_init_from_cli_option_reaches_training(trained, tmp_path):
    run, _ = trained
    res = CliRunner().invoke(app, ["train", str(run), "--fold", "0", "--init-from", str(tmp_path / "missing")])
    assert res.exit_code != 0 and isinstance(res.exception, ToothsegError)
    assert str(res.exception).startswith(f"{tmp_path / 'missing'}: --init-from: no such run folder")
