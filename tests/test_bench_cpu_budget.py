"""bench/cpu_budget.py's own logic (the arms themselves are checked by running it; see its docstring)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "cpu_budget.py"
SPEC = importlib.util.spec_from_file_location("cpu_budget", SCRIPT)
cpu_budget = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cpu_budget)


def test_an_existing_work_folder_is_refused_without_resume(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["cpu_budget.py", str(tmp_path), "--data", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="--resume"):
        cpu_budget.main()


def test_arms_parse_and_bad_names_are_refused():
    # as the shell hands it over: --arm ema="--set a=b --set c=d" arrives without the quotes
    assert cpu_budget.parse_arm("ema=--set train.ema_decay=0.99 --set train.schedule=onecycle") == (
        "ema", ["--set", "train.ema_decay=0.99", "--set", "train.schedule=onecycle"])
    for bad in ("noequals", "smp=--set a=b", "bad name=--set a=b", "=--set a=b"):
        with pytest.raises(SystemExit):
            cpu_budget.parse_arm(bad)


def test_table_lists_finished_arms_with_cpu_and_budget_use():
    results = {"cpu": {"model": "AMD EPYC", "cores": 2, "avx2": True, "avx512_bf16": False, "amx": False},
               "onednn_max_cpu_isa": "AVX2", "mimic_avx2": True, "threads": 2, "max_time": "00:30:00",
               "arms": {"toothseg": {"sets": [], "precision": "32-true", "steps": 500, "images_seen": 2000,
                                     "seconds_used": 1790.0, "budget_s": 1800.0, "budget_used": 0.9944,
                                     "dice": 0.9012, "iou": 0.82, "hd95": 31.5},
                        "unfinished": {"sets": ["--set", "x=1"]}}}
    md = cpu_budget.table(results)
    assert "AMD EPYC" in md and "ONEDNN_MAX_CPU_ISA=AVX2" in md and "mimicked AVX2" in md
    assert "| toothseg | - | 32-true | 500 | 2000 | 1790 / 1800 (99.4%) | 0.9012 | 0.8200 | 31.5 |" in md
    assert "unfinished" not in md
