"""SAM-ViT family (issue 8): shapes, official-checkpoint loading, freezing/LoRA, a few training steps."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from toothseg.config import ModelConfig
from toothseg.data.preprocess import MEAN, STD
from toothseg.errors import ConfigError
from toothseg.models import create_model
from toothseg.models.sam import SAM_VARIANTS, SamSegmenter
from toothseg.models.sam_lora import LoRALinear
from toothseg.models.sam_weights import SAM_PIXEL_MEAN, SAM_PIXEL_STD

TINY = SAM_VARIANTS["tiny"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are ~50 ms/step on one thread; on a loaded 2-core box OpenMP barriers make 2 threads 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**extra) -> ModelConfig:
    return ModelConfig(name="sam-vit-tiny", extra=extra)


def official_tiny_sam() -> Sam:
    """The tiny sizes built with segment_anything's own classes, exactly as its build_sam does for vit_b."""
    s, grid = TINY, TINY.img_size // TINY.patch
    return Sam(
        image_encoder=ImageEncoderViT(depth=s.depth, embed_dim=s.embed_dim, img_size=s.img_size, mlp_ratio=4,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=s.num_heads,
                                      patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=s.global_attn,
                                      window_size=s.window, out_chans=s.prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=s.prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(s.img_size, s.img_size), mask_in_chans=s.mask_in_chans),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=s.decoder_depth, embedding_dim=s.prompt_dim, mlp_dim=s.decoder_mlp, num_heads=s.decoder_heads),
            transformer_dim=s.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=list(SAM_PIXEL_MEAN), pixel_std=list(SAM_PIXEL_STD))


