"""Bad input is one clear line, checked before expensive work: oversized images, multi-page TIFFs, malformed
--set / --config, budgets, tampered bundles (bundle.json, .pt files, encrypted zips), unwritable folders."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from helpers.fakerun import draw_sample
from toothseg.config import build_config
from toothseg.data.check import check
from toothseg.data.io import read_image, read_mask
from toothseg.durations import parse_hhmmss
from toothseg.errors import ConfigError, InputError
from toothseg.predict.bundle_build import build_bundle
from toothseg.predict.bundle_format import load_bundle
from toothseg.predict.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]


def _huge_png(path: Path, w: int = 20000, h: int = 10000) -> None:
    """A real, valid 200 Mpx PNG (all black, ~200 kB on disk): the size is in its header."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    c = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    body = b"".join(c.compress(row) for _ in range(h)) + c.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


# -- images ----------------------------------------------------------------------------------------------------
def test_oversized_image_is_one_line_and_check_reports_the_rest(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        img, mask = draw_sample(rng, (64, 128))
        (ds / "images").mkdir(parents=True, exist_ok=True)
        (ds / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ds / "images" / f"{name}.png"), img)
        cv2.imwrite(str(ds / "masks" / f"{name}.png"), mask.astype(np.uint8) * 255)
    _huge_png(ds / "images" / "huge.png")
    shutil.copy(ds / "masks" / "a.png", ds / "masks" / "huge.png")
    with pytest.raises(InputError, match=r"huge.png: image is over the 89 Mpx limit.*downscale") as ei:
        read_image(ds / "images" / "huge.png")
    assert "\n" not in str(ei.value)
    report = check([ds])
    errors = [p for p in report.errors]
    assert len(errors) == 1 and errors[0].path.endswith("huge.png") and "Mpx limit" in errors[0].problem
    assert report.counts["ds"]["images"] == 3  # the other files were checked, the report is whole
    from toothseg.curate.prepare import prepare

    summary = prepare([ds], tmp_path / "run", preset="tiny", n_folds=2)
    assert summary["unreadable"] == 1
    curation = json.loads((tmp_path / "run" / "curation.json").read_text())["items"]
    assert "Mpx limit" in curation["ds/huge"]["reason"] and curation["ds/a"]["use"] == "train"


def test_size_limit_is_checked_from_the_header_for_tiff_too(tmp_path: Path, monkeypatch) -> None:
    import toothseg.data.io as io

    monkeypatch.setattr(io, "MAX_PIXELS", 1000)
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((64, 64), np.uint16))
    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((64, 64), np.uint8))
    for name in ("t.tif", "p.png"):
        with pytest.raises(InputError, match="64x64 = 0 Mpx, over the 0 Mpx limit"):
            read_image(tmp_path / name)


@pytest.mark.parametrize("pages", [3, 4])
def test_multipage_tiff_reads_the_first_page_with_a_warning(tmp_path: Path, caplog, pages: int) -> None:
    levels = [10, 100, 200, 50][:pages]
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.stack([np.full((64, 96), v, np.uint8) for v in levels]), photometric="minisblack")
    log = logging.getLogger("toothseg")  # setup_logging() stops propagation, so listen on it directly
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="toothseg"):
            img = read_image(p)
    finally:
        log.removeHandler(caplog.handler)
    assert img.shape == (64, 96) and np.all(img == 10)  # page 1 exactly, never a blend of pages
    assert f"TIFF has {pages} pages; using the first" in caplog.text
    m = np.zeros((3, 64, 96), np.uint8)
    m[0, 10:20, 10:20] = 255
    m[1:] = 255
    tifffile.imwrite(tmp_path / "mask.tif", m, photometric="minisblack")
    assert read_mask(tmp_path / "mask.tif").sum() == 100


def test_planar_rgb_tiff_is_still_one_colour_image(tmp_path: Path) -> None:
    rgb = np.stack([np.full((64, 96), v, np.uint8) for v in (10, 100, 200)])
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "rgb.tif").shape == (64, 96)


# -- config and budgets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("item, message", [
    ("train.epochs", "must look like section.key=value"),
    ("foo.bar=1", "override 'foo.bar=1': invalid config value 'foo'"),
    ("train.lr=abc", "override 'train.lr=abc': invalid config value 'train.lr'"),
    ("train.lr=[", "override 'train.lr=\\[': the value is not valid YAML"),
    ("train..lr=1", "has an empty part"),
    ("train.epochs.x=1", "'epochs' is not a section"),
    ("train.max_time=1:99:00", "override 'train.max_time=1:99:00'.*HH:MM:SS"),
])
def test_malformed_set_is_blamed_on_the_override(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as ei:
        build_config("tiny", overrides=[item])
    assert "preset" not in str(ei.value) and "\n" not in str(ei.value)


def test_bad_config_files(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "bad.yaml").write_text("train: [\n")
    cases = {tmp_path: "is a folder", tmp_path / "bin.yaml": "not a text file",
             tmp_path / "list.yaml": "must be a mapping", tmp_path / "bad.yaml": "not valid YAML",
             tmp_path / "none.yaml": "not found"}
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            build_config("tiny", yaml_path=path)


@pytest.mark.parametrize("text", ["30min", "1:2", "00:60:00", "00:00:00", "-1:00:00", "a:b:c"])
def test_budgets_are_parsed_in_one_place(text: str) -> None:
    with pytest.raises(ConfigError, match="HH:MM:SS|longer than zero"):
        parse_hhmmss(text)
    assert parse_hhmmss("01:02:03") == 3723


def test_run_refuses_bad_budget_and_config_before_prepare(tmp_path: Path) -> None:
    from toothseg.pipeline import run

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="--max-time '30min'"):
        run([tmp_path / "no-data"], out, preset="tiny", max_time="30min")
    with pytest.raises(ConfigError, match="override 'train.lr=abc'"):
        run([tmp_path / "no-data"], out, preset="tiny", overrides=["train.lr=abc"])
    assert not out.exists()  # nothing was prepared or even created


