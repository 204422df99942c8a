"""`toothseg suggest`: scoring, duplicate groups, the typical, uncertain and spread strategies, the worklist."""

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
from toothseg.suggest.spread import select_spread
from toothseg.suggest.strategy import STRATEGIES, pick
from toothseg.suggest.typical import cluster_order, select_typical


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


def _blobs(sizes: list[int], seed: int = 0, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Tight blobs around well-separated unit directions in 8-D: (features, blob of each row)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[: len(sizes)]
    f = np.concatenate([c + rng.normal(0, spread, (s, 8)) for c, s in zip(centres, sizes)])
    return f.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def test_typical_picks_one_image_per_uncovered_cluster() -> None:
    f, blob = _blobs([9, 7, 6, 4])
    picks = select_typical(f, np.linspace(0, 1, len(f)), 4, seed=0)
    assert sorted(blob[p.index] for p in picks) == [0, 1, 2, 3]
    assert [p.cluster_size for p in picks] == [9, 7, 6, 4]  # largest uncovered cluster first
    assert all(p.cluster_labelled == 0 and p.typicality_rank <= (p.cluster_candidates + 1) // 2 for p in picks)
    more = select_typical(f, np.zeros(len(f)), 99, seed=0)  # more than the pool: every candidate, once
    assert sorted(p.index for p in more) == list(range(len(f)))


def test_typical_prefers_a_typical_image_over_a_more_uncertain_outlier() -> None:
    f, blob = _blobs([8, 8])
    outliers = [0, 8]
    f[outliers] += np.float32(0.35) * np.eye(8)[2:4]  # off their blobs, still nearer them than anything else
    scores = np.full(len(f), 0.1)
    scores[outliers] = 0.99
    f[[3, 12]] = np.eye(8)[:2]  # at the blob centres: typical
    scores[[3, 12]] = 0.5
    picks = select_typical(f, scores, 2, seed=0)
    assert sorted(p.index for p in picks) == [3, 12]
    assert all(p.uncertainty_rank == 2 for p in picks)  # the outlier ranks first on uncertainty alone


def test_typical_avoids_clusters_that_hold_labelled_images() -> None:
    f, blob = _blobs([10, 5, 4])
    scores = np.where(blob == 0, 0.9, 0.1)  # the covered blob is the most uncertain and the largest
    labelled = f[:2] + np.float32(0.01)
    picks = select_typical(f, scores, 2, labelled=labelled, seed=0)
    assert sorted(blob[p.index] for p in picks) == [1, 2]
    # uncovered clusters largest first, then the lowest labelled share; a cluster without candidates never
    labels = np.array([0] * 4 + [1] * 6 + [2] * 3 + [3] * 2 + [4] * 5)
    is_labelled = np.isin(np.arange(20), [0, 4, 5, 6, 13, 14])
    assert cluster_order(labels, is_labelled) == [4, 2, 0, 1]


def test_typical_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(5)
    f = rng.normal(size=(60, 8)).astype(np.float32)
    scores, labelled = rng.random(60), rng.normal(size=(6, 8))
    runs = [select_typical(f, scores, 10, labelled=labelled, seed=7) for _ in range(2)]
    assert runs[0] == runs[1]


def test_spread_reaches_rare_uncovered_regions_and_leaves_covered_ones() -> None:
    f, blob = _blobs([40, 40, 4])
    labelled = f[blob == 0][:3] + np.float32(0.01)  # blob 0 is covered by labels
    blob_of = [[blob[p.index] for p in select_spread(f, np.full(len(f), 0.5), 10, labelled, seed=s)]
               for s in range(20)]
    assert sum(2 in b for b in blob_of) >= 18  # a random 10 of 84 would miss the 4 rare ones 60 % of the time
    assert all(0 not in b[:2] for b in blob_of)  # uncovered regions first
    covered, uncovered = (sum(b.count(k) for b in blob_of) for k in (0, 1))
    assert covered < 0.75 * uncovered  # same size: the labelled one is drawn less


def test_spread_prefers_uncertain_images_within_a_region() -> None:
    f, blob = _blobs([30, 30])
    u = np.where(np.arange(len(f)) % 2 == 0, 0.9, 0.0)  # even rows uncertain, odd rows sure (floored)
    picks = [p.index for s in range(10) for p in select_spread(f, u, 6, None, seed=s)]
    assert np.mean([i % 2 == 0 for i in picks]) >= 0.8


def test_spread_is_seeded_and_draws_each_candidate_at_most_once() -> None:
    rng = np.random.default_rng(1)
    f, u = rng.normal(size=(30, 8)), rng.random(30)
    a, b = (select_spread(f, u, 12, rng.normal(size=(0, 8)), seed=4) for _ in range(2))
    assert a == b and len({p.index for p in a}) == 12
    assert a[0].distance is None and all(p.distance is not None and 0 < p.probability <= 1 for p in a[1:])
    assert sorted(p.index for p in select_spread(f, u, 99, None, seed=0)) == list(range(30))
    same = select_spread(np.ones((5, 8)), np.zeros(5), 5, np.ones((1, 8)), seed=0)  # no distance left anywhere
    assert sorted(p.index for p in same) == list(range(5))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_respect_duplicate_groups(strategy: str) -> None:
    f, _ = _blobs([3, 3])
    keys = [f"k{i}" for i in range(len(f))]
    scores = dict(zip(keys, np.linspace(0.9, 0.1, len(f))))
    recs = {k: {"features": f[i], "score": scores[k], "disagreement": 0.0, "entropy": 0.0}
            for i, k in enumerate(keys)}
    recs["k1"]["features"] = f[0]  # k0 and k1 are copies
    kept, dropped = one_per_group(keys, scores, {"k0": 1, "k1": 1})
    picks = pick(strategy, kept, recs, 6, None, oversample=4.0, seed=0)
    assert dropped == {"k1": "k0"} and sorted(p.key for p in picks) == sorted(kept)
    assert [p.uncertainty_rank for p in picks] == [kept.index(p.key) + 1 for p in picks]
    assert all("uncertainty #" in p.reason for p in picks)
    assert picks[0].distance is None and all(p.distance is not None for p in picks[1:])


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


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_suggest_writes_a_worklist_with_reasons(pool_run: Path, strategy: str) -> None:
    from toothseg.suggest.suggest import suggest

    s = suggest(pool_run, n=4, threads=1, strategy=strategy)
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
    assert data["use_labelled"] is True  # labelled images served as centres / covered points
    assert data["strategy"] == strategy and isinstance(data["seed"], int)
    if strategy == "spread":
        assert all(it["reason"].startswith("drawn with probability ") for it in data["items"])
    if strategy == "typical":
        assert all(it["reason"].startswith("cluster of ") and "typicality #" in it["reason"] for it in data["items"])


def test_suggest_resumes_from_its_cache(pool_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toothseg.suggest.suggest as mod

    first = mod.suggest(pool_run, n=3, out=pool_run / "wl" / "a.csv", threads=1)
    assert json.loads(Path(first["json"]).read_text())["strategy"] == "spread"  # the default
    calls = []
    from toothseg.predict.predictor import Predictor

    monkeypatch.setattr(Predictor, "member_views",
                        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
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
    with pytest.raises(ConfigError, match="spread, typical, uncertain"):
        suggest(pool_run, n=2, strategy="random")


def test_cli_rejects_a_bad_strategy_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    import sys

    from toothseg.cli import main

    monkeypatch.setattr(sys, "argv", ["toothseg", "suggest", str(tmp_path), "--strategy", "outliers"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert "'outliers'" in err and "choose one of spread, typical, uncertain" in err
