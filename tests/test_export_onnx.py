"""ONNX export: graphs ONNX Runtime runs, recorded in bundle.json, probabilities within 1e-4 of PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from helpers.fakerun import draw_sample, make_trained_run
from toothseg.cli import app
from toothseg.errors import ConfigError, ToothsegError
from toothseg.predict.bundle_build import build_bundle
from toothseg.predict.export import export
from toothseg.predict.batch import predict
from toothseg.predict.predictor import Predictor


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx")
    b = build_bundle(make_trained_run(root, tags={"unet-tiny-64x128": (64, 128)}, folds=2, seed=3))
    export(b, threads=1)
    return b


def test_export_writes_and_records_graphs(exported: Path) -> None:
    meta = json.loads((exported / "bundle.json").read_text())
    assert [m["onnx"] for m in meta["members"]] == ["onnx/unet-tiny-64x128__fold0.onnx",
                                                    "onnx/unet-tiny-64x128__fold1.onnx"]
    assert all((exported / m["onnx"]).is_file() for m in meta["members"])
    assert meta["onnx"]["opset"] == 17 and meta["onnx"]["onnx_max_abs_diff"] < 1e-4


def test_onnxruntime_matches_torch_within_1e4(exported: Path) -> None:
    img = draw_sample(np.random.default_rng(9), (83, 171))[0]
    pt = Predictor.from_bundle(exported, engine="torch", tta=True, threads=1)
    ox = Predictor.from_bundle(exported, engine="onnxruntime", tta=True, threads=1)
    for a, b in zip(pt.predict_members(img), ox.predict_members(img)):
        assert np.abs(a - b).max() < 1e-4
    pa, pb = pt.predict_proba(img), ox.predict_proba(img)
    assert np.abs(pa - pb).max() < 1e-4
    # batch of 3 through the dynamic batch axis
    batch = [pt.prepare(draw_sample(np.random.default_rng(s), (64, 128))[0]) for s in range(3)]
    for a, b in zip(pt.predict_proba_batch(batch), ox.predict_proba_batch(batch)):
        assert np.abs(a - b).max() < 1e-4


def test_predict_with_onnxruntime_engine(exported: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "x.png"), draw_sample(np.random.default_rng(2), (70, 140))[0])
    s = predict(exported, [str(src)], tmp_path / "out", engine="onnxruntime", threads=1)
    assert s.n_ok == 1 and s.engine == "onnxruntime"
    assert json.loads((tmp_path / "out" / "json" / "x.json").read_text())["engine"] == "onnxruntime"


def test_export_refuses_to_overwrite_and_bad_requests(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(ToothsegError, match="--overwrite"):
        export(exported, threads=1)
    with pytest.raises(ConfigError, match="format"):
        export(exported, format="tflite")
    with pytest.raises(ConfigError, match="scale TTA"):
        Predictor.from_bundle(exported, engine="onnxruntime", tta=["scale:1.5"])
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "onnx" / "unet-tiny-64x128__fold0.onnx").write_bytes(b"garbage")
    with pytest.raises(ToothsegError, match="ONNX Runtime cannot load"):
        Predictor.from_bundle(broken, engine="onnxruntime", folds=[0])


def test_onnx_engine_needs_export(tmp_path: Path) -> None:
    b = build_bundle(make_trained_run(tmp_path, tags={"t-64x128": (64, 128)}, folds=1))
    with pytest.raises(ToothsegError, match="toothseg export"):
        Predictor.from_bundle(b, engine="onnxruntime")
    r = CliRunner().invoke(app, ["export", str(b), "--out", str(tmp_path / "onnx_out"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "onnx_out" / "t-64x128__fold0.onnx").is_file()
    assert Predictor.from_bundle(b, engine="onnxruntime", tta=False, threads=1).predict_proba(
        draw_sample(np.random.default_rng(0), (64, 128))[0]).shape == (64, 128)
