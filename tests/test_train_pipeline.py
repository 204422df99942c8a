"""`toothseg run DATA --out RUN --preset tiny` chains prepare -> train on a tiny drawn dataset (CLI path)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from helpers.fakerun import make_dataset
from toothseg.cli import app


@pytest.mark.slow  # prepare + one fold of training + bundle: ~40 s idle
def test_run_verb_prepares_and_trains(tmp_path):
    data = make_dataset(tmp_path / "data", n=10)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(data), "--out", str(run), "--preset", "tiny", "--fold", "0",
                                   "--set", "train.scales=[[64, 128]]", "--set", "train.epochs=1",
                                   "--set", "curate.n_folds=2", "--set", "train.threads=2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (run / "folds.json").is_file() and (run / "samples.csv").is_file()
    info = json.loads((run / "train" / "unet-tu-tf_efficientnetv2_b0-64x128" / "model.json").read_text())
    assert info["folds"] == [0] and "CV Dice" in res.output


def test_run_verb_rejects_missing_data(tmp_path):
    res = CliRunner().invoke(app, ["run", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--preset", "tiny"])
    assert res.exit_code != 0
