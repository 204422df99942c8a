"""Error overlays: where a prediction agrees with the ground truth and where it over- or under-segments."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from toothseg.data.io import encode_png

TP_RGB = (40, 200, 40)  # tooth in both
FP_RGB = (235, 40, 40)  # predicted, not in the ground truth (over-segmentation)
FN_RGB = (40, 110, 255)  # in the ground truth, missed (under-segmentation)


def error_overlay(image: np.ndarray | None, pred: np.ndarray, gt: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the X-ray (or black) with TP tinted green, FP red and FN blue (opaque); sizes must match."""
    if image is None:
        image = np.zeros(gt.shape, np.uint8)
    if image.shape[:2] != gt.shape or pred.shape != gt.shape:
        raise ValueError(f"image {image.shape[:2]}, prediction {pred.shape} and mask {gt.shape} differ in size")
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image[..., :3].copy()
    out = rgb.astype(np.float32)
    tp = pred & gt
    out[tp] = (1 - alpha) * out[tp] + alpha * np.asarray(TP_RGB, np.float32)
    # errors are often thin bands along tooth edges: opaque, so they stay visible when the picture is shrunk
    out[pred & ~gt] = FP_RGB
    out[~pred & gt] = FN_RGB
    return out.clip(0, 255).astype(np.uint8)


def png_b64(rgb: np.ndarray, max_width: int = 900) -> str:
    """Encode an RGB image as base64 PNG, shrunk (area interpolation) to at most ``max_width`` pixels wide."""
    if rgb.shape[1] > max_width:
        h = round(rgb.shape[0] * max_width / rgb.shape[1])
        rgb = cv2.resize(rgb, (max_width, h), interpolation=cv2.INTER_AREA)
    return base64.b64encode(encode_png(rgb)).decode("ascii")
