"""Predict never keeps broken or foreign outputs: atomic files, completion records with the input's hash,
interrupted runs redone, `--out` inside the inputs, same name / different image, summary.csv across batches."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.fakerun import draw_sample
from toothseg.errors import InputError, ToothsegError
from toothseg.predict.bundle_build import build_bundle
from toothseg.predict.inputs import expand_inputs
from toothseg.predict.outputs import MARKER
from toothseg.predict.batch import predict

KW = {"folds": [0], "tta": False, "threads": 1, "workers": 1}


@pytest.fixture(scope="module")
def bundle_dir(fake_run: Path) -> Path:
    return build_bundle(fake_run)


def _images(d: Path, n: int, seed: int = 0, shape: tuple[int, int] = (70, 140)) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(d / f"x{i}.png"), draw_sample(rng, shape)[0])
    return d


def _rows(out: Path) -> list[dict]:
    with (out / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def _assert_complete(out: Path) -> None:
    """Every record's outputs exist and decode at the record's size; no PNG lacks a record; no temp file is left
    where a reader would take it for a result."""
    recorded = set()
    for rec_path in (out / "json").glob("*.json"):
        rec = json.loads(rec_path.read_text())
        assert len(rec["input_sha256"]) == 64
        for rel in rec["outputs"].values():
            img = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
            assert img is not None and img.shape[:2] == (rec["height"], rec["width"])
            recorded.add((out / rel).resolve())
    for png in out.glob("*/*.png"):
        assert png.resolve() in recorded, f"{png} has no completion record"


def test_records_hash_and_relative_outputs(bundle_dir: Path, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    s = predict(bundle_dir, [str(src)], out, **KW)
    assert s.n_ok == 2 and (out / MARKER).is_file()
    rec = json.loads((out / "json" / "x0.json").read_text())
    import hashlib

    assert rec["input_sha256"] == hashlib.sha256((src / "x0.png").read_bytes()).hexdigest()
    assert rec["outputs"] == {"mask": "masks/x0.png", "overlay": "overlays/x0.png"}
    _assert_complete(out)
    # a copied output folder is still complete and a re-run there skips everything
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = predict(bundle_dir, [str(src)], copy, **KW)
    assert (again.n_ok, again.n_skipped) == (0, 2)


def test_interrupted_outputs_are_redone_not_kept(bundle_dir: Path, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    predict(bundle_dir, [str(src)], out, **KW)
    good_mask = (out / "masks" / "x1.png").read_bytes()
    # what a kill leaves: x0 record never written, its overlay truncated; x1 record kept but its overlay missing
    (out / "json" / "x0.json").unlink()
    ov = out / "overlays" / "x0.png"
    ov.write_bytes(ov.read_bytes()[:50])
    (out / "overlays" / "x1.png").unlink()
    (out / "overlays" / ".x2.123-4.tmp.png").write_bytes(b"half")
    s = predict(bundle_dir, [str(src)], out, **KW)
    assert (s.n_ok, s.n_skipped, s.n_failed) == (2, 1, 0)
    status = {r["stem"]: r["status"] for r in _rows(out)}
    assert status == {"x0": "ok", "x1": "ok", "x2": "skipped"}
    assert (out / "masks" / "x1.png").read_bytes() == good_mask  # same input, same bundle: same mask
    (out / "overlays" / ".x2.123-4.tmp.png").unlink()  # a stray temp file is hidden and never a result
    _assert_complete(out)


def test_failed_write_leaves_no_final_file(bundle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    src = _images(tmp_path / "in", 1)
    out = tmp_path / "out"
    real = cv2.imwrite

    def half_then_fail(path: str, arr) -> bool:
        if "overlays" in path:
            Path(path).write_bytes(b"\x89PNG partial")
            raise OSError(28, "No space left on device")
        return real(path, arr)

    monkeypatch.setattr(cv2, "imwrite", half_then_fail)
    s = predict(bundle_dir, [str(src)], out, **KW)
    assert s.n_failed == 1 and "No space left" in s.failures[0]["error"]
    assert not (out / "overlays" / "x0.png").exists() and not (out / "json" / "x0.json").exists()
    assert list((out / "overlays").iterdir()) == []
    monkeypatch.setattr(cv2, "imwrite", real)
    s = predict(bundle_dir, [str(src)], out, **KW)
    assert s.n_ok == 1
    _assert_complete(out)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from toothseg.predict.batch import predict
    predict({bundle!r}, [{src!r}], {out!r}, folds=[0], tta=False, threads=1, workers=1, batch_size=1)
""")


