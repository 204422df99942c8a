"""The SAM-ViT segmenter family (``sam-vit-b``, ``sam-vit-l``, ``sam-vit-h``, ``sam-vit-tiny``).

The recipe fuses a UNet with a Segment-Anything-based model trained at 1024x1024. SAM is prompt-driven; here its ViT
image encoder (the official ``segment_anything`` modules, key-compatible with ``sam_vit_*.pth``) feeds a decoder
that outputs one dense tooth mask without prompts:

* ``decoder="sam"`` (default): SAM's own MaskDecoder fed with the prompt encoder's learned no-prompt embedding
  (no sparse tokens, ``no_mask_embed`` as the dense prompt); its 1/4-size mask is upsampled bilinearly. It loads
  the official decoder weights too, and beat the conv head on synthetic teeth (Dice 0.954 vs 0.877, docs/sam.md);
* ``decoder="conv"``: a light upsampling head on the encoder's 1/16 features, four x2 stages to full size.

Any input size that is a multiple of 16 works (others are padded): the absolute position embedding is resized
(bicubic) to the token grid, SAM's global-attention blocks resize their relative-position tables themselves and the
windowed blocks pad to the window. ``docs/sam.md`` has the measurements behind the defaults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.utils.checkpoint import checkpoint

from toothseg.config import ModelConfig
from toothseg.errors import ConfigError
from toothseg.models.factory import register_model
from toothseg.models.sam_lora import apply_lora, lora_parameters
from toothseg.models.sam_weights import load_sam_weights, resize_pos_embed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamSpec:
    """Sizes of one SAM variant; b/l/h are the official ``segment_anything.build_sam`` values."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn: tuple[int, ...]
    img_size: int = 1024
    window: int = 14
    prompt_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp: int = 2048
    decoder_heads: int = 8
    mask_in_chans: int = 16
    patch: int = 16


SAM_VARIANTS: dict[str, SamSpec] = {
    "b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
    "l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    # Seconds on a CPU at 128x256 (8x16 tokens): tests and the demo.
    "tiny": SamSpec(64, 2, 2, (1,), img_size=256, window=8, prompt_dim=32, decoder_depth=2, decoder_mlp=64,
                    decoder_heads=2, mask_in_chans=4),
}

_EXTRA_KEYS = {"decoder", "freeze_encoder", "lora_rank", "lora_alpha", "img_size", "grad_checkpoint"}


class SamEncoder(ImageEncoderViT):
    """SAM's ViT with its position embedding resized to the input's token grid and optional block checkpointing."""

    grad_checkpoint: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2]))
        for blk in self.blocks:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


class ConvUpHead(nn.Module):
    """Four (x2 bilinear, 3x3 conv, LayerNorm2d, GELU) stages: 1/16 features -> full-size logits."""

    def __init__(self, in_ch: int, stages: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(stages):
            out = max(8, in_ch >> (i + 1))
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(ch, out, 3, padding=1, bias=False), LayerNorm2d(out), nn.GELU()]
            ch = out
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(ch, 1, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.out(self.up(feats))


def build_sam_encoder(spec: SamSpec, img_size: int | None = None, in_chans: int = 1) -> SamEncoder:
    """The official ImageEncoderViT configuration (as in ``segment_anything.build_sam``) for ``spec``."""
    return SamEncoder(depth=spec.depth, embed_dim=spec.embed_dim, img_size=img_size or spec.img_size, mlp_ratio=4,
                      norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=spec.num_heads, patch_size=spec.patch,
                      qkv_bias=True, use_rel_pos=True, global_attn_indexes=spec.global_attn, window_size=spec.window,
                      out_chans=spec.prompt_dim, in_chans=in_chans)


def build_sam_decoder(spec: SamSpec, img_size: int | None = None) -> tuple[PromptEncoder, MaskDecoder]:
    """SAM's prompt encoder and mask decoder (official configuration for b/l/h)."""
    size = img_size or spec.img_size
    grid = size // spec.patch
    prompt = PromptEncoder(embed_dim=spec.prompt_dim, image_embedding_size=(grid, grid), input_image_size=(size, size),
                           mask_in_chans=spec.mask_in_chans)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=spec.decoder_depth, embedding_dim=spec.prompt_dim,
                                                        mlp_dim=spec.decoder_mlp, num_heads=spec.decoder_heads),
                          transformer_dim=spec.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256)
    return prompt, decoder


