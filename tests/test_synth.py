"""Synthetic OPGs: files and values, truth groups, duplicate kinds, determinism, refusing to overwrite."""

from __future__ import annotations

import csv
from collections import defaultdict

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from toothseg.cli import app
from toothseg.data.io import read_image, read_mask
from toothseg.data.layout import discover
from toothseg.data.synth import KINDS, TRUTH_FILE, synth
from toothseg.errors import InputError

H, W = 96, 192


def _truth(out) -> list[dict]:
    with (out / TRUTH_FILE).open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "synth"
    res = synth(out, labelled=24, unlabelled=12, height=H, width=W, seed=1)
    return out, res


def test_files_shapes_and_values(data):
    out, res = data
    assert len(list((out / "images").glob("*.png"))) == 24 == len(list((out / "masks").glob("*.png")))
    assert len(list((out / "unlabelled").glob("*.png"))) == 12
    for p in sorted((out / "images").glob("*.png"))[:6]:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        m = cv2.imread(str(out / "masks" / p.name), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.shape == (H, W) and img.std() > 10
        assert m.dtype == np.uint8 and m.shape == (H, W) and set(np.unique(m).tolist()) <= {0, 255}
    ds = discover([out])
    assert len(ds.labelled) == 24 and len(ds.unlabelled) == 12 and ds.problems == []


def test_truth_groups_are_consistent(data):
    out, res = data
    rows = _truth(out)
    assert len(rows) == 36 and {r["kind"] for r in rows} <= set(KINDS)
    by_group = defaultdict(list)
    for r in rows:
        by_group[int(r["group"])].append(r)
        folder = "images" if r["labelled"] == "1" else "unlabelled"
        assert (out / folder / f"{r['image_id']}.png").is_file()
    dup = [g for g in by_group.values() if len(g) > 1]
    assert dup, "duplicates=True must inject at least one group"
    assert 0.1 <= sum(len(g) for g in dup) / 36 <= 0.3
    assert res["images_in_duplicate_groups"] == sum(len(g) for g in dup)
    for g in by_group.values():
        kinds = sorted(r["kind"] for r in g)
        if len(g) == 1:
            assert kinds == ["original"]
        elif "relabel-fine" in kinds:
            assert kinds == ["relabel-coarse", "relabel-fine"] and all(r["labelled"] == "1" for r in g)
        else:
            assert kinds.count("original") == 1 and all(k in ("exact", "reexposed", "crop", "original") for k in kinds)


def _path(out, r):
    return out / ("images" if r["labelled"] == "1" else "unlabelled") / f"{r['image_id']}.png"


def test_copies_share_the_xray(tmp_path):
    # a bigger set so every duplicate kind turns up
    out = tmp_path / "d"
    synth(out, labelled=60, unlabelled=40, height=64, width=128, seed=5)
    rows = _truth(out)
    by_group = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    seen = set()
    for g in by_group.values():
        orig = next((r for r in g if r["kind"] in ("original", "relabel-fine")), None)
        for r in g:
            if r is orig:
                continue
            a, b = read_image(_path(out, orig)).astype(int), read_image(_path(out, r)).astype(int)
            seen.add(r["kind"])
            if r["kind"] in ("exact", "relabel-coarse"):
                assert np.array_equal(a, b)
            elif r["kind"] == "reexposed":
                assert not np.array_equal(a, b)
                assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8  # same anatomy under another exposure
            if r["kind"] == "relabel-coarse":
                fine, coarse = read_mask(_path(out, orig).parent.parent / "masks" / f"{orig['image_id']}.png"), \
                    read_mask(out / "masks" / f"{r['image_id']}.png")
                n_fine = cv2.connectedComponents(fine.astype(np.uint8))[0]
                n_coarse = cv2.connectedComponents(coarse.astype(np.uint8))[0]
                assert n_coarse < n_fine and coarse.sum() > fine.sum()
    assert {"exact", "reexposed", "relabel-coarse"} <= seen


def test_no_duplicates_and_determinism(tmp_path):
    synth(tmp_path / "a", labelled=6, unlabelled=4, height=H, width=W, seed=7, duplicates=False)
    synth(tmp_path / "b", labelled=6, unlabelled=4, height=H, width=W, seed=7, duplicates=False)
    synth(tmp_path / "c", labelled=6, unlabelled=4, height=H, width=W, seed=8, duplicates=False)
    rows = _truth(tmp_path / "a")
    assert len({r["group"] for r in rows}) == 10 and {r["kind"] for r in rows} == {"original"}
    def files(d):
        return {p.relative_to(tmp_path / d): p.read_bytes() for p in (tmp_path / d).rglob("*.png")}

    a, b, c = files("a"), files("b"), files("c")
    assert a == b and len(a) == 16  # 10 images + 6 masks, byte for byte
    images = lambda f: {v for k, v in f.items() if k.parts[0] != "masks"}  # noqa: E731  (empty masks may agree)
    assert not images(a) & images(c)  # another seed, other X-rays


def test_fine_labels_separate_touching_teeth():
    from toothseg.data.synth import fine_mask

    lab = np.zeros((10, 10), np.int32)
    lab[2:8, 1:5] = 1
    lab[2:8, 5:9] = 2  # touching tooth 1
    m = fine_mask(lab)
    assert cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] == 3  # background + 2 teeth
    assert not m[:, 4].any() and not m[:, 5].any()


def test_refuses_non_empty_out_and_bad_args(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(InputError, match="not empty"):
        synth(out, labelled=2, unlabelled=0, height=H, width=W)
    synth(out, labelled=2, unlabelled=0, height=H, width=W, overwrite=True)
    synth(out, labelled=1, unlabelled=0, height=H, width=W, overwrite=True)
    assert (out / "keep.txt").read_text() == "user file"
    assert len(list((out / "images").glob("*.png"))) == 1  # stale images of the first run removed
    with pytest.raises(InputError):
        synth(tmp_path / "z", labelled=0, unlabelled=0)
    with pytest.raises(InputError, match="too small"):
        synth(tmp_path / "z", labelled=1, unlabelled=0, height=10, width=10)


def test_cli(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(tmp_path / "c"), "--labelled", "3", "--unlabelled", "2", "--size", "64x128",
                              "--no-duplicates"])
    assert res.exit_code == 0, res.output
    assert "3 labelled + 2 unlabelled" in res.output
    assert read_image(next((tmp_path / "c" / "unlabelled").glob("*.png"))).shape == (64, 128)
    res = runner.invoke(app, ["synth", str(tmp_path / "c")])
    assert isinstance(res.exception, InputError)
