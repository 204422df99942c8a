"""Model factory and offline pretrained-weight loading."""

from __future__ import annotations

import pytest
import torch

from toothseg.config import ModelConfig, build_config
from toothseg.errors import ConfigError
from toothseg.models import create_model


def test_tiny_unet_maps_one_channel_to_one_logit_map() -> None:
    model = create_model(build_config("tiny").model)
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, 64, 128))
    assert y.shape == (2, 1, 64, 128)


@pytest.mark.parametrize("name", ["unetplusplus", "fpn", "manet"])
def test_other_smp_architectures(name: str) -> None:
    cfg = ModelConfig(name=name, encoder="tu-resnet10t")
    with torch.no_grad():
        assert create_model(cfg).eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        create_model(ModelConfig(name="vnet"))
    with pytest.raises(ConfigError, match="tu-"):
        create_model(ModelConfig(name="unet", encoder="tu-no_such_encoder"))


def test_weights_from_local_file_roundtrip(tmp_path) -> None:
    cfg = build_config("tiny").model
    src = create_model(cfg)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = create_model(cfg.model_copy(update={"weights": str(path)}))
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_rgb_encoder_weights_are_folded_to_one_channel(tmp_path) -> None:
    import timm

    cfg = ModelConfig(name="unet", encoder="tu-resnet10t")
    rgb = timm.create_model("resnet10t", pretrained=False, features_only=True, in_chans=3)
    sd = rgb.state_dict()
    path = tmp_path / "enc.pth"
    torch.save(sd, path)
    model = create_model(cfg.model_copy(update={"weights": str(path)}))
    first = next(k for k, v in sd.items() if v.ndim == 4)
    loaded = model.encoder.model.state_dict()[first]
    assert loaded.shape[1] == 1
    assert torch.allclose(loaded, sd[first].sum(dim=1, keepdim=True))


def test_missing_or_foreign_weights_fail_clearly(tmp_path) -> None:
    cfg = build_config("tiny").model
    with pytest.raises(ConfigError, match="not found"):
        create_model(cfg.model_copy(update={"weights": str(tmp_path / "nope.pth")}))
    junk = tmp_path / "junk.pth"
    torch.save({"foo.weight": torch.zeros(3, 3)}, junk)
    with pytest.raises(ConfigError, match="junk.pth"):
        create_model(cfg.model_copy(update={"weights": str(junk)}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        create_model(cfg.model_copy(update={"weights": str(garbage)}))


def test_cache_without_cached_weights_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = build_config("tiny").model.model_copy(update={"weights": "cache"})
    with pytest.raises(ConfigError, match="no cached weights"):
        create_model(cfg)


def test_weights_from_populated_hf_cache(tmp_path, monkeypatch) -> None:
    """An offline machine whose Hugging Face cache already holds timm weights uses them without the network."""
    import timm
    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg("resnet10t").hf_hub_id.split("@")[0]
    snap = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")
    src = timm.create_model("resnet10t", pretrained=False)
    with torch.no_grad():
        for p in src.parameters():
            p.fill_(0.01)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, snap / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    model = create_model(ModelConfig(name="unet", encoder="tu-resnet10t", weights="cache"))
    w = model.encoder.model.state_dict()["conv1.0.weight"]
    assert torch.allclose(w, torch.full_like(w, 0.03))  # 3 RGB kernels of 0.01 folded into one channel
