"""A compact description of each X-ray for diversity: the bundle's encoder features, average-pooled.

Two X-rays the encoder sees alike are unlikely to teach the model much more than one of them. Models without an
``encoder`` (e.g. SAM-ViT) fall back to a small thumbnail of the image, which still separates gross differences.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from toothseg.data.preprocess import to_network

THUMB = (16, 32)


def _encoder(predictor: Any) -> tuple[Any, tuple[int, int], str] | None:
    for net in getattr(predictor, "nets", []):
        model = getattr(getattr(net, "runner", None), "model", None)
        if model is not None and hasattr(model, "encoder"):
            return model.encoder, tuple(net.scale), net.resize
    return None


def thumbnail(img: np.ndarray) -> np.ndarray:
    t = cv2.resize(img, THUMB[::-1], interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-6)


def image_features(predictor: Any, img: np.ndarray) -> np.ndarray:
    """L2-normalised feature vector (float32) of one uint8 X-ray."""
    found = _encoder(predictor)
    if found is None:
        return thumbnail(img)
    import torch

    encoder, scale, resize = found
    x, _ = to_network(img, scale, resize)
    with torch.inference_mode():
        feats = encoder(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None])
    deepest = feats[-1] if isinstance(feats, (list, tuple)) else feats
    v = deepest.float().mean(dim=(-2, -1))[0].numpy()
    return (v / (np.linalg.norm(v) + 1e-6)).astype(np.float32)
