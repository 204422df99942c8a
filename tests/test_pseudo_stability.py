"""ST++ filter: training snapshots at 1/3 and 2/3, the stability score, and its use in pseudo-labelling."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.fakerun import make_run
from toothseg.config import load_config
from toothseg.errors import InputError
from toothseg.pseudo.stability import StabilityScorer
from toothseg.run.folder import open_run
from toothseg.train.kfold import labelled_items, split_items
from toothseg.train.fit import fit_model

HEAD_BIAS = "segmentation_head.0.bias"


@pytest.fixture(scope="module")
def fold_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fold trained 3 steps with pseudo.stability_keep > 0 (so snapshots are taken)."""
    tmp = tmp_path_factory.mktemp("stab")
    run, _ = make_run(tmp, n=8, overrides=["train.max_steps=3", "train.batch_size=2", "train.augment=none",
                                           "train.threads=1", "pseudo.stability_keep=0.5"])
    rd = open_run(run)
    train, val = split_items(labelled_items(rd), rd.read_folds()[0], rd.folds)
    fit_model(load_config(rd.config), train, val, run / "tag" / "fold0")
    return run / "tag" / "fold0"


def test_snapshots_are_taken_during_training(fold_dir: Path) -> None:
    s1 = torch.load(fold_dir / "snapshot1.pt", map_location="cpu", weights_only=True)
    s2 = torch.load(fold_dir / "snapshot2.pt", map_location="cpu", weights_only=True)
    final = torch.load(fold_dir / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert set(s1) == {k.removeprefix("model.") for k in final if k.startswith("model.")}
    changed = [k for k in s1 if s1[k].is_floating_point() and not torch.equal(s1[k], s2[k])]
    assert changed  # taken at different steps (1 and 2 of 3)


def _set_head(state: dict[str, torch.Tensor], key: str, value: float) -> dict[str, torch.Tensor]:
    out = dict(state)
    out[key] = torch.full_like(state[key], value)
    return out


def test_stability_is_the_snapshots_mean_dice_against_the_best_model(fold_dir: Path, tmp_path: Path) -> None:
    tag = tmp_path / "tag"
    fd = tag / "fold0"
    shutil.copytree(fold_dir, fd)
    ckpt = torch.load(fd / "best.ckpt", map_location="cpu", weights_only=False)
    ckpt["state_dict"] = _set_head(ckpt["state_dict"], "model." + HEAD_BIAS, 1e4)  # best: every pixel tooth
    torch.save(ckpt, fd / "best.ckpt")
    s = torch.load(fd / "snapshot1.pt", map_location="cpu", weights_only=True)
    torch.save(_set_head(s, HEAD_BIAS, 1e4), fd / "snapshot1.pt")  # agrees with best: Dice 1
    torch.save(_set_head(s, HEAD_BIAS, -1e4), fd / "snapshot2.pt")  # predicts nothing: Dice 0
    img = np.random.default_rng(0).integers(0, 255, (64, 128)).astype(np.uint8)
    assert StabilityScorer(tag).score(img) == pytest.approx(0.5)
    torch.save(_set_head(s, HEAD_BIAS, 1e4), fd / "snapshot2.pt")
    assert StabilityScorer(tag).score(img) == pytest.approx(1.0)
    (fd / "snapshot2.pt").unlink()
    with pytest.raises(InputError, match="snapshot2.pt"):
        StabilityScorer(tag)
    with pytest.raises(InputError, match="no trained folds"):
        StabilityScorer(tag, folds=[5])


@pytest.mark.slow  # teacher + its bundle + pseudo-labelling
def test_pseudo_label_keeps_the_most_stable_share(tmp_path: Path) -> None:
    from toothseg.config import build_config, save_config
    from toothseg.data.layout import discover, write_index
    from toothseg.data.synth import synth
    from toothseg.pseudo.label import pseudo_label
    from toothseg.pseudo.schedules import retrain

    synth(tmp_path / "synth", labelled=8, unlabelled=6, height=64, width=128, duplicates=False)
    ds = discover([tmp_path / "synth"])
    run = tmp_path / "run"
    run.mkdir()
    write_index(ds, run / "samples.csv")
    lab = sorted(s.key for s in ds.labelled)
    (run / "folds.json").write_text(json.dumps({"0": {"train": lab[:6], "val": lab[6:]}}))
    save_config(build_config("tiny", overrides=["train.scales=[[64, 128]]", "train.max_steps=3", "train.threads=1",
                                                "train.batch_size=2", "pseudo.select=all",
                                                "pseudo.stability_keep=0.5"]), run / "config.yaml")
    tag = retrain(run, schedule="labelled")["tag"]
    assert (run / "train" / tag / "fold0" / "snapshot2.pt").is_file()
    s = pseudo_label(run)
    with (run / "pseudo" / "scores.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-2:] == ["stability", "selected"]
    assert s["n_selected"] == 3 and s["stability_keep"] == 0.5  # select=all, then the stable half
    kept = [float(r["stability"]) for r in rows if r["selected"] == "1"]
    dropped = [float(r["stability"]) for r in rows if r["selected"] == "0"]
    assert min(kept) >= max(dropped)
