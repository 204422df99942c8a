"""Predictor: fusion over members, TTA, fold selection, threshold/post-processing, in-memory models.

One compute thread: on a shared CPU, several multi-threaded test processes thrash each other by an order of magnitude.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.fakerun import TAGS, draw_sample
from toothseg.config import build_config
from toothseg.errors import ConfigError
from toothseg.models.factory import create_model
from toothseg.predict.bundle_build import build_bundle
from toothseg.predict.fusion import fuse, simplex_grid
from toothseg.predict.predictor import Predictor
from toothseg.predict.tta import parse_tta, scaled_size


@pytest.fixture(scope="module")
def bundle_dir(fake_run: Path) -> Path:
    return build_bundle(fake_run)


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path) -> Predictor:
    return Predictor.from_bundle(bundle_dir, tta=False, threads=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return draw_sample(np.random.default_rng(5), (77, 151))[0]  # odd size: mapping back must be exact in shape


def test_fused_probability_is_weighted_mean_of_members(predictor: Predictor, image: np.ndarray) -> None:
    p = predictor.configure(tta=False)
    members = p.predict_members(image)
    assert len(members) == len(TAGS) * 2 == len(p.member_names)
    fused = p.predict_proba(image)
    assert fused.shape == image.shape and fused.dtype == np.float32
    assert 0.0 <= fused.min() and fused.max() <= 1.0
    expected = fuse(members, [n.weight for n in p.nets])
    np.testing.assert_allclose(fused, expected, atol=1e-6)


def test_hflip_tta_makes_prediction_mirror_symmetric(predictor: Predictor, image: np.ndarray) -> None:
    p = predictor.configure(tta=True)
    assert p.tta.hflip
    a = p.predict_proba(image)
    b = p.predict_proba(np.ascontiguousarray(image[:, ::-1]))
    np.testing.assert_allclose(a, b[:, ::-1], atol=1e-5)
    assert not np.allclose(p.configure(tta=False).predict_proba(image), a, atol=1e-4)  # TTA really changed something


def test_scale_tta_and_fold_selection(bundle_dir: Path, image: np.ndarray) -> None:
    p = Predictor.from_bundle(bundle_dir, folds=[1], tta=["hflip", "scale:1.5"], threads=1)
    assert len(p.nets) == len(TAGS) and all(n.name.endswith("fold1") for n in p.nets)
    assert ((96, 192), "resize") in p.geometries and (scaled_size((96, 192), 1.5), "resize") in p.geometries
    assert p.predict_proba(image).shape == image.shape
    assert abs(sum(n.weight for n in p.nets) - 1.0) < 1e-6


def test_bundle_threshold_and_postprocess_are_used(predictor: Predictor, image: np.ndarray) -> None:
    p = predictor.configure(tta=False)
    assert p.threshold < 0.5 and p.postprocess["min_component"] > 0  # the planted OOF answers
    q = predictor.configure(tta=False, threshold=0.7, postprocess={"min_component": 0})
    assert q.threshold == 0.7 and q.postprocess["min_component"] == 0
    prob = q.predict_proba(image)
    np.testing.assert_array_equal(q.to_mask(prob), prob > 0.7)


def test_in_memory_models_and_letterbox(image: np.ndarray) -> None:
    cfg = build_config("tiny").model
    nets = [(create_model(cfg, load_weights=False), (64, 128), "letterbox", 1.0),
            (create_model(cfg, load_weights=False), (64, 64), "resize", 3.0)]
    p = Predictor.from_models(nets, tta=False, threads=1)
    members = p.predict_members(image)
    assert [m.shape for m in members] == [image.shape] * 2
    np.testing.assert_allclose(p.predict_proba(image), 0.25 * members[0] + 0.75 * members[1], atol=1e-6)
    assert p.predict_mask(image).dtype == bool


def test_bad_settings(bundle_dir: Path) -> None:  # all rejected before any network is built
    with pytest.raises(ConfigError, match="unknown TTA"):
        Predictor.from_bundle(bundle_dir, tta=["vflip"])
    with pytest.raises(ConfigError, match="engine"):
        Predictor.from_bundle(bundle_dir, engine="tensorrt")
    with pytest.raises(ConfigError, match="threshold"):
        Predictor.from_bundle(bundle_dir, threshold=1.5)
    with pytest.raises(ConfigError, match="scale"):
        parse_tta(["scale:abc"])


def test_small_helpers() -> None:
    assert scaled_size((320, 640), 1.25) == (416, 800)
    assert all(abs(sum(w) - 1) < 1e-9 for w in simplex_grid(3, 0.5)) and len(simplex_grid(3, 0.5)) == 6
    a, b = np.zeros((2, 2), np.float32), np.full((2, 2), 255, np.uint8)
    np.testing.assert_allclose(fuse([a, b], [1, 3]), 0.75)
