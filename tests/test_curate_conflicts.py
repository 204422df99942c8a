"""The 'finer label' criterion and the four conflict policies."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from toothseg.curate.conflicts import Member, copy_dice, dice, fineness, n_components, resolve
from toothseg.curate.hashing import thumbnail

H, W = 128, 256


def teeth(gap: int = 3, dilate: int = 0) -> np.ndarray:
    """A row of 10 'teeth' (rounded rectangles) separated by `gap` px; dilate>0 draws a looser outline."""
    m = np.zeros((H, W), np.uint8)
    x = 20
    for _ in range(10):
        cv2.rectangle(m, (x, 40), (x + 20 - gap, 100), 1, -1)
        x += 21
    if dilate:
        m = cv2.dilate(m, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
    return m.astype(bool)


def image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(0, 1, (H, W)), (0, 0), 4) * 50 + 100
    img[teeth()] += 80
    return np.clip(img, 0, 255).astype(np.uint8)


def test_separated_teeth_are_finer_than_merged() -> None:
    separated, merged = teeth(gap=3), teeth(gap=0)
    assert n_components(separated) == 10 and n_components(merged) == 1
    assert fineness(separated) > fineness(merged)


def test_tight_outline_is_finer_than_loose() -> None:
    tight, loose = teeth(gap=6), teeth(gap=6, dilate=2)
    assert n_components(loose) == 10  # same teeth, same separation: only the outline differs
    assert fineness(tight) > fineness(loose)


def test_empty_label_is_coarsest_and_dice_conventions() -> None:
    empty = np.zeros((H, W), bool)
    assert fineness(empty) == 0.0
    assert dice(empty, empty) == 1.0 and dice(empty, teeth()) == 0.0


def test_fineness_does_not_depend_on_image_size() -> None:
    m = teeth()
    big = cv2.resize(m.astype(np.uint8), (W * 2, H * 2), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert fineness(big) == pytest.approx(fineness(m), rel=0.05)


def test_copy_dice_registers_cropped_copies() -> None:
    img, m = image(), teeth()
    c_img, c_m = img[4:, 8:], m[4:, 8:]  # a crop shifts everything by a few percent
    assert copy_dice(m, thumbnail(img), c_m, thumbnail(c_img)) > 0.9


def _members(order_fine_first: bool = False) -> list[Member]:
    img = thumbnail(image())
    coarse = Member("a/coarse", True, 0, img, teeth(gap=0, dilate=2))
    fine = Member("b/fine", True, 1, img, teeth(gap=3))
    unl = Member("c/unl", False, 2, img, None)
    if order_fine_first:
        coarse.order, fine.order = 1, 0
    return [coarse, fine, unl]


@pytest.mark.parametrize("fine_first", [False, True])
def test_keep_finer_keeps_the_finer_label_whatever_the_order(fine_first: bool) -> None:
    d = resolve(_members(fine_first), "keep-finer")
    assert d.conflict
    assert d.items["b/fine"]["use"] == "train"
    assert d.items["a/coarse"]["use"] == "drop"
    assert d.items["c/unl"]["use"] == "label-from:b/fine"


def test_keep_first_uses_input_order() -> None:
    d = resolve(_members(), "keep-first")
    assert d.items["a/coarse"]["use"] == "train" and d.items["b/fine"]["use"] == "drop"
    assert d.items["c/unl"]["use"] == "label-from:a/coarse"


def test_keep_all_same_fold_keeps_every_label() -> None:
    d = resolve(_members(), "keep-all-same-fold")
    assert d.items["a/coarse"]["use"] == d.items["b/fine"]["use"] == "train"
    assert d.items["c/unl"]["use"] == "label-from:b/fine"


def test_drop_all_drops_conflicting_group_but_keeps_one_of_agreeing_copies() -> None:
    d = resolve(_members(), "drop-all")
    assert {v["use"] for v in d.items.values()} == {"drop"}
    img = thumbnail(image())
    same = [Member("a/x", True, 0, img, teeth()), Member("b/y", True, 1, img, teeth())]
    d2 = resolve(same, "drop-all")
    assert not d2.conflict
    assert sorted(v["use"] for v in d2.items.values()) == ["drop", "train"]


def test_unlabelled_only_group_keeps_one() -> None:
    img = thumbnail(image())
    d = resolve([Member("u/2", False, 5, img), Member("u/1", False, 3, img)], "keep-finer")
    assert d.items["u/1"]["use"] == "train" and d.items["u/2"]["use"] == "drop"


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        resolve(_members(), "keep-best")