def test_unwritable_out_for_prepare_and_run(tmp_path: Path) -> None:
    from toothseg.curate.prepare import prepare

    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not writable|is a file"):
        prepare([tmp_path], blocker / "run", preset="tiny")


# -- bundles ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(fake_run: Path) -> Path:
    return build_bundle(fake_run)


def _tampered(bundle: Path, tmp_path: Path, edit) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    meta = json.loads((dst / "bundle.json").read_text())
    edit(meta)
    (dst / "bundle.json").write_text(json.dumps(meta))
    return dst


def _m0(meta: dict) -> dict:
    return meta["members"][0]


@pytest.mark.parametrize("edit, message", [
    (lambda m: _m0(m).update(checkpoint="../../escape.pt"), "points outside the bundle"),
    (lambda m: _m0(m).update(checkpoint="/etc/passwd"), "points outside the bundle"),
    (lambda m: m.update(threshold="high"), "threshold 'high' must be a number"),
    (lambda m: m.update(threshold=7), "threshold 7 must be a number"),
    (lambda m: m.update(tta="hflip"), "tta 'hflip' must be a list"),
    (lambda m: m.update(postprocess={"min_component": -3}), "postprocess"),
    (lambda m: _m0(m).update(scale=[50, "x"]), "malformed|scale"),
    (lambda m: _m0(m).update(scale=[50, 100]), "not two multiples of 32"),
    (lambda m: _m0(m).update(weight=float("nan")), "weight nan"),
    (lambda m: _m0(m).update(resize="stretch"), "unknown resize mode"),
    (lambda m: _m0(m)["model"].update(name="evil"), "cannot build model evil"),
    (lambda m: _m0(m)["model"].update(unknown_key=1), "bundle member model is invalid"),
    (lambda m: _m0(m)["model"].update(decoder_channels=[64, 32, 16, 8, 8]), "weights do not fit"),
    (lambda m: _m0(m).pop("checkpoint"), "bundle member is malformed"),
    (lambda m: m.update(members="all"), "'members' must be a list"),
    (lambda m: m.update(format_version=99), "newer than this toothseg reads"),
    (lambda m: [x.update(weight=0) for x in m["members"]], "weights sum to 0"),
])
def test_tampered_bundle_json_is_one_line(bundle: Path, tmp_path: Path, edit, message: str) -> None:
    b = _tampered(bundle, tmp_path, edit)
    with pytest.raises(InputError, match=message) as ei:
        Predictor.from_bundle(b, threads=1)
    assert "\n" not in str(ei.value) and "bundle" in str(ei.value)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "pickle", "not-a-state-dict"])
def test_damaged_member_weights_are_one_line(bundle: Path, tmp_path: Path, damage: str) -> None:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    pt = dst / json.loads((dst / "bundle.json").read_text())["members"][0]["checkpoint"]
    data = pt.read_bytes()
    if damage == "pickle":
        marker = tmp_path / "PWNED"

        class Planted:
            def __reduce__(self):
                import os

                return (os.system, (f"touch {marker}",))

        torch.save({"w": Planted()}, pt)
    elif damage == "not-a-state-dict":
        torch.save([1, 2, 3], pt)
    else:
        pt.write_bytes({"empty": b"", "truncated": data[: len(data) // 3], "garbage": b"x" * 100}[damage])
    expected = r"\.pt: (empty file|truncated|refused|not a state dict|not a plain PyTorch weights file)"
    with pytest.raises(InputError, match=expected) as ei:
        Predictor.from_bundle(dst, threads=1)
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "PWNED").exists()


def test_encrypted_and_broken_zips(bundle: Path, tmp_path: Path) -> None:
    if shutil.which("zip") is None:
        pytest.skip("the zip tool is needed to write an encrypted zip")
    enc = tmp_path / "enc.zip"
    subprocess.run(["zip", "-q", "-r", "-P", "secret", str(enc), "."], cwd=bundle, check=True)
    with pytest.raises(InputError, match="zip is encrypted"):
        load_bundle(enc)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(enc.read_bytes()[:200])
    with pytest.raises(InputError, match="not a readable zip"):
        load_bundle(broken)


# -- the CLI ---------------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", "from toothseg.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_cli_prints_one_line_for_bad_input(bundle: Path, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    pt = b / json.loads((b / "bundle.json").read_text())["members"][0]["checkpoint"]
    pt.write_bytes(b"")  # an empty file made torch.load raise EOFError: click turned it into a bare "Aborted."
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), draw_sample(np.random.default_rng(0), (64, 128))[0])
    p = _cli("predict", str(b), str(img), "--out", str(tmp_path / "out"), "--threads", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Aborted" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "empty file" in lines[0]
    p = _cli("run", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "tiny", "--config", str(tmp_path))
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: {tmp_path}: is a folder, not a config file; pass a YAML file (e.g. RUN/config.yaml)"]
