"""Pretrained weights, offline only: a local file, or a timm / Hugging Face cache that is already populated.

Nothing here downloads. Encoder weights trained on RGB are adapted to the 1-channel input by summing the first
convolution's kernels over the colour channels (the standard smp/timm rule).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from toothseg.config import ModelConfig
from toothseg.errors import ConfigError, InputError
from toothseg.models.checkpoint import safe_load


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = safe_load(path)
    except InputError as exc:
        raise ConfigError(f"{path}: cannot read weights ({exc.problem}); pass a .pth/.pt/.safetensors state dict "
                          "or a toothseg checkpoint") from None
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read weights ({exc.__class__.__name__}); pass a .pth/.pt/.safetensors "
                          "state dict or a Lightning checkpoint") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ConfigError(f"{path}: the file holds no state dict")
    return {k.removeprefix("model.").removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _adapt_channels(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        t = target.get(k)
        if t is not None and v.ndim == 4 and t.ndim == 4 and v.shape[1] == 3 and t.shape[1] == 1 \
                and v.shape[0] == t.shape[0] and v.shape[2:] == t.shape[2:]:
            v = v.sum(dim=1, keepdim=True)
        out[k] = v
    return out


def cached_timm_weights(timm_name: str) -> Path | None:
    """Find an already-downloaded timm checkpoint in the Hugging Face cache, without network access."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(timm_name)
    except Exception:
        return None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id=repo.split("@")[0], filename=fname,
                                     cache_dir=os.environ.get("HF_HUB_CACHE"))
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def weights_file(cfg: ModelConfig) -> Path:
    """The file ``cfg.weights`` names: a local file, or with 'cache' the timm encoder's offline cache entry; a
    `ConfigError` when it is not on disk (nothing is downloaded)."""
    if cfg.weights == "cache":
        if not cfg.encoder.startswith("tu-"):
            raise ConfigError(f"weights 'cache' works with timm encoders ('tu-...'), not '{cfg.encoder}'; "
                              "pass a local weights file instead")
        path = cached_timm_weights(cfg.encoder[3:])
        if path is None:
            raise ConfigError(f"no cached weights for timm model '{cfg.encoder[3:]}' (looked in the Hugging Face "
                              "cache, offline); download them on a connected machine or pass a local file")
        return path
    path = Path(str(cfg.weights)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found; pass an existing .pth/.safetensors file or omit "
                          "model.weights to train from scratch")
    return path


def load_pretrained(model: nn.Module, cfg: ModelConfig) -> None:
    """Load ``cfg.weights`` into ``model``: a whole-model state dict, or encoder weights (smp ``encoder.``-prefixed
    or bare timm keys). Raises `ConfigError` naming the file when weights are missing or do not fit."""
    spec = cfg.weights
    if not spec:
        return
    own_loader = getattr(model, "load_pretrained_weights", None)
    if callable(own_loader):  # families with their own checkpoint format (SAM) convert weights exactly themselves
        own_loader(spec)
        return
    path = weights_file(cfg)
    sd = _read_state_dict(path)
    target_model = model
    if not any(k in model.state_dict() for k in sd):  # encoder-only weights: timm keys under encoder.model (tu-)
        encoder = getattr(model, "encoder", None)
        if encoder is None:
            raise ConfigError(f"{path}: keys do not match this model")
        target_model = getattr(encoder, "model", encoder)
    tsd = target_model.state_dict()
    sd = _adapt_channels(sd, tsd)
    usable = {k: v for k, v in sd.items() if k in tsd and tsd[k].shape == v.shape}
    if len(usable) < max(1, len(tsd) // 2):
        raise ConfigError(f"{path}: only {len(usable)} of {len(tsd)} tensors fit model '{cfg.name}'/'{cfg.encoder}'; "
                          "these weights belong to another architecture")
    target_model.load_state_dict(usable, strict=False)
