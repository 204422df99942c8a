"""Training data: TrainItem -> tensors through the shared preprocessing, augmentation, bad labels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers.fakerun import draw_pair
from toothseg.data.preprocess import to_network
from toothseg.errors import ConfigError, InputError
from toothseg.train.augment import build_augment
from toothseg.train.dataset import SegDataset, TrainItem


@pytest.fixture()
def pair(tmp_path):
    img, mask = draw_pair(np.random.default_rng(1), 70, 150)
    cv2.imwrite(str(tmp_path / "i.png"), img)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    return tmp_path, img, mask


def test_without_augmentation_pixels_equal_to_network(pair):
    d, img, _ = pair
    ds = SegDataset([TrainItem("toy/i", d / "i.png", d / "m.png")], (64, 128), "letterbox")
    s = ds[0]
    x, _ = to_network(img, (64, 128), "letterbox")
    assert s["image"].shape == (1, 64, 128) and s["target"].shape == (1, 64, 128)
    np.testing.assert_array_equal(s["image"][0].numpy(), x)
    assert set(np.unique(s["target"].numpy())) <= {0.0, 1.0} and bool(s["hard"])


@pytest.mark.parametrize("level", ["light", "strong"])
def test_augmented_masks_stay_binary(pair, level):
    d, _, _ = pair
    ds = SegDataset([TrainItem("toy/i", d / "i.png", d / "m.png")], (64, 128), "resize", build_augment(level))
    for _ in range(5):
        s = ds[0]
        assert set(np.unique(s["target"].numpy())) <= {0.0, 1.0}
        assert s["image"].dtype.is_floating_point


def test_soft_target_is_probability_and_not_hard(pair):
    d, _, mask = pair
    cv2.imwrite(str(d / "soft.png"), (mask // 2).astype(np.uint8))
    s = SegDataset([TrainItem("toy/i", d / "i.png", soft_path=d / "soft.png", pseudo=True, weight=0.5)],
                   (64, 128))[0]
    assert not bool(s["hard"]) and bool(s["pseudo"]) and float(s["weight"]) == 0.5
    assert 0.4 < float(s["target"].max()) < 0.6


def test_label_of_other_size_is_rejected(pair):
    d, _, mask = pair
    cv2.imwrite(str(d / "small.png"), mask[:40])
    with pytest.raises(InputError, match="small.png"):
        SegDataset([TrainItem("toy/i", d / "i.png", d / "small.png")], (64, 128))[0]


def test_item_without_label_is_rejected(pair):
    d, _, _ = pair
    with pytest.raises(InputError, match="neither a mask nor a soft label"):
        SegDataset([TrainItem("toy/i", d / "i.png")], (64, 128))[0]


def test_empty_dataset_and_unknown_augment_level_rejected():
    with pytest.raises(InputError):
        SegDataset([], (64, 128))
    with pytest.raises(ConfigError, match="train.augment"):
        build_augment("extreme")
