"""The one image -> network-input mapping shared by training, inference and export, and its inverse.

Training and prediction must see identical pixels, so both go through `to_network` / `from_network`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# X-rays are normalised with fixed constants (not per-image statistics): per-image standardisation amplifies noise
# on under-exposed films and makes fused/ONNX outputs depend on the whole image.
MEAN = 0.5
STD = 0.25


@dataclass(frozen=True)
class Placement:
    """Where the resized image sits inside the network input (for letterbox) and the original size."""

    orig_h: int
    orig_w: int
    top: int
    left: int
    inner_h: int
    inner_w: int


def fit(img: np.ndarray, size: tuple[int, int], mode: str = "resize", interp: int = cv2.INTER_AREA,
        pad_value: int = 0) -> tuple[np.ndarray, Placement]:
    """Resize (``resize``: stretch) or letterbox (``letterbox``: keep aspect, pad) a 2-D array to ``size`` (h, w)."""
    h, w = img.shape[:2]
    th, tw = size
    if mode == "resize":
        out = cv2.resize(img, (tw, th), interpolation=interp) if (h, w) != (th, tw) else img.copy()
        return out, Placement(h, w, 0, 0, th, tw)
    if mode != "letterbox":
        raise ValueError(f"unknown resize mode '{mode}' (resize or letterbox)")
    s = min(th / h, tw / w)
    ih, iw = max(1, round(h * s)), max(1, round(w * s))
    inner = cv2.resize(img, (iw, ih), interpolation=interp)
    out = np.full((th, tw) + img.shape[2:], pad_value, dtype=img.dtype)
    top, left = (th - ih) // 2, (tw - iw) // 2
    out[top:top + ih, left:left + iw] = inner
    return out, Placement(h, w, top, left, ih, iw)


def normalise(img_u8: np.ndarray) -> np.ndarray:
    return ((img_u8.astype(np.float32) / 255.0) - MEAN) / STD


def to_network(img_u8: np.ndarray, size: tuple[int, int], mode: str = "resize") -> tuple[np.ndarray, Placement]:
    """uint8 X-ray -> float32 (h, w) network input at ``size``, plus where it sits."""
    resized, place = fit(img_u8, size, mode, interp=cv2.INTER_AREA)
    return normalise(resized), place


def from_network(prob: np.ndarray, place: Placement) -> np.ndarray:
    """A (h, w) probability map at network size -> the original image size (bilinear)."""
    inner = prob[place.top:place.top + place.inner_h, place.left:place.left + place.inner_w]
    return cv2.resize(inner.astype(np.float32), (place.orig_w, place.orig_h), interpolation=cv2.INTER_LINEAR)
