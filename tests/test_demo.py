"""`toothseg demo` end to end, shrunk: every stage runs and writes what it promises."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from toothseg.cli import app


def test_demo_runs_every_stage_and_refuses_to_overwrite(tmp_path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--labelled", "12", "--unlabelled", "6", "--test", "3",
            "--set", "train.epochs=1", "--set", "train.threads=1", "--set", "train.scales=[[64, 128]]"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "held-out test Dice" in res.output
    run = out / "run"
    for f in ("config.yaml", "samples.csv", "folds.json", "curation.json", "bundle/bundle.json",
              "reports/report.html", "reports/metrics.csv"):
        assert (run / f).is_file(), f
    assert len(list((out / "predictions" / "masks").glob("*.png"))) == 3
    assert (run / "pseudo" / "scores.csv").is_file()
    assert (run / "suggest" / "worklist.csv").is_file()
    assert f"toothseg review {run}" in res.output
    bundle = json.loads((run / "bundle" / "bundle.json").read_text())
    assert 0.0 < bundle["threshold"] < 1.0
    # a second demo into the same folder must not touch the first
    res2 = CliRunner().invoke(app, args)
    assert res2.exit_code != 0
    assert "not empty" in str(res2.exception)
    assert (run / "bundle" / "bundle.json").is_file()
