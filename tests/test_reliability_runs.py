"""Run folders are data, never code, and never silently stale: planted pickles refused (bundle building, OOF
scoring, resume, init weights, --init-from), legitimate checkpoints load under weights_only=True, folds changed
under fold models refused, fit.json relative so a run resumes from any directory and from a copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from helpers.fakerun import make_run
from toothseg.errors import ConfigError, InputError, ToothsegError
from toothseg.models.checkpoint import safe_load
from toothseg.predict.bundle_build import build_bundle
from toothseg.run.folder import RunDir, read_json
from toothseg.train.engine import train
from toothseg.train.kfold import labelled_items, split_items
from toothseg.train.oof import score_fold
from toothseg.train.restore import module_from_checkpoint
from toothseg.train.fit import FitResult
from toothseg.run.family import BUILT_FROM as RECORD

REPO = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this creates ``marker``: the proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {"state_dict": {}}
    ckpt["hyper_parameters"] = {**ckpt.get("hyper_parameters", {}), "payload": _Planted(marker)}
    torch.save(ckpt, path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with fold 0 trained (1 epoch, 8 tiny images) and its bundle."""
    run, _ = make_run(tmp_path_factory.mktemp("rel"), n=8, overrides=["train.threads=1", "train.hard_fraction=0"])
    train(run, fold=0)
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _fold(run: Path) -> Path:
    return next(run.glob("train/*/fold0"))


class _KilledAtTheEnd(L.Callback):
    def on_train_end(self, *args) -> None:
        raise RuntimeError("killed")


def _train_killed_before_finishing(run: Path, monkeypatch) -> None:
    """Fold 0 trained again and stopped after its last validation, before it is recorded as finished."""
    import toothseg.train.fit as fit

    original = fit.fit_model
    with monkeypatch.context() as m:
        m.setattr(fit, "fit_model", lambda *a, **kw: original(*a, **{**kw, "callbacks": [_KilledAtTheEnd()]}))
        with pytest.raises(RuntimeError, match="killed"):
            train(run, fold=0, overwrite=True)


def test_legitimate_checkpoints_load_safely_and_resume(run: Path, tmp_path: Path, monkeypatch) -> None:
    fd = _fold(run)
    module = module_from_checkpoint(fd / "best.ckpt")
    assert module.hparams["resize"] == "resize"
    _train_killed_before_finishing(run, monkeypatch)  # resume goes through Lightning's own restore
    ckpt = safe_load(fd / "last.ckpt")
    assert ckpt["hyper_parameters"]["scale"] == [64, 128] and "optimizer_states" in ckpt
    assert not (fd / "fit.json").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = train(os.path.relpath(run, elsewhere), fold=0, resume=True)
    assert out["bundle"] and (run / "bundle" / "bundle.json").is_file()
    fit = read_json(fd / "fit.json")
    assert fit["best_ckpt"] == "best.ckpt" and fit["out_dir"] == "."
    assert not (fd / "last.ckpt").exists() and "optimizer_states" not in safe_load(fd / "best.ckpt")


