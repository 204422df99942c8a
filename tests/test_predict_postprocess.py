"""Post-processing and OOF threshold/post-processing tuning on hand-made masks with known answers."""

from __future__ import annotations

import numpy as np

from toothseg.predict.postprocess import count_components, fill_holes, postprocess, remove_small_components
from toothseg.predict.threshold import binarise, dice, dice_curve, pick_threshold, tune, tune_postprocess


def _blob_mask() -> np.ndarray:
    m = np.zeros((40, 60), bool)
    m[5:25, 5:25] = True  # a tooth with a hole
    m[12:16, 12:16] = False
    m[30:32, 40:42] = True  # a 4-pixel speck
    return m


def test_remove_and_fill() -> None:
    m = _blob_mask()
    assert count_components(m) == 2
    assert count_components(remove_small_components(m, 5)) == 1
    assert fill_holes(m)[14, 14] and not m[14, 14]
    out = postprocess(m, min_component=5, fill=True)
    assert out.sum() == 400 and count_components(out) == 1
    assert postprocess(np.zeros((4, 4), bool), 10, True).sum() == 0


def test_dice_conventions() -> None:
    z = np.zeros((3, 3), bool)
    assert dice(z, z) == 1.0
    assert dice(z, ~z) == 0.0


def test_dice_curve_matches_direct_thresholding() -> None:
    rng = np.random.default_rng(0)
    prob = rng.integers(0, 256, (30, 40)).astype(np.uint8)
    gt = rng.random((30, 40)) > 0.5
    grid = (0.1, 0.33, 0.5, 0.77)
    curve = dice_curve(prob, gt, grid)
    np.testing.assert_allclose(curve, [dice(binarise(prob, t), gt) for t in grid])
    f = prob.astype(np.float32) / 255  # float maps binarise the same way as their uint8 form
    assert all(np.array_equal(binarise(f, t), binarise(prob, t)) for t in (0.3, 0.5))


def test_pick_threshold_prefers_default_on_ties() -> None:
    grid = (0.3, 0.4, 0.5, 0.6)
    assert pick_threshold(grid, np.array([0.9, 0.9, 0.9, 0.9])) == 0.5
    assert pick_threshold(grid, np.array([0.95, 0.9, 0.9, 0.9])) == 0.3
    assert pick_threshold(grid, np.array([0.95, 0.95, 0.9, 0.9])) == 0.4


def test_tune_postprocess_only_when_it_helps() -> None:
    gt = _blob_mask()
    gt[30:32, 40:42] = False
    gt[12:16, 12:16] = True  # truth: one solid tooth
    noisy = _blob_mask()  # prediction: hole + speck
    choice, base, best = tune_postprocess([noisy], [gt])
    assert choice.fill_holes and 4 < choice.min_component and best == 1.0 > base
    clean = gt.copy()
    choice, base, best = tune_postprocess([clean], [gt])
    assert (choice.min_component, choice.fill_holes) == (0, False) and best == base == 1.0


def test_tune_reports_gains() -> None:
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    prob = np.where(gt, 0.4, 0.05).astype(np.float32)
    r = tune([prob, prob], [gt, gt])
    assert r["threshold"] < 0.4 and r["oof"]["dice_at_0.5"] == 0.0 and r["oof"]["dice_tuned_threshold"] == 1.0