class SamSegmenter(nn.Module):
    """(B,1,H,W) normalised X-ray -> (B,1,H,W) tooth logits. Attribute names match the official checkpoint
    (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) so ``sam_vit_*.pth`` keys load unchanged."""

    def __init__(self, spec: SamSpec, decoder: str = "sam", img_size: int | None = None) -> None:
        super().__init__()
        if decoder not in ("conv", "sam"):
            raise ValueError(f"decoder must be 'conv' or 'sam', got '{decoder}'")
        self.spec = spec
        self.decoder_kind = decoder
        self.image_encoder = build_sam_encoder(spec, img_size)
        if decoder == "sam":
            self.prompt_encoder, self.mask_decoder = build_sam_decoder(spec, img_size)
            self._freeze_unused_prompt_parts()
        else:
            self.head = ConvUpHead(spec.prompt_dim)

    def load_pretrained_weights(self, weights: str) -> dict[str, list[str]]:
        """Load an official SAM checkpoint or a toothseg SAM-ViT state dict (see `sam_weights.load_sam_weights`)."""
        return load_sam_weights(self, weights, getattr(self, "name", "sam-vit"))

    def _freeze_unused_prompt_parts(self) -> None:
        # Without prompts these never reach the loss; frozen, they cannot trip DDP's unused-parameter check.
        pe, md = self.prompt_encoder, self.mask_decoder
        for m in [pe.point_embeddings, pe.not_a_point_embed, pe.mask_downscaling, md.iou_prediction_head,
                  *md.output_hypernetworks_mlps[1:]]:
            m.requires_grad_(False)

    def _sam_decode(self, feats: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feats.shape
        pe = self.prompt_encoder.pe_layer((h, w)).unsqueeze(0)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        sparse = feats.new_zeros(1, 0, c)
        # MaskDecoder repeats its image embedding once per prompt set, so it is called one image at a time.
        masks = [self.mask_decoder.predict_masks(feats[i:i + 1], pe, sparse, dense)[0][:, :1] for i in range(b)]
        return torch.cat(masks, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected a (B,1,H,W) X-ray batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        p = self.spec.patch
        ph, pw = (-h) % p, (-w) % p
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        feats = self.image_encoder(x)
        logits = self._sam_decode(feats) if self.decoder_kind == "sam" else self.head(feats)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w]


def _options(cfg: ModelConfig) -> dict:
    extra = dict(cfg.extra)
    unknown = sorted(set(extra) - _EXTRA_KEYS)
    if unknown:  # presets carry UNet keys (e.g. encoder_depth) that a renamed model inherits: ignore, but say so
        log.warning("model '%s' ignores model.extra keys %s (SAM-ViT knows %s)", cfg.name, unknown,
                    sorted(_EXTRA_KEYS))
    opts = {"decoder": str(extra.get("decoder", "sam")).lower(), "freeze_encoder": bool(extra.get("freeze_encoder",
            False)), "lora_rank": extra.get("lora_rank", 0), "lora_alpha": extra.get("lora_alpha"),
            "img_size": extra.get("img_size"), "grad_checkpoint": bool(extra.get("grad_checkpoint", False))}
    if opts["decoder"] not in ("conv", "sam"):
        raise ConfigError(f"model.extra.decoder '{opts['decoder']}' is not a SAM-ViT decoder; use 'conv' or 'sam'")
    if not isinstance(opts["lora_rank"], int) or opts["lora_rank"] < 0:
        raise ConfigError(f"model.extra.lora_rank must be an integer >= 0 (0 = no adapters), got {opts['lora_rank']}")
    if opts["img_size"] is not None and (not isinstance(opts["img_size"], int) or opts["img_size"] % 16
                                         or opts["img_size"] <= 0):
        raise ConfigError(f"model.extra.img_size must be a positive multiple of 16, got {opts['img_size']}")
    return opts


@register_model("sam-vit")
def build_sam_vit(cfg: ModelConfig, load_weights: bool = True) -> SamSegmenter:
    """Builder for ``sam-vit-{b,l,h,tiny}``; ``cfg.weights`` is a local official-format SAM checkpoint.

    ``cfg.extra``: ``decoder`` ('sam' (default) | 'conv'), ``freeze_encoder`` (bool), ``lora_rank`` (int, >0 implies a frozen
    encoder with trainable adapters), ``lora_alpha``, ``img_size`` (position-embedding grid, default the variant's),
    ``grad_checkpoint`` (bool: recompute blocks in backward to save memory). ``load_weights=False`` builds the
    architecture only (to receive a trained state dict).
    """
    variant = cfg.name.lower().removeprefix("sam-vit").lstrip("-_")
    if variant not in SAM_VARIANTS:
        names = ", ".join(f"sam-vit-{v}" for v in SAM_VARIANTS)
        raise ConfigError(f"unknown SAM model '{cfg.name}'; choose one of: {names}")
    opts = _options(cfg)
    model = SamSegmenter(SAM_VARIANTS[variant], decoder=opts["decoder"], img_size=opts["img_size"])
    model.name = cfg.name
    model.image_encoder.grad_checkpoint = opts["grad_checkpoint"]
    if opts["lora_rank"]:
        apply_lora(model.image_encoder, opts["lora_rank"], opts["lora_alpha"])
    if cfg.weights and load_weights:
        model.load_pretrained_weights(cfg.weights)
    if opts["freeze_encoder"] or opts["lora_rank"] > 0:  # a frozen encoder: only LoRA adapters, if any, train in it
        model.image_encoder.requires_grad_(False)
        for p in lora_parameters(model.image_encoder):
            p.requires_grad_(True)
    return model
