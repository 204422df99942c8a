"""Warm-started students, the labelled-continue control arm and the consistency schedule, end to end (tiny run)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from toothseg.config import build_config, save_config
from toothseg.errors import InputError
from toothseg.pseudo.schedules import plan, retrain, teacher_weights
from toothseg.run.folder import RunDir

SCALE = ["train.scales=[[64, 128]]"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """8 labelled (2 folds) + 4 unlabelled synthetic 64x128 images and a labelled-only teacher (a few steps)."""
    from toothseg.data.layout import discover, write_index
    from toothseg.data.synth import synth

    root = tmp_path_factory.mktemp("warm")
    synth(root / "synth", labelled=8, unlabelled=4, height=64, width=128, duplicates=False)
    ds = discover([root / "synth"])
    run = root / "run"
    run.mkdir()
    write_index(ds, run / "samples.csv")
    lab = sorted(s.key for s in ds.labelled)
    folds = {str(k): {"train": [x for i, x in enumerate(lab) if i % 2 != k],
                      "val": [x for i, x in enumerate(lab) if i % 2 == k]} for k in (0, 1)}
    (run / "folds.json").write_text(json.dumps(folds))
    save_config(build_config("tiny", overrides=[*SCALE, "train.epochs=1", "train.threads=1", "train.max_steps=2",
                                                "train.batch_size=2", "train.num_workers=0"]), run / "config.yaml")
    teacher = retrain(run, schedule="labelled")
    return run, teacher["tag"]


class FirstWeights(L.Callback):
    """Records the network's weights when training starts (before the first optimizer step) and, when it ends,
    the keys the module adds to each of its checkpoints (the resume state is gone once the fold is finished)."""

    seen: list[dict[str, torch.Tensor]] = []
    saved_keys: list[set[str]] = []

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        FirstWeights.seen.append({k: v.detach().clone() for k, v in module.model.state_dict().items()})

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        saved: dict = {}
        module.on_save_checkpoint(saved)
        FirstWeights.saved_keys.append(set(saved))


def _record_first_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import toothseg.train.fit as fit

    original = fit.fit_model
    FirstWeights.seen = []
    FirstWeights.saved_keys = []

    def wrapped(*args, **kwargs):
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [FirstWeights()]
        return original(*args, **kwargs)

    monkeypatch.setattr(fit, "fit_model", wrapped)


def _teacher_state(ckpt: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}


def test_new_schedules_plans() -> None:
    assert [(s.labelled, s.pseudo, s.unlabelled) for s in plan("labelled-continue")] == [(True, False, False)]
    assert [(s.labelled, s.pseudo, s.unlabelled) for s in plan("consistency")] == [(True, False, True)]


@pytest.mark.parametrize("schedule", ["labelled-continue", "consistency"])
def test_student_starts_from_its_teacher_and_writes_a_student_tag(teacher_run: tuple[Path, str], schedule: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run, teacher = teacher_run
    _record_first_weights(monkeypatch)
    r = retrain(run, schedule=schedule, folds=[0], max_time="00:05:00")
    row = r["rounds"][0]
    assert row["tag"] == teacher.removesuffix("-labelled") + f"-{schedule}" and row["teacher"] == teacher
    assert row["n_images"] == 4  # fold 0's labelled validation images, scored out of fold
    # the student's weights at its first step are exactly the teacher's fold-0 weights
    want = _teacher_state(run / "train" / teacher / "fold0" / "best.ckpt")
    got = FirstWeights.seen[0]
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    tag_dir = run / "train" / row["tag"]
    info = json.loads((tag_dir / "model.json").read_text())
    assert info["schedule"] == schedule and info["teacher"] == teacher and info["warm_start"] is True
    assert info["folds"] == [0] and info["n_unlabelled"] == (4 if schedule == "consistency" else 0)
    stage = json.loads((tag_dir / "fold0" / "stage.json").read_text())
    assert stage["init"].endswith(f"{teacher}/fold0/best.ckpt") and stage["n_unlabelled"] == info["n_unlabelled"]
    with (tag_dir / "fold0" / "oof.csv").open(newline="") as f:
        keys = {row["key"] for row in csv.DictReader(f)}
    assert keys == set(json.loads((run / "folds.json").read_text())["0"]["val"])
    fit = json.loads((tag_dir / "fold0" / "fit.json").read_text())
    assert fit["global_step"] == 2  # train.max_steps: the same extra steps for every arm
    assert ("toothseg_ema" in FirstWeights.saved_keys[0]) == (schedule == "consistency")  # the EMA teacher
    assert not (tag_dir / "fold0" / "last.ckpt").exists()


def test_warm_start_needs_the_teachers_fold_weights(teacher_run: tuple[Path, str]) -> None:
    run, teacher = teacher_run
    rd = RunDir(run)
    assert teacher_weights(rd, teacher, 1) == run / "train" / teacher / "fold1" / "best.ckpt"
    with pytest.raises(InputError, match="fold 3"):
        teacher_weights(rd, teacher, 3)
    assert teacher_weights(rd, "bundle", 0) is None
    same = build_config("tiny").model
    assert teacher_weights(rd, teacher, 0, same) == run / "train" / teacher / "fold0" / "best.ckpt"
    other = same.model_copy(update={"encoder": "resnet18"})
    assert teacher_weights(rd, teacher, 0, other) is None  # weights of another architecture would not fit


def test_consistency_without_unlabelled_images_is_a_clear_error(tmp_path: Path) -> None:
    from helpers.fakerun import make_run

    run, _ = make_run(tmp_path, n=4)  # labelled images only
    with pytest.raises(InputError, match="no unlabelled image"):
        retrain(run, schedule="consistency", folds=[0], teacher="some-teacher")


@pytest.mark.slow  # pseudo-labelling builds the teacher's bundle
def test_offline_schedule_with_pixel_confidence_and_strong_aug(teacher_run: tuple[Path, str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from toothseg.config import load_config
    from toothseg.pseudo.label import pseudo_label

    run, teacher = teacher_run
    cfg_path = run / "config.yaml"
    original = cfg_path.read_text()
    cfg = load_config(cfg_path)
    cfg.pseudo.select = "all"
    cfg.pseudo.pixel_confidence = True
    cfg.pseudo.pseudo_strong_aug = True
    cfg.pseudo.cutmix_p = 1.0
    save_config(cfg, cfg_path)
    seen: list = []
    import toothseg.train.fit as fit

    real = fit.SegDataset

    def spy(*args, **kwargs):
        ds = real(*args, **kwargs)
        seen.append(ds)
        return ds

    monkeypatch.setattr(fit, "SegDataset", spy)
    try:
        pseudo_label(run, teacher=teacher, overwrite=True)
        r = retrain(run, schedule="pretrain-mix", folds=[0], teacher=teacher)
    finally:
        cfg_path.write_text(original)
    tag_dir = run / "train" / r["tag"]
    info = json.loads((tag_dir / "model.json").read_text())
    assert info["pixel_confidence"] is True and info["pseudo_strong_aug"] is True and info["n_pseudo"] == 4
    pre = json.loads((tag_dir / "pretrain" / "fold0" / "stage.json").read_text())
    assert pre["init"].endswith(f"{teacher}/fold0/best.ckpt")  # stage 1 warm-started from the teacher
    train_sets = [ds for ds in seen if ds.augment is not None]
    assert train_sets and all(ds.strong is not None and ds.pixel_threshold == cfg.pseudo.confidence_threshold
                              for ds in train_sets)
    pseudo_items = [it for it in train_sets[0].items if it.pseudo]
    assert pseudo_items and all(it.confidence_path is not None and it.confidence_path.is_file()
                                for it in pseudo_items)
    assert (tag_dir / "fold0" / "oof.csv").is_file()


def test_cli_retrain_with_an_online_schedule_skips_pseudo_labelling(teacher_run: tuple[Path, str]) -> None:
    from typer.testing import CliRunner

    from toothseg.cli import app

    run, teacher = teacher_run
    had_labels = (run / "pseudo" / "scores.csv").is_file()
    res = CliRunner().invoke(app, ["pseudo-label", str(run), "--retrain", "--schedule", "labelled-continue",
                                   "--folds", "0", "--teacher", teacher])
    assert res.exit_code == 0, res.output
    assert "labelling skipped" in res.output and "-labelled-continue: CV Dice" in res.output
    assert (run / "pseudo" / "scores.csv").is_file() == had_labels  # nothing labelled
