"""Config: presets, YAML, overrides, validation messages, round-trip through the run folder."""

from __future__ import annotations

import pytest

from toothseg.config import PRESETS, build_config, load_config, save_config
from toothseg.errors import ConfigError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_validate(preset: str) -> None:
    cfg = build_config(preset)
    assert cfg.preset == preset
    for h, w in cfg.train.scales:
        assert h % 32 == 0 and w % 32 == 0


def test_recipe_matches_the_writeup() -> None:
    cfg = build_config("recipe")
    assert "efficientnetv2" in cfg.model.encoder
    assert [tuple(s) for s in cfg.model.scales] == [(640, 1280)]
    assert cfg.models[0].name.startswith("sam-vit") and [tuple(s) for s in cfg.models[0].scales] == [(1024, 1024)]
    assert cfg.train.lr == 3e-4
    assert cfg.train.loss.bce > 0 and cfg.train.loss.dice > 0 and cfg.train.loss.lovasz > 0


def test_yaml_and_overrides_layer_in_order(tmp_path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  epochs: 7\n  batch_size: 3\n")
    cfg = build_config("tiny", y, ["train.epochs=9", "model.encoder=tu-resnet18"])
    assert cfg.train.epochs == 9  # override beats YAML
    assert cfg.train.batch_size == 3  # YAML beats preset
    assert cfg.model.encoder == "tu-resnet18"


def test_roundtrip(tmp_path) -> None:
    cfg = build_config("cpu", overrides=["curate.n_folds=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["train.scales=[[300, 640]]"], "multiples of 32"),
        (["model.scales=[[320, 650]]"], "multiples of 32"),
        (["train.scales=[]"], "at least one"),
        (["train.epochs=0"], "train.epochs"),
        (["curate.policy=keep-best"], "curate.policy"),
        (["train.max_time=30min"], "HH:MM:SS"),
        (["nosuch.key=1"], "nosuch"),
        (["train.epochs"], "section.key=value"),
    ],
)
def test_bad_values_give_one_line_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_config("cpu", overrides=overrides)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_bad_yaml_and_unknown_preset(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        build_config("cpu", bad)
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("huge")
    with pytest.raises(ConfigError, match="not found"):
        build_config("cpu", tmp_path / "missing.yaml")
