"""Hashing and grouping: re-exposed, re-exported, rescaled and slightly cropped copies stay within the default
threshold; distinct images stay above it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from toothseg.config import CurateConfig
from toothseg.curate.groups import group_pairs, nearest_in_group
from toothseg.curate.hashing import hamming_matrix, pair_distances, phash_bits, thumbnail

THRESHOLD = CurateConfig().hash_threshold


@pytest.fixture(scope="module")
def opgs(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Eight distinct synthetic OPGs (different patients): realistic structure for the hash to work on."""
    from toothseg.data.io import read_image
    from toothseg.data.synth import synth

    out = tmp_path_factory.mktemp("opgs")
    synth(out, labelled=8, unlabelled=0, height=160, width=320, seed=3, duplicates=False)
    return [read_image(p) for p in sorted((out / "images").glob("*.png"))]


def scene(seed: int, h: int = 200, w: int = 400) -> np.ndarray:
    """A structured grey image (blurred noise + bright blobs): a second, non-dental kind of content."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(0, 1, (h, w)), (0, 0), 12) * 60
    img += cv2.GaussianBlur(rng.normal(0, 1, (h, w)), (0, 0), 3) * 25
    for _ in range(12):
        c = (int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20)))
        cv2.ellipse(img, c, (int(rng.integers(6, 20)), int(rng.integers(15, 40))), 0, 0, 360, 90, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    return np.clip(img - img.min(), 0, 255).astype(np.uint8)


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    return (255 * (img / 255.0) ** g).astype(np.uint8)


def contrast(img: np.ndarray, c: float, b: float = 0.0) -> np.ndarray:
    f = img.astype(np.float32)
    return np.clip((f - f.mean()) * c + f.mean() + b, 0, 255).astype(np.uint8)


def crop(img: np.ndarray, frac: float) -> np.ndarray:
    h, w = img.shape
    t, left = int(h * frac), int(w * frac)
    return img[t:, left : w - left // 2]  # uneven on purpose: shifts and rescales the content


def jpeg(img: np.ndarray, q: int = 60) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_GRAYSCALE)


PERTURB = {
    "exact": lambda a: a.copy(),
    "gamma0.6": lambda a: gamma(a, 0.6),
    "gamma1.6": lambda a: gamma(a, 1.6),
    "contrast+30": lambda a: contrast(a, 1.3, 10),
    "contrast-30": lambda a: contrast(a, 0.7, -10),
    "crop3": lambda a: crop(a, 0.03),
    "rescale0.5": lambda a: cv2.resize(a, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
    "square": lambda a: cv2.resize(a, (256, 256), interpolation=cv2.INTER_AREA),
    "jpeg": jpeg,
    "all": lambda a: jpeg(crop(contrast(gamma(a, 1.4), 0.8), 0.03)),
}


@pytest.mark.parametrize("kind", list(PERTURB))
def test_copies_are_within_threshold(kind: str, opgs: list[np.ndarray]) -> None:
    for base in opgs[:4]:
        d = pair_distances([thumbnail(base), thumbnail(PERTURB[kind](base))]).final[0, 1]
        assert d <= THRESHOLD // 2, f"{kind}: distance {d} leaves no margin to the threshold {THRESHOLD}"


@pytest.mark.parametrize("kind", ["gamma0.6", "contrast-30", "crop3", "square"])
def test_copies_of_non_dental_content(kind: str) -> None:
    base = scene(1)
    assert pair_distances([thumbnail(base), thumbnail(PERTURB[kind](base))]).final[0, 1] <= THRESHOLD


def test_crop_needs_registration() -> None:
    """The raw hash alone misses crops on structured images; registration brings them back (why it exists)."""
    base = scene(2)
    dist = pair_distances([thumbnail(base), thumbnail(crop(base, 0.03))])
    assert dist.final[0, 1] < dist.raw[0, 1]
    assert dist.n_registered == 1


def test_distinct_images_are_beyond_threshold(opgs: list[np.ndarray]) -> None:
    for thumbs in ([thumbnail(a) for a in opgs], [thumbnail(scene(s)) for s in range(10, 18)]):
        d = pair_distances(thumbs).final
        assert d[~np.eye(len(d), dtype=bool)].min() > THRESHOLD


def test_hamming_matrix_matches_naive() -> None:
    rng = np.random.default_rng(0)
    bits = rng.random((7, 256)) < 0.5
    naive = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    assert np.array_equal(hamming_matrix(bits), naive)
    assert phash_bits(thumbnail(scene(0))).shape == (256,)


def test_union_find_is_transitive() -> None:
    d = np.array([[0, 5, 50, 90], [5, 0, 6, 90], [50, 6, 0, 90], [90, 90, 90, 0]])
    groups = group_pairs(d, threshold=10)
    assert groups == [[0, 1, 2]]  # 0 and 2 are far apart but joined through 1; 3 is a singleton
    assert nearest_in_group(d, groups[0]) == {0: 5, 1: 5, 2: 6}
    assert group_pairs(np.zeros((0, 0), int), 10) == []


def test_calibration_perturbations_stay_within_threshold(opgs: list[np.ndarray]) -> None:
    from toothseg.curate.calibrate import copy_distance, perturbations

    rng = np.random.default_rng(0)
    for kind, fn in perturbations(rng).items():
        assert copy_distance(opgs[0], fn(opgs[0])) <= THRESHOLD, kind
    assert copy_distance(opgs[0], opgs[1]) > THRESHOLD
