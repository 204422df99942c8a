"""Per-model scales: the recipe trains the UNet and the SAM-ViT each at its own size, and the bundle fuses them."""

from __future__ import annotations

import json

from helpers.fakerun import make_run
from toothseg.train.engine import train


def test_each_model_trains_at_its_own_scale_and_both_are_fused(tmp_path) -> None:
    run, _ = make_run(tmp_path, n=8, overrides=[
        "train.hard_fraction=0", "train.threads=1",
        "models=[{name: sam-vit-tiny, scales: [[64, 64]]}]",
    ])
    out = train(run, fold="all")
    assert set(out["models"]) == {"unet-tu-tf_efficientnetv2_b0-64x128", "sam-vit-tiny-64x64"}
    sam = json.loads((run / "train" / "sam-vit-tiny-64x64" / "model.json").read_text())
    assert sam["scale"] == [64, 64]
    bundle = json.loads((run / "bundle" / "bundle.json").read_text())
    scales = {tuple(m["scale"]) for m in bundle["members"]}
    assert scales == {(64, 128), (64, 64)}
    assert len(bundle["members"]) == 4  # 2 models x 2 folds
