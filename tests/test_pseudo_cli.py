"""`toothseg pseudo-label`: registered, documented, and bad input ends in one line (exit 2), no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toothseg.cli import app
from toothseg.errors import ConfigError
from toothseg.folds_arg import parse_folds


def test_help_lists_the_options() -> None:
    res = CliRunner().invoke(app, ["pseudo-label", "--help"])
    assert res.exit_code == 0
    for opt in ("--teacher", "--confidence", "--select", "--value", "--retrain", "--schedule", "--rounds", "--soft"):
        assert opt in res.output


def test_parse_folds() -> None:
    assert parse_folds(None) is None and parse_folds("all") is None
    assert parse_folds("0,2") == [0, 2]
    with pytest.raises(ConfigError, match="--folds"):
        parse_folds("zero")


def test_missing_run_folder_is_one_line_error(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", "from toothseg.cli import main; main()", "pseudo-label",
                          str(tmp_path / "nope")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_selection_value_names_the_key(tmp_path: Path) -> None:
    from toothseg.config import build_config, save_config

    save_config(build_config("tiny"), tmp_path / "config.yaml")
    res = subprocess.run([sys.executable, "-c", "from toothseg.cli import main; main()", "pseudo-label",
                          str(tmp_path), "--select", "quantile", "--value", "3"], capture_output=True, text=True)
    assert res.returncode == 2 and "pseudo.select_value" in res.stderr
