"""build_bundle / load_bundle on a fake run: members, weights, OOF-tuned threshold and post-processing, zip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.fakerun import N_IMAGES, TAGS, make_trained_run
from toothseg.errors import InputError, ToothsegError
from toothseg.predict.bundle_build import build_bundle
from toothseg.predict.bundle_format import load_bundle


@pytest.fixture(scope="module")
def bundle_dir(fake_run: Path) -> Path:
    return build_bundle(fake_run, zip=True)


def test_bundle_members_and_files(bundle_dir: Path, fake_run: Path) -> None:
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["format"] == "toothseg-bundle" and meta["toothseg_version"]
    assert len(meta["members"]) == len(TAGS) * 2
    for m in meta["members"]:
        sd = torch.load(bundle_dir / m["checkpoint"], weights_only=True)
        assert not any(k.startswith("model.") for k in sd)
        assert m["scale"] == list(TAGS[m["tag"]])
    assert abs(sum(m["weight"] for m in meta["members"]) - 1.0) < 1e-6
    assert meta["data"]["sources"]["synth"] == {"labelled": N_IMAGES, "unlabelled": 1}
    assert meta["config"]["preset"] == "tiny"
    assert (fake_run / "bundle.zip").is_file()


def test_oof_tuning_finds_the_planted_answers(bundle_dir: Path) -> None:
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    oof = meta["oof"]
    assert oof["n_images"] == N_IMAGES
    # teeth were drawn at p~0.42 and specks at 0.9: the threshold must drop under 0.42, specks must go
    assert 0.1 < meta["threshold"] < 0.42
    assert meta["postprocess"]["min_component"] > 0
    assert oof["dice_tuned_threshold"] > oof["dice_at_0.5"] + 0.1
    assert oof["dice_with_postprocess"] > oof["dice_tuned_threshold"]


def test_load_bundle_dir_run_and_zip(bundle_dir: Path, fake_run: Path) -> None:
    a = load_bundle(bundle_dir)
    b = load_bundle(fake_run)  # a run folder points at its bundle
    c = load_bundle(fake_run / "bundle.zip")
    assert [m.name for m in a.members] == [m.name for m in b.members] == [m.name for m in c.members]
    assert c.root != a.root and c.file(c.members[0].checkpoint).is_file()
    assert a.select([1]) and all(m.fold == 1 for m in a.select([1]))
    with pytest.raises(ToothsegError, match="no member for folds"):
        a.select([7])


def test_bad_bundles(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a toothseg bundle"):
        load_bundle(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable bundle.json"):
        load_bundle(tmp_path)
    bad_zip = tmp_path / "b.zip"
    bad_zip.write_bytes(b"nope")
    with pytest.raises(InputError, match="zip"):
        load_bundle(bad_zip)


def test_build_bundle_rejects_runs_without_training(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(ToothsegError, match="no trained fold"):
        build_bundle(tmp_path)


def test_build_bundle_rejects_mismatched_weights(tmp_path: Path) -> None:
    run = make_trained_run(tmp_path, tags={"t-64x128": (64, 128)}, folds=1)
    ck = run / "train" / "t-64x128" / "fold0" / "best.ckpt"
    c = torch.load(ck, weights_only=False)
    c["state_dict"] = {k: v for i, (k, v) in enumerate(c["state_dict"].items()) if i > 3}
    torch.save(c, ck)
    with pytest.raises(InputError, match="do not fit"):
        build_bundle(run)


def test_single_tag_without_oof_keeps_defaults(tmp_path: Path) -> None:
    run = make_trained_run(tmp_path, tags={"t-64x128": (64, 128)}, folds=1)
    shutil.rmtree(run / "train" / "t-64x128" / "fold0" / "oof")
    meta = json.loads((build_bundle(run) / "bundle.json").read_text())
    assert meta["threshold"] == 0.5 and meta["oof"] is None
    assert meta["postprocess"] == {"min_component": 0, "fill_holes": False}
    assert meta["members"][0]["weight"] == 1.0


def test_run_config_predict_settings_win_over_oof_tuning(bundle_dir: Path, tmp_path: Path) -> None:
    from toothseg.config import load_config, save_config

    run = make_trained_run(tmp_path / "fixed")
    cfg = load_config(run / "config.yaml")
    cfg.predict.threshold, cfg.predict.min_component = 0.6, 0
    save_config(cfg, run / "config.yaml")
    meta = json.loads((build_bundle(run) / "bundle.json").read_text())
    assert meta["threshold"] == 0.6 and meta["postprocess"]["min_component"] == 0
    assert meta["fixed_by_config"] == {"threshold": 0.6, "min_component": 0}
    tuned = json.loads((bundle_dir / "bundle.json").read_text())  # same fake run, config untouched
    assert tuned["fixed_by_config"] == {} and tuned["postprocess"]["min_component"] > 0
    assert meta["postprocess"]["fill_holes"] == tuned["postprocess"]["fill_holes"]  # not fixed: still tuned


def _add_ablation(run: Path, tag: str = "ablation-pretrained-64x128") -> str:
    """A second family trained into the same run with model settings the config did not choose."""
    src = run / "train" / "unet-tiny-64x128"
    shutil.copytree(src, run / "train" / tag)
    info = json.loads((src / "model.json").read_text())
    (run / "train" / tag / "model.json").write_text(json.dumps({**info, "tag": tag,
                                                                "model": {**info["model"], "weights": "cache"}}))
    return tag


def test_ablation_family_stays_out_unless_named(tmp_path: Path) -> None:
    run = make_trained_run(tmp_path, tags={"unet-tiny-64x128": (64, 128)}, folds=1)
    tag = _add_ablation(run)
    meta = json.loads((build_bundle(run) / "bundle.json").read_text())
    assert {m["tag"] for m in meta["members"]} == {"unet-tiny-64x128"} and meta["chosen_by"] == "config"
    named = json.loads((build_bundle(run, members=["unet-tiny-64x128", tag]) / "bundle.json").read_text())
    assert {m["tag"] for m in named["members"]} == {"unet-tiny-64x128", tag} and named["chosen_by"] == "--members"
    with pytest.raises(ToothsegError, match="no trained model family 'nope'; trained: "):
        build_bundle(run, members=["nope"])


def test_students_of_the_config_schedule_join_the_bundle(tmp_path: Path) -> None:
    run = make_trained_run(tmp_path, tags={"unet-tiny-64x128": (64, 128)}, folds=1)
    cfg = json.loads((run / "train" / "unet-tiny-64x128" / "model.json").read_text())
    for tag, schedule in (("student", "pretrain-mix"), ("other-schedule", "mix")):
        shutil.copytree(run / "train" / "unet-tiny-64x128", run / "train" / tag)
        (run / "train" / tag / "model.json").write_text(json.dumps(
            {**cfg, "tag": tag, "schedule": schedule, "soft": False, "round": 1, "teacher": "unet-tiny-64x128"}))
    meta = json.loads((build_bundle(run) / "bundle.json").read_text())
    assert sorted(meta["tags"]) == ["student", "unet-tiny-64x128"]


def test_bundle_cli_unknown_member_is_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from toothseg.cli import app

    run = make_trained_run(tmp_path, tags={"unet-tiny-64x128": (64, 128)}, folds=1)
    res = CliRunner().invoke(app, ["bundle", str(run), "--members", "nope"])
    assert res.exit_code != 0 and isinstance(res.exception, ToothsegError)
    assert "\n" not in str(res.exception) and "no trained model family 'nope'" in str(res.exception)
    ok = CliRunner().invoke(app, ["bundle", str(run), "--members", "unet-tiny-64x128"])
    assert ok.exit_code == 0 and "bundle:" in ok.output
