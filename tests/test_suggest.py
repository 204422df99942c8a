"""`toothseg suggest`: scoring, duplicate groups, k-center greedy, and the worklist on a tiny fake run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.fakerun import draw_sample, make_trained_run, write_curation, write_samples
from toothseg.errors import ConfigError
from toothseg.suggest.diversity import k_center_greedy, one_per_group
from toothseg.suggest.scoring import uncertainty


def test_uncertainty_orders_agreeing_and_disagreeing_views() -> None:
    a = np.zeros((2, 20, 20), np.float32)
    a[:, 5:15, 5:15] = 0.95
    calm = uncertainty(a)
    b = a.copy()
    b[1] = 0.0
    b[1, 0:8, 10:20] = 0.6
    torn = uncertainty(b)
    assert calm["disagreement"] == pytest.approx(0.0)
    assert torn["disagreement"] == pytest.approx(1 - 30 / 180)  # masks of 100 and 80 px sharing 15
    assert torn["entropy"] > calm["entropy"] and torn["score"] > calm["score"]
    with pytest.raises(ValueError):
        uncertainty(a[:1])


def test_one_per_group_keeps_the_most_uncertain_copy() -> None:
    keys = ["a", "b", "c", "d"]
    kept, dropped = one_per_group(keys, {"a": 0.2, "b": 0.9, "c": 0.5, "d": 0.1}, {"a": 1, "b": 1, "c": None, "d": 1})
    assert kept == ["b", "c"] and dropped == {"a": "b", "d": "b"}


def test_k_center_greedy_spreads_over_clusters_and_avoids_labelled() -> None:
    rng = np.random.default_rng(0)
    clusters = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    f = np.concatenate([c + rng.normal(0, 0.1, (5, 2)) for c in clusters]).astype(np.float32)
    idx, dists = k_center_greedy(f, 3, first=0)
    assert idx[0] == 0 and sorted(i // 5 for i in idx) == [0, 1, 2] and dists[0] == float("inf")
    idx2, dists2 = k_center_greedy(f, 2, centres=clusters[:2])
    assert all(i // 5 == 2 for i in idx2[:1]) and np.isfinite(dists2).all()
    assert k_center_greedy(f, 0) == ([], [])
    assert len(k_center_greedy(f, 99)[0]) == len(f)


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake run with a bundle, 8 unlabelled images (u3/u4 a duplicate group) and one unreadable file."""
    from toothseg.predict.bundle_build import build_bundle

    root = tmp_path_factory.mktemp("suggest")
    run = make_trained_run(root, tags={"unet-tiny-64x128": (64, 128)})
    build_bundle(run)
    rng = np.random.default_rng(3)
    udir = root / "data" / "synth" / "unlabelled"
    udir.mkdir(parents=True)
    rows = []
    for i in range(8):
        img, _ = draw_sample(rng, (90 + 4 * i, 180))
        cv2.imwrite(str(udir / f"u{i}.png"), img)
        rows.append([f"synth/u{i}", "synth", f"u{i}", str(udir / f"u{i}.png"), ""])
    (udir / "broken.png").write_bytes(b"not an image")
    rows.append(["synth/broken", "synth", "broken", str(udir / "broken.png"), ""])
    with (run / "samples.csv").open(newline="") as f:
        kept = [r for r in list(csv.reader(f))[1:] if r[0] != "synth/u0"]
    write_samples(run, kept + rows)
    items = {f"synth/u{i}": {"group": 7 if i in (3, 4) else None, "use": "train", "reason": ""} for i in range(8)}
    write_curation(run, items, threshold=6)
    return run


def test_suggest_writes_a_worklist_with_reasons(pool_run: Path) -> None:
    from toothseg.suggest.suggest import suggest

    s = suggest(pool_run, n=4, threads=1)
    assert s["picked"] == 4 and s["scored"] == 8 and s["copies"] == 1
    assert list(s["failed"]) == ["synth/broken"]
    rows = list(csv.DictReader(open(s["csv"])))
    data = json.loads(Path(s["json"]).read_text())
    assert [r["key"] for r in rows] == [it["key"] for it in data["items"]]
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == 4 and not {"synth/u3", "synth/u4"} <= set(keys)  # one copy at most
    assert data["duplicates_counted_once"] and set(data["duplicates_counted_once"]) <= {"synth/u3", "synth/u4"}
    for it in data["items"]:
        assert "uncertainty #" in it["reason"] and 0.0 <= it["score"] <= 1.0
        img = cv2.imread(it["image_path"], cv2.IMREAD_GRAYSCALE)
        pred = cv2.imread(it["prediction"], cv2.IMREAD_UNCHANGED)
        assert pred.shape == img.shape and set(np.unique(pred)) <= {0, 255}
    assert data["use_labelled"] is True  # labelled images served as k-center centres


def test_suggest_resumes_from_its_cache(pool_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toothseg.suggest.suggest as mod

    first = mod.suggest(pool_run, n=3, out=pool_run / "wl" / "a.csv", threads=1)
    calls = []
    monkeypatch.setattr(mod, "member_views", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    again = mod.suggest(pool_run, n=3, out=pool_run / "wl" / "a.csv", threads=1)
    assert not calls
    assert [i["key"] for i in json.loads(Path(first["json"]).read_text())["items"]] == \
        [i["key"] for i in json.loads(Path(again["json"]).read_text())["items"]]


def test_suggest_bad_options(pool_run: Path) -> None:
    from toothseg.suggest.suggest import suggest

    with pytest.raises(ConfigError, match="at least one"):
        suggest(pool_run, n=0)
    with pytest.raises(ConfigError, match=".csv"):
        suggest(pool_run, n=2, out=pool_run / "list.txt")
