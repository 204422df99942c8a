"""Schedules: stage plans and budgets (fast), and every schedule end to end on the tiny preset (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from toothseg.config import build_config
from toothseg.errors import ConfigError, InputError
from toothseg.pseudo.schedules import cv_metrics, plan, pseudo_items, retrain, student_tag
from toothseg.train.kfold import balance, stage_budget
from toothseg.run.folder import RunDir


def test_plans_match_the_write_up() -> None:
    assert [(s.name, s.labelled, s.pseudo, s.init_from_previous) for s in plan("pretrain-mix")] == [
        ("pretrain", False, True, False), ("finetune", True, True, True)]
    assert [(s.labelled, s.pseudo) for s in plan("pretrain")] == [(False, True), (True, False)]
    assert [(s.labelled, s.pseudo) for s in plan("mix")] == [(True, True)]
    assert [(s.labelled, s.pseudo) for s in plan("labelled")] == [(True, False)]
    with pytest.raises(ConfigError, match="pseudo.schedule"):
        plan("co-training")


def test_two_stage_budget_split_keeps_total_budget() -> None:
    cfg = build_config("tiny", overrides=["train.max_time=00:10:00", "train.max_steps=100",
                                          "pseudo.pretrain_share=0.3", "pseudo.pretrain_epochs=3"])
    pre, fine = plan("pretrain-mix")
    b1, b2 = stage_budget(cfg, pre, 2), stage_budget(cfg, fine, 2)
    assert (b1["max_time"], b2["max_time"]) == ("00:03:00", "00:07:00")
    assert (b1["max_steps"], b2["max_steps"]) == (30, 70)
    assert (b1["epochs"], b2["epochs"]) == (3, cfg.train.epochs)
    single = stage_budget(cfg, plan("mix")[0], 1, max_time="00:05:00")
    assert single["max_time"] == "00:05:00" and single["max_steps"] == 100
    cfg.pseudo.pretrain_share = 0.0  # each stage its own full budget
    assert stage_budget(cfg, pre, 2)["max_time"] == "00:10:00"


def test_balance_repeats_labelled_items_to_the_wanted_share() -> None:
    lab, pseudo = ["l1", "l2"], [f"p{i}" for i in range(9)]
    out = balance(lab, pseudo, 0.5)
    assert len(out) == 10 and out[:2] == lab  # 5 whole copies: 10 labelled vs 9 pseudo
    assert balance(lab, pseudo, 0.0) == lab
    assert balance(lab, [], 0.5) == lab
    assert balance(lab * 10, pseudo, 0.5) == lab * 10  # already the majority: never dropped


def test_student_tags() -> None:
    assert student_tag("unet-b0-320x640-labelled", "mix", False, 1) == "unet-b0-320x640-mix"
    assert student_tag("unet-b0-320x640", "pretrain-mix", True, 2) == "unet-b0-320x640-pretrain-mix-soft-r2"


def _hand_run(root: Path) -> RunDir:
    (root / "samples.csv").write_text("key,source,image_id,image_path,mask_path\n"
                                      f"a/1,a,1,{root}/i1.png,{root}/m1.png\n"
                                      f"u/2,u,2,{root}/i2.png,\n"
                                      f"u/3,u,3,{root}/i3.png,\n")
    (root / "folds.json").write_text(json.dumps({"0": {"train": ["a/1"], "val": []}}))
    return RunDir(root)


def test_pseudo_items_take_selected_rows_with_hard_or_soft_targets(tmp_path: Path) -> None:
    run = _hand_run(tmp_path)
    pdir = tmp_path / "pseudo"
    pdir.mkdir()
    (pdir / "scores.csv").write_text("key,score,agreement,selected\nu/2,0.9,0.9,1\nu/3,0.1,0.1,0\n")
    hard = pseudo_items(run, pdir, soft=False, weight=0.5)
    assert [(i.key, i.pseudo, i.weight, i.soft_path) for i in hard] == [("u/2", True, 0.5, None)]
    assert hard[0].mask_path == pdir / "hard" / "u" / "2.png"
    assert hard[0].image_path == tmp_path / "i2.png"
    soft = pseudo_items(run, pdir, soft=True)
    assert soft[0].soft_path == pdir / "soft" / "u" / "2.png"
    (pdir / "scores.csv").write_text("key,score,selected\nz/9,0.9,1\n")
    with pytest.raises(InputError, match="not in samples.csv"):
        pseudo_items(run, pdir)
    with pytest.raises(InputError, match="pseudo-label"):
        pseudo_items(run, tmp_path / "nowhere")


def test_cv_metrics_pool_images_over_folds(tmp_path: Path) -> None:
    for k, rows in enumerate([[("a/1", 0.8, 0.7, 4.0)], [("a/2", 0.6, 0.5, 8.0), ("a/3", 1.0, 1.0, 0.0)]]):
        d = tmp_path / f"fold{k}"
        d.mkdir()
        with (d / "oof.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "dice", "iou", "hd95"])
            w.writerows(rows)
    m = cv_metrics([tmp_path / "fold0", tmp_path / "fold1"])
    assert m == {"n_images": 3, "dice": 0.8, "iou": pytest.approx(0.733333, abs=1e-6), "hd95": 4.0}
    with pytest.raises(InputError, match="oof.csv"):
        cv_metrics([tmp_path / "missing"])


def test_bad_folds_file_and_unknown_fold(tmp_path: Path) -> None:
    run = _hand_run(tmp_path)
    build_config("tiny").model_dump()
    from toothseg.config import save_config

    save_config(build_config("tiny"), run.config)
    with pytest.raises(ConfigError, match="fold 7"):
        retrain(tmp_path, schedule="labelled", folds=[7])
    with pytest.raises(ConfigError, match="pseudo.schedule"):
        retrain(tmp_path, schedule="bogus")
    with pytest.raises(ConfigError, match="rounds"):
        retrain(tmp_path, schedule="mix", rounds=0)
    run.folds.write_text("[1, 2]")
    with pytest.raises(InputError, match="folds"):
        run.read_folds()


# ------------------------------------------------------------------------------------------ end to end (tiny preset)
@pytest.fixture(scope="module")
def taught_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic run: 12 labelled (2 folds) + 6 unlabelled images, a labelled-only teacher, pseudo-labels."""
    from toothseg.config import save_config
    from toothseg.data.layout import discover, write_index
    from toothseg.data.synth import synth
    from toothseg.pseudo.label import pseudo_label

    root = tmp_path_factory.mktemp("ssl")
    synth(root / "synth", labelled=12, unlabelled=6, height=128, width=256, duplicates=False)
    ds = discover([root / "synth"])
    run = root / "run"
    run.mkdir()
    write_index(ds, run / "samples.csv")
    lab = sorted(s.key for s in ds.labelled)
    folds = {str(k): {"train": [x for i, x in enumerate(lab) if i % 2 != k],
                      "val": [x for i, x in enumerate(lab) if i % 2 == k]} for k in (0, 1)}
    (run / "folds.json").write_text(json.dumps(folds))
    save_config(build_config("tiny", overrides=["train.epochs=1", "train.threads=1", "pseudo.select=topk",
                                                "pseudo.select_value=4"]),
                run / "config.yaml")
    teacher = retrain(run, schedule="labelled")
    assert teacher["rounds"][0]["n_images"] == 12  # every labelled image scored out of fold
    s = pseudo_label(run)
    assert (s["n_images"], s["n_selected"], s["members"]) == (6, 4, 4)  # 2 folds x (image, mirror)
    return run