def test_copied_run_resumes_from_its_own_files(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(run)  # the original is gone: nothing may point back at it
    out = train(copy, fold=0, resume=True)
    assert Path(out["bundle"]).resolve() == (copy / "bundle").resolve()


def test_old_absolute_fit_json_paths_are_reanchored(tmp_path: Path) -> None:
    d = {"out_dir": "/elsewhere/run/train/t/fold0", "best_ckpt": "/elsewhere/run/train/t/fold0/best.ckpt",
         "last_ckpt": "/elsewhere/run/train/t/fold0/last.ckpt", "best_val_dice": 0.5, "global_step": 3,
         "epochs": 1, "seconds": 1.0, "metrics_csv": "/elsewhere/run/train/t/fold0/metrics.csv"}
    r = FitResult.from_json(d, tmp_path)
    assert (r.out_dir, r.best_ckpt, r.metrics_csv) == (tmp_path, tmp_path / "best.ckpt", tmp_path / "metrics.csv")


def test_planted_best_ckpt_is_never_executed(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    fd = _fold(run)
    _plant(fd / "best.ckpt", marker)
    with pytest.raises(InputError, match="refused: loading it would need arbitrary unpickling.*posix.system"):
        build_bundle(run)
    rd_items = labelled_items(RunDir(run))
    with pytest.raises(InputError, match="refused"):
        score_fold(None, fd / "best.ckpt", list(rd_items.values())[:1], tmp_path)
    assert not marker.exists()


def test_planted_checkpoint_via_cli_is_one_line_and_not_executed(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    _plant(_fold(run) / "best.ckpt", marker)
    p = subprocess.run([sys.executable, "-c", "from toothseg.cli import main; main()", "train", str(run),
                        "--fold", "0", "--resume"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert p.returncode == 2
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "best.ckpt: refused" in errors[0] and "Traceback" not in p.stderr
    assert not marker.exists()


def test_planted_last_ckpt_is_refused_on_resume(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    fd = _fold(run)
    (fd / "fit.json").unlink()
    _plant(fd / "last.ckpt", marker)
    with pytest.raises(InputError, match="last.ckpt: refused"):
        train(run, fold=0, resume=True)
    assert not marker.exists()


def test_planted_init_weights_are_refused(run: Path, tmp_path: Path) -> None:
    from toothseg.config import load_config
    from toothseg.train.fit import fit_model

    marker = tmp_path / "PWNED"
    init = tmp_path / "init.pt"
    torch.save({"w": _Planted(marker)}, init)
    cfg = load_config(run / "config.yaml")
    from toothseg.run.folder import open_run

    rd = open_run(run)
    tr, va = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    with pytest.raises(ConfigError, match=r"init.pt: cannot read weights \(refused: loading it would need arbitrary"):
        fit_model(cfg, tr, va, tmp_path / "f", init_weights=init)
    assert not marker.exists()



def test_planted_init_from_checkpoint_is_refused(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    _plant(_fold(run) / "best.ckpt", marker)
    new = tmp_path / "new"
    new.mkdir()
    for name in ("config.yaml", "samples.csv", "folds.json"):
        shutil.copyfile(run / name, new / name)
    with pytest.raises(ToothsegError, match=r"best.ckpt: .*refused: loading it would need arbitrary unpickling"):
        train(new, fold=0, init_from=run)
    assert not marker.exists()

@pytest.mark.parametrize("damage", ["empty", "truncated", "not-torch"])
def test_damaged_checkpoints_are_one_line(run: Path, damage: str) -> None:
    best = _fold(run) / "best.ckpt"
    data = best.read_bytes()
    best.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "not-torch": b"hello world"}[damage])
    expected = "best.ckpt: (empty file|truncated or not a PyTorch file|not a plain PyTorch weights file)"
    with pytest.raises(InputError, match=expected) as ei:
        build_bundle(run)
    assert "\n" not in str(ei.value)


def _swap_fold0(run: Path) -> None:
    folds = json.loads((run / "folds.json").read_text())
    f0 = folds["0"]
    f0["train"][0], f0["val"][0] = f0["val"][0], f0["train"][0]
    (run / "folds.json").write_text(json.dumps(folds))


def test_stale_folds_are_refused(run: Path) -> None:
    _swap_fold0(run)
    with pytest.raises(ToothsegError, match="different fold 0 split"):
        train(run, fold=0, resume=True)
    with pytest.raises(ToothsegError, match="different fold 0 split"):
        train(run, fold=0)
    with pytest.raises(ToothsegError, match="different fold 0 split.*before building the bundle"):
        build_bundle(run)


def test_stale_folds_of_an_older_run_are_refused_by_their_oof_keys(run: Path) -> None:
    for rec in run.glob(f"train/*/{RECORD}"):
        rec.unlink()
    build_bundle(run)  # unchanged folds: the older run still builds
    _swap_fold0(run)
    with pytest.raises(ToothsegError, match=r"validation images \(oof.csv\) are not fold 0's"):
        train(run, fold=0, resume=True)


def test_changed_model_settings_are_refused_on_resume(run: Path) -> None:
    with pytest.raises(ToothsegError, match="other model/training settings"):
        train(run, fold=0, resume=True, overrides=["train.lr=0.1"])
    train(run, fold=0, resume=True, overrides=["train.threads=1", "train.max_time=00:10:00"])  # run-time knobs
