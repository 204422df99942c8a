"""DDP the standard Lightning way: 2 CPU processes (gloo) train a few steps of the tiny preset."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers.fakerun import make_run

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from toothseg.train.engine import train
    out = train({run!r}, fold=0, overrides=["train.accelerator=cpu", "train.devices=2", "train.strategy=ddp",
                                            "train.max_steps=2", "train.threads=1", "train.epochs=4"])
    print("DONE", sorted(out["models"]), flush=True)
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    run, _ = make_run(tmp_path, n=8, overrides=["train.batch_size=2", "train.hard_fraction=0"])
    script = tmp_path / "ddp_train.py"  # Lightning's DDP launcher re-runs this script once per extra process
    script.write_text(SCRIPT.format(tests=str(HERE), run=str(run)))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert "ddp" in (p.stdout + p.stderr).lower() or "distributed" in (p.stdout + p.stderr).lower()
    fd = run / "train" / "unet-tu-tf_efficientnetv2_b0-64x128" / "fold0"
    fit = json.loads((fd / "fit.json").read_text())
    assert fit["global_step"] == 2  # 2 optimizer steps, each on both processes' shards
    assert (fd / "best.ckpt").is_file() and (fd / "oof.csv").is_file()
