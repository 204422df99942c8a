"""Metrics cross-checked against MONAI (an independent implementation) on random and adversarial masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from toothseg.evaluate.metrics import diagonal, mask_metrics, score_pair, sts_score

monai_metrics = pytest.importorskip("monai.metrics")
ABS_TOL = 1e-4  # MONAI computes in float32


def monai_reference(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0) -> dict[str, float]:
    p = torch.from_numpy(pred.astype(np.float32))[None, None]
    g = torch.from_numpy(gt.astype(np.float32))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": monai_metrics.compute_dice(p, g).item(),
            "iou": monai_metrics.compute_iou(p, g).item(),
            "hd": monai_metrics.compute_hausdorff_distance(p, g, include_background=True).item(),
            "hd95": monai_metrics.compute_hausdorff_distance(p, g, include_background=True, percentile=95).item(),
            "nsd": monai_metrics.compute_surface_dice(p, g, [tolerance], include_background=True).item(),
        }


def assert_matches_monai(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0) -> None:
    ours, ref = mask_metrics(pred, gt, tolerance), monai_reference(pred, gt, tolerance)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=ABS_TOL), (k, ours[k], ref[k])


def blobs(rng: np.random.Generator, shape: tuple[int, int], sigma: float, level: float = 0.5) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


@pytest.mark.parametrize("seed", range(12))
def test_random_blobs_match_monai(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 70)), int(rng.integers(20, 90)))
    gt = blobs(rng, shape, float(rng.uniform(1.5, 4)))
    # a perturbed copy (realistic) for even seeds, an unrelated mask for odd seeds
    pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(1, 3))) ^ blobs(rng, shape, 1.0, 0.56) \
        if seed % 2 == 0 else blobs(rng, shape, float(rng.uniform(1.5, 4)))
    if not pred.any() or not gt.any():
        pytest.skip("degenerate draw")
    assert_matches_monai(pred, gt)
    assert_matches_monai(pred, gt, tolerance=0.0)
    assert_matches_monai(pred, gt, tolerance=5.5)


def _canvas(h: int = 24, w: int = 40) -> np.ndarray:
    return np.zeros((h, w), bool)


def _adversarial() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cases = {}
    a, b = _canvas(), _canvas()
    a[3, 4] = True
    b[20, 35] = True
    cases["single pixels far apart"] = (a, b)
    a, b = _canvas(), _canvas()
    a[5, 5] = b[5, 5] = True
    cases["identical single pixel"] = (a, b)
    a, b = _canvas(), _canvas()
    a[10, 2:38] = True
    b[11, 2:38] = True
    cases["thin lines one apart"] = (a, b)
    a, b = _canvas(), _canvas()
    a[:, 5] = True
    b[3:20, 30:33] = True
    cases["line vs block"] = (a, b)
    a, b = _canvas(), _canvas()
    a[:12, :] = True  # touches three image borders
    b[:10, :30] = True
    cases["touching the border"] = (a, b)
    a, b = _canvas(), _canvas()
    a[:] = True
    b[2:22, 2:38] = True
    cases["full image"] = (a, b)
    a, b = _canvas(), _canvas()
    a[0:4, 0:4] = True
    b[20:24, 36:40] = True
    cases["disjoint corners"] = (a, b)
    a, b = _canvas(), _canvas()
    a[2:22, 2:38] = True
    b[2:22, 2:38] = True
    b[8:16, 12:28] = False  # a hole the prediction fills
    cases["hole"] = (a, b)
    a = _canvas()
    a[4:20, 4:36] = True
    a[4:20, 20] = False  # two teeth separated by one background column
    b = _canvas()
    b[4:20, 4:36] = True
    cases["one-pixel gap"] = (a, b)
    a, b = _canvas(), _canvas()
    a[::2, ::2] = True
    b[1::2, 1::2] = True
    cases["checkerboards"] = (a, b)
    return cases


@pytest.mark.parametrize("name", list(_adversarial()))
def test_adversarial_masks_match_monai(name: str) -> None:
    pred, gt = _adversarial()[name]
    assert_matches_monai(pred, gt)
    assert_matches_monai(gt, pred)


def test_identical_masks_are_perfect() -> None:
    gt = blobs(np.random.default_rng(3), (40, 60), 3)
    m = mask_metrics(gt, gt.copy())
    assert m == {"dice": 1.0, "iou": 1.0, "hd": 0.0, "hd95": 0.0, "nsd": 1.0}


def test_known_values_for_shifted_square() -> None:
    gt, pred = _canvas(), _canvas()
    gt[5:15, 5:15] = True
    pred[5:15, 8:18] = True  # shifted 3 px right
    m = mask_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * 70 / 200)
    assert m["iou"] == pytest.approx(70 / 130)
    assert m["hd"] == pytest.approx(3.0)


def test_both_empty_is_perfect() -> None:
    m = score_pair(_canvas(), _canvas())
    assert m == {"dice": 1.0, "iou": 1.0, "hd": 0.0, "hd95": 0.0, "nsd": 1.0, "sts": 1.0}


@pytest.mark.parametrize("empty", ["pred", "gt"])
def test_one_empty_scores_zero_and_diagonal(empty: str) -> None:
    full = _canvas()
    full[3:9, 3:9] = True
    pred, gt = (_canvas(), full) if empty == "pred" else (full, _canvas())
    m = score_pair(pred, gt)
    diag = math.hypot(24, 40)
    assert (m["dice"], m["iou"], m["nsd"], m["sts"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["hd"] == m["hd95"] == pytest.approx(diag)


def test_sts_score_normalisation() -> None:
    assert sts_score(1.0, 1.0, 0.0, 100.0) == pytest.approx(1.0)
    assert sts_score(0.9, 0.8, 10.0, 100.0) == pytest.approx(0.4 * 0.9 + 0.3 * 0.8 + 0.3 * 0.9)
    assert sts_score(0.5, 0.5, 1e9, 100.0) == pytest.approx(0.35)  # nHD clipped at 1
    assert diagonal((3, 4)) == 5.0
    with pytest.raises(ValueError):
        sts_score(1.0, 1.0, 0.0, 0.0)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mask_metrics(np.zeros((4, 5), bool), np.zeros((5, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        mask_metrics(np.zeros((2, 4, 5), bool), np.zeros((2, 4, 5), bool))


def test_accepts_0_255_uint8() -> None:
    gt = _canvas()
    gt[2:10, 2:10] = True
    assert mask_metrics(gt.astype(np.uint8) * 255, gt)["dice"] == 1.0


def test_real_mask_matches_monai(real_data) -> None:
    from toothseg.data.io import read_mask

    path = sorted((real_data / "tufts" / "masks").glob("*.png"))[0]
    gt = read_mask(path)
    pred = ndimage.binary_erosion(ndimage.binary_dilation(gt, iterations=3), iterations=1)
    assert_matches_monai(pred, gt)
