"""One door in for every model: ``create_model(ModelConfig)`` returns a module mapping (B,1,H,W) X-rays to
(B,1,H,W) tooth logits. smp architectures with any smp or timm (``tu-...``) encoder are built in; other families
(the SAM-ViT segmenter) register themselves with `register_model`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from toothseg.config import ModelConfig
from toothseg.errors import ConfigError
from toothseg.models.pretrained import load_pretrained

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_SMP_ARCHS = {"unet", "unetplusplus", "manet", "linknet", "fpn", "pspnet", "deeplabv3", "deeplabv3plus", "pan",
              "upernet", "segformer", "dpt"}


def register_model(prefix: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``builder(cfg, load_weights=True)`` for model names starting with ``prefix`` (e.g. 'sam-vit').

    The builder applies ``cfg.weights`` itself when ``load_weights`` is true (its checkpoint format is its own)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[prefix] = fn
        return fn

    return deco


def _builtin_families() -> None:
    # Imported by name, when first needed: the families import this module to register themselves (no cycle).
    importlib.import_module("toothseg.models.sam")


def _build_smp(cfg: ModelConfig) -> nn.Module:
    import segmentation_models_pytorch as smp

    kwargs = dict(cfg.extra)
    if cfg.decoder_channels is not None:
        kwargs["decoder_channels"] = list(cfg.decoder_channels)
    try:
        # Weights never come from smp's hub download: 1 channel in, and weights only from local files or caches.
        return smp.create_model(cfg.name, encoder_name=cfg.encoder, encoder_weights=None, in_channels=1, classes=1,
                                **kwargs)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"cannot build model '{cfg.name}' with encoder '{cfg.encoder}': {exc}; "
                          "check model.name/model.encoder (timm encoders are written 'tu-<name>')") from None


def create_model(cfg: ModelConfig, load_weights: bool = True) -> nn.Module:
    """Build the model named by ``cfg``; with ``load_weights`` apply ``cfg.weights`` (local file or offline cache)."""
    _builtin_families()
    name = cfg.name.lower()
    for prefix, builder in _BUILDERS.items():
        if name.startswith(prefix):
            model = builder(cfg, load_weights=load_weights)
            break
    else:
        if name not in _SMP_ARCHS:
            known = sorted(_SMP_ARCHS | {p + "*" for p in _BUILDERS})
            raise ConfigError(f"unknown model '{cfg.name}'; choose one of: {', '.join(known)}")
        model = _build_smp(cfg)
        if load_weights and cfg.weights:
            load_pretrained(model, cfg)
    return model


def uses_encoder(cfg: ModelConfig) -> bool:
    """True for smp architectures, whose ``model.encoder`` matters; registered families bring their own."""
    return cfg.name.lower() in _SMP_ARCHS
