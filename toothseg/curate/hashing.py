"""Perceptual hashes that survive re-exposure, re-export, rescaling and slight crops of an OPG.

Why this design (measured on ../shared/data, see docs/curation.md):
* Exposure: the thumbnail is histogram-equalised before hashing, so gamma/contrast/brightness changes, which are
  monotonic grey-level maps, barely move the hash.
* Size and aspect: every image is resampled to one 256x128 thumbnail frame, so a 512x512 re-export of a 646x336
  image hashes like the original.
* Discrimination: all OPGs look alike at low frequencies, so a 64-bit pHash puts distinct patients within 6 bits of
  each other. A 256-bit pHash (hash_size 16) separates them.
* Crops: a 256-bit pHash is shift-sensitive (a 3% crop moves it by up to ~70 bits). Pairs whose raw distance is
  below `align_bound` are therefore registered (ECC, affine) and re-hashed in the same frame; the pair's distance is
  the smaller of the raw and the registered one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import imagehash
import numpy as np
from PIL import Image

THUMB_W, THUMB_H = 256, 128
MARGIN = 0.06  # hash the centre only: borders carry burnt-in text and are what a crop removes


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The common frame every comparison happens in: 256x128, histogram-equalised uint8."""
    small = cv2.resize(image, (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(small)


def phash_bits(thumb: np.ndarray, hash_size: int = 16) -> np.ndarray:
    """pHash (imagehash) of the thumbnail's centre as a flat bool vector of hash_size**2 bits."""
    h, w = thumb.shape
    dy, dx = int(h * MARGIN), int(w * MARGIN)
    centre = thumb[dy : h - dy, dx : w - dx]
    return imagehash.phash(Image.fromarray(centre), hash_size=hash_size).hash.flatten()


def hamming_matrix(bits: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances (n x n, int16: 3000 images take 18 MB) of an (n, n_bits) bool array."""
    packed = np.packbits(bits.astype(bool), axis=1)
    n = len(packed)
    out = np.empty((n, n), np.int16)
    for i in range(n):  # row by row keeps memory at n * n_bytes
        out[i] = np.bitwise_count(packed[i] ^ packed).sum(axis=1)
    return out


def register(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray | None:
    """Affine warp W (2x3, thumbnail pixels) with fixed(x) ~ moving(W x), or None when ECC does not converge.

    Estimated at half the thumbnail size: enough for crops/rescales of a few percent and ~2 ms a pair.
    """
    a = cv2.resize(fixed, (THUMB_W // 2, THUMB_H // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    b = cv2.resize(moving, (THUMB_W // 2, THUMB_H // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:
        _, warp = cv2.findTransformECC(a, b, np.eye(2, 3, dtype=np.float32), cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:
        return None
    warp[:, 2] *= 2.0
    return warp


def warp_to(moving: np.ndarray, warp: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resample `moving` into the fixed frame of size `shape` (h, w); `warp` is in thumbnail pixels."""
    h, w = shape
    mh, mw = moving.shape[:2]
    # frame pixels -> thumbnail -> warp -> moving's thumbnail -> moving pixels
    s_in = np.diag([THUMB_W / w, THUMB_H / h, 1.0])
    s_out = np.diag([mw / THUMB_W, mh / THUMB_H])
    m = s_out @ warp.astype(np.float64) @ s_in
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(moving, m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def registered_distance(fixed: np.ndarray, moving: np.ndarray, hash_size: int = 16) -> int | None:
    """Hash distance after registering `moving` onto `fixed` (both thumbnails); None if ECC fails."""
    warp = register(fixed, moving)
    if warp is None:
        return None
    aligned = warp_to(moving, warp, fixed.shape)
    return int(np.count_nonzero(phash_bits(fixed, hash_size) != phash_bits(aligned, hash_size)))


@dataclass
class Distances:
    """Raw hash distances of all pairs, and the final (min of raw and registered) distance of candidate pairs."""

    raw: np.ndarray  # (n, n) int16
    final: np.ndarray  # (n, n) int16: raw, lowered where registration found a closer match
    n_registered: int


def pair_distances(thumbs: list[np.ndarray], hash_size: int = 16, align_bound: int = 88) -> Distances:
    """Distances between every pair of thumbnails; pairs with raw distance <= align_bound are registered."""
    bits = np.array([phash_bits(t, hash_size) for t in thumbs]) if thumbs else np.zeros((0, hash_size**2), bool)
    raw = hamming_matrix(bits)
    final = raw.copy()
    ii, jj = np.nonzero(np.triu(raw <= align_bound, k=1))
    for i, j in zip(ii.tolist(), jj.tolist()):
        if raw[i, j] == 0:
            continue
        d = registered_distance(thumbs[i], thumbs[j], hash_size)
        if d is not None and d < final[i, j]:
            final[i, j] = final[j, i] = d
    return Distances(raw=raw, final=final, n_registered=len(ii))