def test_sigkill_then_rerun_leaves_only_complete_outputs(bundle_dir: Path, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", 20, shape=(256, 512))
    out = tmp_path / "out"
    code = KILL_SCRIPT.format(bundle=str(bundle_dir), src=str(src), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and p.poll() is None:
            if len(list((out / "json").glob("*.json"))) >= 3 if (out / "json").is_dir() else False:
                break
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    done_at_kill = len(list((out / "json").glob("*.json")))
    assert 3 <= done_at_kill < 20, "the kill must land mid-batch"
    s = predict(bundle_dir, [str(src)], out, **KW, batch_size=1)
    assert s.n_failed == 0 and s.n_ok + s.n_skipped == 20
    assert len(_rows(out)) == 20
    for tmp in out.glob("*/.*.tmp.png"):  # what the kill may leave: hidden, never listed, never read
        tmp.unlink()
    _assert_complete(out)
    assert len(list((out / "json").glob("*.json"))) == 20


def test_out_inside_the_input_folder_is_never_read(bundle_dir: Path, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", 2)
    out = src / "preds"
    first = predict(bundle_dir, [str(src)], out, **KW)
    assert first.n_ok == 2
    again = predict(bundle_dir, [str(src)], out, overwrite=True, **KW)
    assert (again.n_ok, again.n_failed, again.n_inputs) == (2, 0, 2)
    assert all(json.loads((out / "json" / f"x{i}.json").read_text())["input"] == str(src / f"x{i}.png")
               for i in range(2))
    # a second, different --out in the same folder: the first output folder is not searched either
    other = predict(bundle_dir, [str(src)], src / "preds2", **KW)
    assert other.n_inputs == 2 and any("preds" in n for n in other.notes)
    # an output file given explicitly is refused, not segmented
    files, problems, _ = expand_inputs([str(out / "masks" / "x0.png")])
    assert files == [] and "toothseg predict output" in problems[0][1]


def test_same_name_different_image_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    a = _images(tmp_path / "a", 1, seed=1)
    b = _images(tmp_path / "b", 1, seed=2)  # also x0.png, other pixels
    out = tmp_path / "out"
    predict(bundle_dir, [str(a / "x0.png")], out, **KW)
    rec_before = (out / "json" / "x0.json").read_text()
    mask_before = (out / "masks" / "x0.png").read_bytes()
    s = predict(bundle_dir, [str(b / "x0.png")], out, **KW)
    assert s.n_failed == 1 and "different image" in s.failures[0]["error"]
    assert (out / "json" / "x0.json").read_text() == rec_before
    assert (out / "masks" / "x0.png").read_bytes() == mask_before
    rows = _rows(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 1 and ok[0]["input"] == str(a / "x0.png")  # the numbers shown are a's, labelled as a's
    forced = predict(bundle_dir, [str(b / "x0.png")], out, overwrite=True, **KW)
    assert forced.n_ok == 1
    assert json.loads((out / "json" / "x0.json").read_text())["input"] == str(b / "x0.png")


def test_second_batch_keeps_earlier_summary_rows(bundle_dir: Path, tmp_path: Path) -> None:
    a = _images(tmp_path / "a", 2, seed=1)
    b = tmp_path / "b"
    b.mkdir()
    cv2.imwrite(str(b / "y.png"), draw_sample(np.random.default_rng(5), (70, 140))[0])
    out = tmp_path / "out"
    predict(bundle_dir, [str(a)], out, **KW)
    predict(bundle_dir, [str(b)], out, **KW)
    rows = {r["stem"]: r for r in _rows(out)}
    assert set(rows) == {"x0", "x1", "y"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["x0"]["tooth_area_px"] != ""


def test_foreign_files_in_out_are_not_overwritten(bundle_dir: Path, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", 1)
    out = tmp_path / "dataset"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "x0.png").write_bytes(b"hand-drawn ground truth")
    s = predict(bundle_dir, [str(src)], out, **KW)
    assert s.n_failed == 1 and "did not write" in s.failures[0]["error"]
    assert (out / "masks" / "x0.png").read_bytes() == b"hand-drawn ground truth"


def test_duplicate_and_looping_links_are_reported(tmp_path: Path) -> None:
    src = _images(tmp_path / "in", 2)
    (src / "again.png").symlink_to(src / "x0.png")
    (src / "loop").symlink_to(src, target_is_directory=True)
    files, problems, notes = expand_inputs([str(src), str(src / "x1.png")])
    assert len(files) == 2 and {f.resolve() for f in files} == {src / "x0.png", src / "x1.png"} and not problems
    text = "\n".join(notes)
    assert "x0.png: same file as" in text and "x1.png: same file as" in text
    assert "loop: folder reached again through a link" in text


def test_unwritable_out_fails_before_the_bundle_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="--out folder is not writable"):
        predict(tmp_path / "no-such-bundle", [str(tmp_path)], blocker / "out")
    with pytest.raises(InputError, match="is a file, not a folder"):
        predict(tmp_path / "no-such-bundle", [str(tmp_path)], blocker)


def test_out_equal_to_the_input_folder_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", 1)
    with pytest.raises(ToothsegError, match="no image to predict.*output folders are not searched"):
        predict(bundle_dir, [str(src)], src, **KW)
    assert sorted(p.name for p in src.iterdir() if not p.name.startswith(".")) == ["x0.png"]