def randomise(module: nn.Module, seed: int = 0) -> None:
    """Official init leaves pos-embeds and rel-pos tables at zero; random values make loading checks meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> tuple[Path, Sam]:
    sam = official_tiny_sam()
    randomise(sam)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_tiny.pth"
    torch.save(sam.state_dict(), path)
    return path, sam


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("decoder", ["conv", "sam"])
def test_tiny_maps_xray_to_same_size_logits(decoder):
    model = create_model(tiny(decoder=decoder)).eval()
    assert isinstance(model, SamSegmenter)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 128, 256)).shape == (2, 1, 128, 256)
        y = model(torch.randn(1, 1, 100, 200))  # not a multiple of 16: padded, then cropped
    assert y.shape == (1, 1, 100, 200) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="B,1,H,W"):
        model(torch.randn(1, 3, 128, 256))


def test_bad_names_and_options():
    with pytest.raises(ConfigError, match="sam-vit-b"):
        create_model(ModelConfig(name="sam-vit-x"))
    with pytest.raises(ConfigError, match="decoder"):
        create_model(tiny(decoder="fpn"))
    with pytest.raises(ConfigError, match="lora_rank"):
        create_model(tiny(lora_rank=-1))
    with pytest.raises(ConfigError, match="img_size"):
        create_model(tiny(img_size=100))
    with pytest.raises(ConfigError, match="cache"):
        create_model(ModelConfig(name="sam-vit-tiny", weights="cache"))


@pytest.mark.parametrize("decoder", ["conv", "sam"])
def test_tiny_trains_a_few_steps(decoder):
    torch.manual_seed(0)
    model = create_model(tiny(decoder=decoder))
    y = torch.zeros(2, 1, 64, 128)
    y[0, :, 16:48, 20:60] = 1
    y[1, :, 8:32, 75:115] = 1
    x = (y - 0.5) * 2 + 0.3 * torch.randn_like(y)  # bright boxes on a dark, noisy background
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(10):
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        if _ == 0:  # every trainable parameter reaches the loss (DDP needs no find_unused_parameters)
            assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_official_tiny_checkpoint_loads_and_folds_normalisation(tiny_ckpt):
    path, sam = tiny_ckpt
    model = create_model(ModelConfig(name="sam-vit-tiny", weights=str(path), extra={"decoder": "sam"})).eval()
    sd = model.state_dict()
    for key in ("image_encoder.blocks.1.attn.qkv.weight", "image_encoder.pos_embed",
                "image_encoder.blocks.1.attn.rel_pos_h", "mask_decoder.mask_tokens.weight",
                "prompt_encoder.no_mask_embed.weight"):
        assert torch.equal(sd[key], sam.state_dict()[key]), key
    # A grey picture through SAM's own RGB normalisation == the same picture through toothseg's 1-channel input.
    v = torch.rand(1, 1, 256, 256)
    rgb = (v.repeat(1, 3, 1, 1) * 255 - torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = sam.image_encoder(rgb)
        ours = model.image_encoder((v - MEAN) / STD)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_checkpoint_resized_to_other_grid(tiny_ckpt):
    path, sam = tiny_ckpt
    model = create_model(ModelConfig(name="sam-vit-tiny", weights=str(path), extra={"img_size": 128}))
    assert model.image_encoder.pos_embed.shape == (1, 8, 8, TINY.embed_dim)
    assert model.image_encoder.blocks[1].attn.rel_pos_h.shape[0] == 15  # global block: 2*8-1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 128, 256)).shape == (1, 1, 128, 256)


def test_official_vit_b_checkpoint_loads_into_real_size(tmp_path, tiny_ckpt):
    sam = sam_model_registry["vit_b"](checkpoint=None)  # official key names and shapes, random weights
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(sam.state_dict(), path)
    ref = sam.state_dict()
    del sam
    model = create_model(ModelConfig(name="sam-vit-b", weights=str(path), extra={"decoder": "sam", "lora_rank": 2}))
    sd = model.state_dict()
    assert torch.equal(sd["image_encoder.blocks.11.attn.qkv.base.weight"], ref["image_encoder.blocks.11.attn.qkv.weight"])
    assert torch.equal(sd["mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"],
                       ref["mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"])
    assert sd["image_encoder.patch_embed.proj.weight"].shape == (768, 1, 16, 16)
    del model, sd, ref
    # The tiny file into the real-size architecture, and the real file into the tiny one: named errors.
    with pytest.raises(ConfigError, match="sam-vit-tiny"):
        create_model(ModelConfig(name="sam-vit-b", weights=str(tiny_ckpt[0])))
    with pytest.raises(ConfigError, match=r"sam_vit_b_01ec64\.pth.*sam-vit-b"):
        create_model(ModelConfig(name="sam-vit-tiny", weights=str(path)))


def test_bad_weight_files_name_the_file(tmp_path, tiny_ckpt):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match="nope.pth.*not found"):
        create_model(ModelConfig(name="sam-vit-tiny", weights=str(missing)))
    unet = create_model(ModelConfig(name="unet", encoder="resnet18"))
    unet_path = tmp_path / "unet.pth"
    torch.save(unet.state_dict(), unet_path)
    with pytest.raises(ConfigError, match="unet.pth: not a SAM checkpoint"):
        create_model(ModelConfig(name="sam-vit-tiny", weights=str(unet_path)))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth"):
        create_model(ModelConfig(name="sam-vit-tiny", weights=str(junk)))
    sd = torch.load(tiny_ckpt[0], weights_only=True)
    del sd["image_encoder.blocks.0.mlp.lin1.weight"]
    partial_path = tmp_path / "partial.pth"
    torch.save(sd, partial_path)
    with pytest.raises(ConfigError, match="partial.pth: 1 image-encoder tensors missing"):
        create_model(ModelConfig(name="sam-vit-tiny", weights=str(partial_path)))


def _step_changes(model: nn.Module) -> set[str]:
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x = torch.randn(2, 1, 128, 256)
    F.binary_cross_entropy_with_logits(model(x), (x > 0).float()).backward()
    opt.step()
    return {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}


def test_freeze_encoder_trains_only_the_decoder():
    model = create_model(tiny(freeze_encoder=True, decoder="conv"))
    assert trainable(model) == sum(p.numel() for p in model.head.parameters())
    changed = _step_changes(model)
    assert changed and all(k.startswith("head.") for k in changed)
    model = create_model(tiny(freeze_encoder=True))  # SAM decoder: only its prompt-free path trains
    assert trainable(model) > 0 and not any(p.requires_grad for p in model.image_encoder.parameters())
    changed = _step_changes(model)
    assert changed and all(k.startswith(("mask_decoder.", "prompt_encoder.no_mask_embed")) for k in changed)


def test_lora_trains_only_adapters_and_decoder(tiny_ckpt):
    rank = 4
    model = create_model(ModelConfig(name="sam-vit-tiny", weights=str(tiny_ckpt[0]),
                                     extra={"decoder": "sam", "lora_rank": rank}))
    qkvs = [b.attn.qkv for b in model.image_encoder.blocks]
    assert all(isinstance(q, LoRALinear) for q in qkvs) and len(qkvs) == TINY.depth
    adapters = TINY.depth * rank * (TINY.embed_dim + 3 * TINY.embed_dim)
    decoder = sum(p.numel() for m in (model.mask_decoder, model.prompt_encoder) for p in m.parameters()
                  if p.requires_grad)
    assert trainable(model) == adapters + decoder
    # B starts at zero, so adapters do not change the pretrained encoder's output.
    plain = create_model(ModelConfig(name="sam-vit-tiny", weights=str(tiny_ckpt[0]), extra={"decoder": "sam"}))
    x = torch.randn(1, 1, 128, 256)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-5)
    changed = _step_changes(model)
    enc = {k for k in changed if k.startswith("image_encoder.")}
    assert enc and all(".lora_" in k for k in enc)
    assert any(k.startswith("mask_decoder.") for k in changed)


def test_trained_state_dict_round_trips_through_weights(tmp_path):
    model = create_model(tiny(lora_rank=2)).eval()
    _step_changes(model)
    path = tmp_path / "trained.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)  # Lightning-style
    again = create_model(ModelConfig(name="sam-vit-tiny", weights=str(path), extra={"lora_rank": 2})).eval()
    x = torch.randn(1, 1, 128, 256)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_grad_checkpoint_matches_plain_backward():
    torch.manual_seed(0)
    a = create_model(tiny())
    b = create_model(tiny(grad_checkpoint=True))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 128, 256)
    for m in (a, b):
        m(x).square().mean().backward()
    ga, gb = a.image_encoder.blocks[0].mlp.lin1.weight.grad, b.image_encoder.blocks[0].mlp.lin1.weight.grad
    assert torch.allclose(ga, gb, atol=1e-6)


def test_sam_trains_through_the_engine_with_the_tiny_preset(tmp_path):
    from toothseg.config import build_config
    from toothseg.data.synth import synth
    from toothseg.train.dataset import TrainItem
    from toothseg.train.fit import fit_model

    synth(tmp_path / "data", labelled=6, unlabelled=0, height=128, width=256, seed=0, duplicates=False)
    items = [TrainItem(f"synth/{p.stem}", p, tmp_path / "data" / "masks" / p.name)
             for p in sorted((tmp_path / "data" / "images").glob("*.png"))]
    # The tiny preset's UNet-only extra key (encoder_depth) rides along: ignored with a warning, not an error.
    cfg = build_config("tiny", overrides=["model.name=sam-vit-tiny", "train.max_steps=3", "train.epochs=1", "train.batch_size=1",
                                          "train.scales=[[128, 128]]", "train.accelerator=cpu", "train.threads=1"])
    res = fit_model(cfg, items[:4], items[4:], tmp_path / "fit")
    assert res.global_step == 3 and res.best_ckpt.is_file()
    state = torch.load(res.best_ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert any(k.startswith("model.image_encoder.blocks.") for k in state)


def test_sam_member_fuses_with_a_unet_at_another_scale():
    from toothseg.predict.predictor import Predictor

    torch.manual_seed(0)
    unet = create_model(ModelConfig(name="unet", encoder="resnet18", decoder_channels=[16, 16, 8, 8, 8]))
    sam = create_model(tiny(lora_rank=2))
    pred = Predictor.from_models([(unet, (128, 256), "resize", 2.0), (sam, (128, 128), "resize", 1.0)], tta=["hflip"],
                                 threads=1)
    img = np.random.default_rng(0).integers(0, 255, (150, 310), dtype=np.uint8)
    fused = pred.predict_proba(img)
    members = pred.predict_members(img)
    assert fused.shape == (150, 310) and all(m.shape == (150, 310) for m in members)
    assert np.allclose(fused, np.clip((2 * members[0] + members[1]) / 3, 0, 1), atol=1e-5)
    assert 0 <= fused.min() and fused.max() <= 1


def _bundle_runner(folder: Path, mcfg: ModelConfig, state: dict):
    """The member network a bundle rebuilds from its ModelConfig and plain state dict."""
    from toothseg.predict.bundle_format import Bundle, Member
    from toothseg.predict.engines import TorchRunner

    (folder / "models").mkdir()
    torch.save(state, folder / "models" / "m.pt")
    member = Member("sam", 0, mcfg.model_dump(mode="json"), (128, 256), "resize", 1.0, "models/m.pt")
    return TorchRunner(Bundle(folder, {}, [member]).load_network(member))


def test_bundle_member_rebuilds_from_its_state_dict(tiny_ckpt, tmp_path):
    mcfg = ModelConfig(name="sam-vit-tiny", weights=str(tiny_ckpt[0]), extra={"lora_rank": 2})
    model = create_model(mcfg).eval()
    runner = _bundle_runner(tmp_path, mcfg, model.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 1, 128, 256)).astype("float32")
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(x)))[:, 0].numpy()
    assert np.allclose(runner(x), ref, atol=1e-6)


def test_bundle_member_needs_no_weights_file(tmp_path):
    model = create_model(tiny())
    mcfg = ModelConfig(name="sam-vit-tiny", weights=str(tmp_path / "gone.pth"))  # deleted after training
    _bundle_runner(tmp_path, mcfg, model.state_dict())
