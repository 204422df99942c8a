"""`toothseg check`: bad files become one-line rows naming the file; exit code reflects errors only."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toothseg.cli import app
from toothseg.data.check import check


def _img(path, shape=(16, 32), v: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full(shape, v, np.uint8)
    a[0, 0] = 0  # not blank
    Image.fromarray(a).save(path)


def _mask(path, shape=(16, 32), empty: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(shape, np.uint8)
    if not empty:
        m[4:8, 4:8] = 255
    Image.fromarray(m).save(path)


@pytest.fixture()
def good(tmp_path):
    root = tmp_path / "good"
    for s in ("a", "b"):
        _img(root / "images" / f"{s}.png")
        _mask(root / "masks" / f"{s}.png")
    _img(root / "images" / "edentulous.png")
    _mask(root / "masks" / "edentulous.png", empty=True)
    _img(root / "unlabelled" / "u.png")
    return root


@pytest.fixture()
def bad(tmp_path):
    root = tmp_path / "bad"
    _img(root / "images" / "cut.png", shape=(64, 64))
    (root / "images" / "cut.png").write_bytes((root / "images" / "cut.png").read_bytes()[:60])
    _mask(root / "masks" / "cut.png", shape=(64, 64))
    _img(root / "images" / "small.png")
    _mask(root / "masks" / "small.png", shape=(20, 32))
    (root / "unlabelled").mkdir()
    (root / "unlabelled" / "junk.dcm").write_bytes(b"garbage, not DICOM" * 20)
    _img(root / "unlabelled" / "fine.png")
    _mask(root / "masks" / "orphan.png")
    m = np.zeros((16, 32), np.uint8)
    m[2:4, 2:4] = 11
    m[6:8, 6:8] = 21
    _img(root / "images" / "fdi.png")
    Image.fromarray(m).save(root / "masks" / "fdi.png")
    return root


def test_good_folder_has_no_errors(good):
    r = check([good])
    assert r.ok
    assert [(p.level, p.path.endswith("edentulous.png")) for p in r.problems] == [("info", True)]
    assert r.counts["good"] == {"images": 4, "labelled": 3, "unlabelled": 1, "empty_masks": 1, "info": 1}


def test_bad_files_are_named(bad):
    r = check([bad])
    errors = {p.path.split("/")[-1]: p.problem for p in r.errors}
    assert set(errors) == {"cut.png", "small.png", "junk.dcm", "orphan.png"}
    assert "truncated" in errors["cut.png"]
    assert "20" in errors["small.png"] and "differs" in errors["small.png"]
    assert "DICOM" in errors["junk.dcm"]
    assert all("\n" not in p.problem for p in r.problems)
    warnings = [p for p in r.problems if p.level == "warning"]
    assert [p.path.split("/")[-1] for p in warnings] == ["fdi.png"] and "unexpected mask values" in warnings[0].problem


def test_counts_per_source_and_csv(good, bad, tmp_path):
    r = check([good, bad], csv_path=tmp_path / "f.csv")
    assert r.counts["bad"]["error"] == 4 and r.counts["good"].get("error", 0) == 0
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert lines[0] == "level,source,file,problem,fix" and len(lines) == 1 + len(r.problems)
    from toothseg.errors import InputError

    with pytest.raises(InputError, match="exists"):
        check([good], csv_path=tmp_path / "f.csv")


def test_missing_folder_is_a_row_not_a_crash(good, tmp_path):
    r = check([good, tmp_path / "nowhere"])
    assert len(r.errors) == 1 and "nowhere" in r.errors[0].path


def test_cli_exit_codes(good, bad):
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(good)])
    assert res.exit_code == 0, res.output
    assert "0 errors" in res.output and "edentulous.png" in res.output
    res = runner.invoke(app, ["check", str(good), str(bad)])
    assert res.exit_code == 1
    assert "cut.png" in res.output and "Traceback" not in res.output


@pytest.mark.realdata
def test_real_data_has_no_errors(real_data):
    dirs = [real_data / d for d in ("tufts", "ufba425", "mlua_caries") if (real_data / d).is_dir()]
    r = check(dirs)
    assert r.errors == [], r.table()
    tufts = r.counts["tufts"]
    assert tufts["empty_masks"] == tufts.get("info", 0) > 0  # edentulous patients are info, not errors
