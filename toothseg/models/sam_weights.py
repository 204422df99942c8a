"""Load official SAM checkpoints (``sam_vit_b_01ec64.pth``-style state dicts) into a `SamSegmenter`, offline.

The official weights expect 3-channel 0-255 RGB normalised with SAM's pixel mean/std; toothseg feeds 1 channel
normalised with fixed constants (`toothseg.data.preprocess`). Because the patch embedding is a linear, unpadded
stride-16 convolution, both normalisations fold exactly into its kernel and bias, so a grey X-ray produces the same
embedding as SAM's own preprocessing of the same picture. Position embeddings and global relative-position tables
are resized when the checkpoint's grid differs from the model's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toothseg.data.preprocess import MEAN, STD
from toothseg.errors import ConfigError
from toothseg.models.pretrained import _read_state_dict

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
_EMBED_TO_NAME = {768: "sam-vit-b", 1024: "sam-vit-l", 1280: "sam-vit-h", 64: "sam-vit-tiny"}
_PATCH_W = "image_encoder.patch_embed.proj.weight"
_PATCH_B = "image_encoder.patch_embed.proj.bias"


def fold_rgb_patch_embed(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E,3,p,p) kernel for SAM-normalised RGB -> (E,1,p,p) kernel + bias for toothseg-normalised grey input.

    Grey value v in [0,1]; toothseg feeds x = (v - MEAN)/STD; SAM expects (255 v - m_c)/s_c per channel, i.e.
    a_c x + b_c with a_c = 255 STD / s_c and b_c = (255 MEAN - m_c) / s_c.
    """
    a = torch.tensor([255.0 * STD / s for s in SAM_PIXEL_STD], dtype=weight.dtype)
    b = torch.tensor([(255.0 * MEAN - m) / s for m, s in zip(SAM_PIXEL_MEAN, SAM_PIXEL_STD)], dtype=weight.dtype)
    w1 = (weight * a.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    b1 = bias + (weight.sum(dim=(2, 3)) * b.view(1, 3)).sum(dim=1)
    return w1, b1


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, H0, W0, C) absolute position embedding -> (1, h, w, C), bicubic (the ViTDet/timm rule)."""
    if tuple(pos.shape[1:3]) == tuple(grid):
        return pos
    out = F.interpolate(pos.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1)


def _resize_rel_pos(t: torch.Tensor, length: int) -> torch.Tensor:
    return F.interpolate(t.t().unsqueeze(0), size=length, mode="linear", align_corners=False)[0].t()


def _adapt(key: str, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``v`` reshaped to ``target``'s shape where that is meaningful, else None."""
    if v.shape == target.shape:
        return v
    if key.endswith("pos_embed") and v.ndim == 4 and v.shape[-1] == target.shape[-1]:
        return resize_pos_embed(v, tuple(target.shape[1:3]))
    if ".rel_pos_" in key and v.ndim == 2 and v.shape[1] == target.shape[1]:
        return _resize_rel_pos(v, target.shape[0])
    return None


def _check_is_sam(path: Path, sd: dict[str, torch.Tensor], model: nn.Module, name: str) -> None:
    if _PATCH_W not in sd:
        has = next(iter(sd), "nothing")
        raise ConfigError(f"{path}: not a SAM checkpoint (no 'image_encoder.*' keys, first key '{has}'); pass an "
                          "official sam_vit_b_01ec64.pth-style file for model.weights")
    src_dim = sd[_PATCH_W].shape[0]
    dst_dim = model.image_encoder.patch_embed.proj.weight.shape[0]
    src_depth = len({k.split(".")[2] for k in sd if k.startswith("image_encoder.blocks.")})
    dst_depth = len(model.image_encoder.blocks)
    if src_dim != dst_dim or src_depth != dst_depth:
        fits = _EMBED_TO_NAME.get(src_dim, f"a ViT with embed dim {src_dim}")
        raise ConfigError(f"{path}: weights are for {fits} (embed dim {src_dim}, {src_depth} blocks), not '{name}' "
                          f"(embed dim {dst_dim}, {dst_depth} blocks); set model.name to match the file")


def load_sam_weights(model: nn.Module, weights: str | Path, name: str = "sam-vit") -> dict[str, list[str]]:
    """Load an official-format SAM checkpoint (or a toothseg SAM-ViT state dict) into ``model``.

    Loads ``image_encoder.*`` always, ``prompt_encoder.*`` / ``mask_decoder.*`` when the model has SAM's decoder, and
    the conv head when present in the file. Raises `ConfigError` naming the file when it is missing, unreadable,
    not SAM, or another size. Returns {"loaded": keys, "skipped": keys} for logging and tests.
    """
    path = Path(weights).expanduser()
    if str(weights) == "cache":
        raise ConfigError("model.weights 'cache' is not available for SAM-ViT models; pass the local official "
                          "checkpoint file (e.g. sam_vit_b_01ec64.pth)")
    if not path.is_file():
        raise ConfigError(f"{path}: SAM weights file not found; pass an existing sam_vit_*.pth file or omit "
                          "model.weights to train from scratch")
    sd = _read_state_dict(path)
    _check_is_sam(path, sd, model, name)
    target = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, v in sd.items():
        tkey = key
        if tkey not in target and ".attn.qkv." in key:  # LoRA-wrapped projections keep the base under .base
            tkey = key.replace(".attn.qkv.", ".attn.qkv.base.")
        if tkey not in target:
            skipped.append(key)
            continue
        if key == _PATCH_W and v.shape[1] == 3 and target[tkey].shape[1] == 1:
            v, loaded[_PATCH_B] = fold_rgb_patch_embed(v.float(), sd[_PATCH_B].float())
        elif key == _PATCH_B and _PATCH_B in loaded:
            continue
        adapted = _adapt(tkey, v, target[tkey])
        if adapted is None:
            raise ConfigError(f"{path}: tensor '{key}' has shape {tuple(v.shape)}, the model expects "
                              f"{tuple(target[tkey].shape)}; these weights belong to another configuration")
        loaded[tkey] = adapted
    missing_enc = [k for k in target if k.startswith("image_encoder.") and k not in loaded and ".lora_" not in k]
    if missing_enc:
        raise ConfigError(f"{path}: {len(missing_enc)} image-encoder tensors missing (e.g. '{missing_enc[0]}'); "
                          "the file is incomplete or not an official SAM checkpoint")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "skipped": skipped}
