"""Low-rank adapters (LoRA) for the SAM image encoder's attention projections.

Fine-tuning all 90-630M encoder weights at 1024x1024 needs a large GPU; adapters on the ``qkv`` projections train
well under 1% of them while the pretrained weights stay frozen. peft is not a dependency, so this is a plain wrapper.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base(x) + scale * B(A(x))`` with ``B`` zero-initialised, so wrapping does not change the output."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        self.scale = (alpha if alpha is not None else rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(x)) * self.scale


def apply_lora(encoder: nn.Module, rank: int, alpha: float | None = None) -> int:
    """Wrap every ``attn.qkv`` Linear of a SAM ``ImageEncoderViT`` in place; returns how many were wrapped."""
    wrapped = 0
    for block in getattr(encoder, "blocks", []):
        attn = block.attn
        if isinstance(attn.qkv, nn.Linear):
            attn.qkv = LoRALinear(attn.qkv, rank, alpha)
            wrapped += 1
    return wrapped


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapter weights only (what trains when the encoder is adapted with LoRA)."""
    return [p for m in module.modules() if isinstance(m, LoRALinear)
            for p in (m.lora_a.weight, m.lora_b.weight)]
