"""Killing training mid-run (SIGKILL) and running again with resume continues from last.ckpt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers.fakerun import make_run

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import lightning as L
    import toothseg.train.fit as fit
    from toothseg.config import load_config
    from toothseg.train.kfold import labelled_items, split_items
    from toothseg.run.folder import open_run

    fit.CKPT_EVERY_STEPS = 2
    rd = open_run({run!r})
    cfg = load_config(rd.config)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)

    class FirstStep(L.Callback):
        def on_train_start(self, trainer, module):
            print("START_STEP", trainer.global_step, flush=True)

    res = fit.fit_model(cfg, train, val, rd.root / "fold0", resume={resume}, callbacks=[FirstStep()])
    print("DONE", res.global_step, flush=True)
""")


def _step_of(ckpt: Path) -> int | None:
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # being written right now
        return None


def _launch(run: Path, resume: bool) -> subprocess.Popen:
    code = SCRIPT.format(tests=str(HERE), run=str(run), resume=resume)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


@pytest.mark.slow  # two process start-ups + 8 steps: 40 s idle, minutes on a shared CPU
def test_kill_mid_run_then_resume_continues(tmp_path):
    # 16 images, 8 train in fold 0, batch 2 -> 4 steps/epoch, 2 epochs = 8 steps; last.ckpt every 2 steps, so the
    # kill lands mid-epoch (step 2 or 6).
    run, _ = make_run(tmp_path, n=16, overrides=["train.batch_size=2", "train.epochs=2", "train.augment=none"])
    last = run / "fold0" / "last.ckpt"
    p = _launch(run, resume=False)
    killed_at = None
    deadline = time.time() + 300
    try:
        while time.time() < deadline and p.poll() is None:
            if last.is_file():
                s = _step_of(last)
                if s is not None and s >= 2 and s % 4:
                    os.kill(p.pid, signal.SIGKILL)
                    killed_at = s
                    break
            time.sleep(0.2)
    finally:
        if p.poll() is None and killed_at is None:
            p.kill()
        p.wait()
    assert killed_at is not None, "training ended before a mid-run checkpoint could be interrupted"
    assert not (run / "fold0" / "fit.json").exists()

    out, _ = _launch(run, resume=True).communicate(timeout=600)
    start = [int(line.split()[1]) for line in out.splitlines() if line.startswith("START_STEP")]
    done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("DONE")]
    assert start and done, out[-2000:]
    assert start[0] >= killed_at > 0  # continued from the checkpoint, did not restart at step 0
    assert done[0] == 8 and (run / "fold0" / "fit.json").is_file()
    assert json.loads((run / "fold0" / "fit.json").read_text())["global_step"] == 8
    assert (run / "fold0" / "best.ckpt").is_file() and not last.exists()


def test_resume_refused_without_flag_and_fresh_start_when_nothing_to_resume(tmp_path):
    from toothseg.config import load_config
    from toothseg.errors import ToothsegError
    from toothseg.run.folder import open_run
    from toothseg.train.kfold import labelled_items, split_items
    from toothseg.train.fit import fit_model

    run, _ = make_run(tmp_path, n=4, overrides=["train.max_steps=1", "train.augment=none"])
    rd = open_run(run)
    cfg = load_config(rd.config)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    res = fit_model(cfg, train, val, run / "f", resume=True)  # nothing to resume: starts from scratch
    assert res.global_step == 1 and res.best_ckpt.is_file()
    try:
        fit_model(cfg, train, val, run / "f")
    except ToothsegError as exc:
        assert str(run / "f") in str(exc) and "--resume" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("training over existing checkpoints was not refused")
    res2 = fit_model(cfg, train, val, run / "f", overwrite=True)
    assert res2.global_step == 1
