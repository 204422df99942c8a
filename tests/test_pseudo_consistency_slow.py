"""Consistency training like supervised training: a SIGKILLed run resumes (EMA teacher included), and 2-process
gloo DDP trains a few steps of it."""

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

FIT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import lightning as L
    import toothseg.train.fit as fit
    from toothseg.config import load_config
    from toothseg.pseudo.consistency import ConsistencyModule
    from toothseg.run.folder import open_run
    from toothseg.train.dataset import TrainItem
    from toothseg.train.kfold import labelled_items, split_items

    fit.CKPT_EVERY_STEPS = {every}
    rd = open_run({run!r})
    cfg = load_config(rd.config)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    unlabelled = [TrainItem("u/" + it.key, it.image_path, pseudo=True) for it in val]  # images only

    class FirstStep(L.Callback):
        def on_train_start(self, trainer, module):
            print("START_STEP", trainer.global_step, flush=True)

        def on_train_end(self, trainer, module):  # a finished fold keeps no EMA teacher on disk
            print("EMA", int(module.ema.n_averaged), flush=True)

    res = fit.fit_model(cfg, train, val, rd.root / "fold0", resume={resume}, callbacks=[FirstStep()],
                        unlabelled_items=unlabelled, module_cls=ConsistencyModule)
    print("DONE", res.global_step, flush=True)
""")


def _step_of(ckpt: Path) -> int | None:
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # being written right now
        return None


def _launch(run: Path, resume: bool) -> subprocess.Popen:
    code = FIT.format(tests=str(HERE), run=str(run), resume=resume, every=2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


@pytest.mark.slow  # two process start-ups + 8 steps
def test_killed_consistency_run_resumes_with_its_ema_teacher(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path, n=16, overrides=["train.batch_size=2", "train.epochs=2", "train.augment=none",
                                                 "train.threads=1", "pseudo.ema_decay=0.9"])
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
    out, _ = _launch(run, resume=True).communicate(timeout=600)
    start = [int(line.split()[1]) for line in out.splitlines() if line.startswith("START_STEP")]
    done = [line.split()[1] for line in out.splitlines() if line.startswith("DONE")]
    ema = [line.split()[1] for line in out.splitlines() if line.startswith("EMA")]
    assert start and done and ema, out[-2000:]
    assert start[0] >= killed_at > 0
    # 8 steps in all, and the EMA teacher averaged all 8: it was restored, not restarted from the student
    assert done[0] == ema[0] == "8"
    assert json.loads((run / "fold0" / "fit.json").read_text())["global_step"] == 8


DDP = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import lightning as L
    import toothseg.train.fit as fit
    from toothseg.pseudo.schedules import retrain

    class EmaCount(L.Callback):  # a finished fold keeps no EMA teacher on disk: report it at the end
        def on_train_end(self, trainer, module):
            if trainer.is_global_zero:
                print("EMA", int(module.ema.n_averaged), flush=True)

    fit_model = fit.fit_model

    def counted(*args, **kwargs):
        return fit_model(*args, **{{**kwargs, "callbacks": [*(kwargs.get("callbacks") or []), EmaCount()]}})

    fit.fit_model = counted
    out = retrain({run!r}, schedule="consistency", folds=[0], teacher={teacher!r})
    print("DONE", out["tag"], flush=True)
""")


@pytest.mark.slow
def test_consistency_runs_under_two_process_gloo_ddp(tmp_path: Path) -> None:
    from toothseg.config import build_config, save_config
    from toothseg.data.layout import discover, write_index
    from toothseg.data.synth import synth
    from toothseg.pseudo.schedules import retrain

    synth(tmp_path / "synth", labelled=8, unlabelled=4, height=64, width=128, duplicates=False)
    ds = discover([tmp_path / "synth"])
    run = tmp_path / "run"
    run.mkdir()
    write_index(ds, run / "samples.csv")
    lab = sorted(s.key for s in ds.labelled)
    (run / "folds.json").write_text(json.dumps({"0": {"train": lab[:6], "val": lab[6:]}}))
    base = ["train.scales=[[64, 128]]", "train.epochs=4", "train.threads=1", "train.max_steps=2",
            "train.batch_size=2", "train.num_workers=0"]
    save_config(build_config("tiny", overrides=base), run / "config.yaml")
    teacher = retrain(run, schedule="labelled")["tag"]
    save_config(build_config("tiny", overrides=[*base, "train.accelerator=cpu", "train.devices=2",
                                                "train.strategy=ddp"]), run / "config.yaml")
    script = tmp_path / "ddp_consistency.py"  # Lightning's DDP launcher re-runs this script once per extra process
    script.write_text(DDP.format(tests=str(HERE), run=str(run), teacher=teacher))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert "distributed" in log.lower() or "ddp" in log.lower()
    fd = run / "train" / (teacher.removesuffix("-labelled") + "-consistency") / "fold0"
    assert json.loads((fd / "fit.json").read_text())["global_step"] == 2
    assert [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("EMA")] == ["2"]
    assert not (fd / "last.ckpt").exists()
    assert (fd / "oof.csv").is_file()