@pytest.mark.slow
def test_pseudo_label_outputs(taught_run: Path) -> None:
    from toothseg.data.io import read_image

    with (taught_run / "pseudo" / "scores.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["key", "score", "agreement", "entropy", "band", "spread", "selected"]
    assert sum(r["selected"] == "1" for r in rows) == 4
    for r in rows:
        src, iid = r["key"].split("/")
        soft = read_image(taught_run / "pseudo" / "soft" / src / f"{iid}.png")
        hard = read_image(taught_run / "pseudo" / "hard" / src / f"{iid}.png")
        assert soft.shape == hard.shape == (128, 256)
        assert set(map(int, hard.ravel())) <= {0, 255}
        assert float(r["score"]) == float(r["agreement"])


@pytest.mark.slow
@pytest.mark.parametrize("schedule,soft", [("pretrain", False), ("mix", False), ("pretrain-mix", False),
                                           ("mix", True)])
def test_each_schedule_trains_students_validated_on_labelled_only(taught_run: Path, schedule: str,
                                                                 soft: bool) -> None:
    r = retrain(taught_run, schedule=schedule, soft=soft, folds=[0])
    row = r["rounds"][0]
    assert row["n_pseudo"] == 4 and row["n_images"] == 6  # fold 0's 6 labelled validation images, no pseudo
    tag_dir = taught_run / "train" / row["tag"]
    info = json.loads((tag_dir / "model.json").read_text())
    assert info["schedule"] == schedule and info["soft"] is soft and info["teacher"].endswith("-labelled")
    paths = [tag_dir / "pretrain" / "fold0" / "stage.json", tag_dir / "fold0" / "stage.json"]
    stages = [json.loads(p.read_text()) for p in paths if p.is_file()]
    expected = {"pretrain": [True, False], "pretrain-mix": [True, True], "mix": [True]}[schedule]
    assert [s["pseudo"] for s in stages] == expected
    assert all(s["n_val"] == 6 for s in stages)  # every stage is validated on fold 0's labelled images
    if "pretrain" in schedule:
        assert (tag_dir / "pretrain" / "fold0" / "best.ckpt").is_file()
        fine = json.loads((tag_dir / "fold0" / "stage.json").read_text())
        assert fine["init"].endswith("pretrain/fold0/best.ckpt")
        assert fine["n_train"] == 6 + 4 if schedule == "pretrain-mix" else fine["n_train"] == 6  # 6 >= 4: no copies
    with (tag_dir / "fold0" / "oof.csv").open(newline="") as f:
        keys = {r["key"] for r in csv.DictReader(f)}
    assert keys == set(json.loads((taught_run / "folds.json").read_text())["0"]["val"])


@pytest.mark.slow
def test_two_rounds_student_becomes_teacher(taught_run: Path) -> None:
    r = retrain(taught_run, schedule="mix", rounds=2, folds=[0])
    first, second = r["rounds"]
    assert second["teacher"] == first["tag"] and second["tag"].endswith("-r2")
    info = json.loads((taught_run / "pseudo" / "round2" / "pseudo.json").read_text())
    assert info["teacher"] == first["tag"]
