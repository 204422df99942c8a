"""The review server's API (Starlette TestClient): list, pictures, saving corrected masks, refusing bad uploads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from toothseg.errors import InputError
from toothseg.review.app import create_app
from toothseg.review.server import open_session
from toothseg.suggest.worklist import write_worklist

SHAPE = (64, 128)


def make_review_set(root: Path, n: int = 3, shape: tuple[int, int] = SHAPE) -> Path:
    """Synthetic X-rays in root/data/synth/unlabelled, predictions, and a worklist; returns the worklist JSON."""
    rng = np.random.default_rng(0)
    h, w = shape
    items = []
    for i in range(n):
        img = rng.integers(30, 90, shape, dtype=np.uint8)
        pred = np.zeros(shape, np.uint8)
        pred[h // 4: h // 2, w // 8: w // 4] = 255  # a predicted "tooth" on the left; the right half is empty
        img[pred > 0] = 200
        ip = root / "data" / "synth" / "unlabelled" / f"u{i}.png"
        pp = root / "run" / "suggest" / "worklist.pred" / "synth" / f"u{i}.png"
        ip.parent.mkdir(parents=True, exist_ok=True)
        pp.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ip), img)
        cv2.imwrite(str(pp), pred)
        items.append({"rank": i + 1, "key": f"synth/u{i}", "image_path": str(ip), "prediction": str(pp),
                      "score": 0.5 - 0.1 * i, "disagreement": 0.3, "entropy": 0.2, "uncertainty_rank": i + 1,
                      "distance": None, "reason": f"test item {i}"})
    csv_path = root / "run" / "suggest" / "worklist.csv"
    return write_worklist(csv_path, {"bundle": str(root / "run" / "bundle"), "bundle_created": "now"}, items)


def png(arr: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    return buf.tobytes()


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def served(tmp_path: Path):
    wl = make_review_set(tmp_path)
    session = open_session(wl, out=tmp_path / "reviewed", user="tester")
    return tmp_path, session, TestClient(create_app(session))


def test_list_and_pictures(served) -> None:
    root, session, client = served
    r = client.get("/api/items")
    assert r.status_code == 200
    items = r.json()["items"]
    assert [it["key"] for it in items] == ["synth/u0", "synth/u1", "synth/u2"]
    assert items[0]["status"] == "todo" and items[0]["scores"]["score"] == pytest.approx(0.5)
    assert items[0]["reason"] == "test item 0"
    img = decode(client.get("/api/items/u0/image").content)
    assert img.shape == SHAPE
    assert np.array_equal(img, cv2.imread(str(root / "data/synth/unlabelled/u0.png"), cv2.IMREAD_GRAYSCALE))
    mask = decode(client.get("/api/items/u0/mask").content)
    assert mask.shape == SHAPE and set(np.unique(mask)) == {0, 255} and mask[SHAPE[0] // 3, SHAPE[1] // 6] == 255
    ov = decode(client.get("/api/items/u0/overlay").content)
    assert ov.shape == (*SHAPE, 3)
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert client.get("/static/review.js").status_code == 200


def test_accept_writes_a_new_dataset_and_keeps_originals(served) -> None:
    root, session, client = served
    before = digest(root / "data") | digest(root / "run")
    corrected = np.zeros(SHAPE, np.uint8)
    corrected[10:30, 80:120] = 255  # the reviewer paints a tooth on the right
    r = client.post("/api/items/u1/accept", content=png(corrected), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["decision"] == "accepted" and rec["user"] == "tester" and rec["bundle"].endswith("bundle")
    assert rec["prediction"].endswith("u1.png") and rec["changed_px"] > 0
    out = root / "reviewed"
    saved = cv2.imread(str(out / "masks" / "u1.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(saved > 0, corrected > 0)
    assert (out / "images" / "u1.png").read_bytes() == (root / "data/synth/unlabelled/u1.png").read_bytes()
    assert "tester" in (out / "review.csv").read_text()
    assert (digest(root / "data") | digest(root / "run")) == before  # originals untouched
    assert client.get("/api/items").json()["items"][1]["status"] == "accepted"
    # the page restarts from the accepted mask
    assert np.array_equal(decode(client.get("/api/items/u1/mask").content) > 0, corrected > 0)


def test_mask_edited_at_display_size_is_saved_at_image_size(served) -> None:
    root, _, client = served
    small = np.zeros((SHAPE[0] // 2, SHAPE[1] // 2), np.uint8)
    small[4:12, 40:60] = 255
    r = client.post("/api/items/u0/accept", content=png(small))
    assert r.status_code == 200, r.text
    saved = cv2.imread(str(root / "reviewed" / "masks" / "u0.png"), cv2.IMREAD_UNCHANGED)
    assert saved.shape == SHAPE and set(np.unique(saved)) == {0, 255}
    assert saved[8:24, 80:120].all() and not saved[:, :70].any()


def test_reaccept_keeps_history_and_reject_removes_from_dataset(served) -> None:
    root, _, client = served
    m = np.zeros(SHAPE, np.uint8)
    m[5:10, 5:10] = 255
    assert client.post("/api/items/u2/accept", content=png(m)).status_code == 200
    assert client.post("/api/items/u2/accept", content=png(255 - m)).status_code == 200
    assert len(list((root / "reviewed" / "history").glob("u2-*"))) == 2  # earlier image + mask kept
    r = client.post("/api/items/u2/reject")
    assert r.status_code == 200 and r.json()["decision"] == "rejected"
    assert not (root / "reviewed" / "masks" / "u2.png").exists()
    assert not list((root / "reviewed" / "images").glob("u2.*"))
    assert client.post("/api/items/u0/skip").json()["decision"] == "skipped"
    rows = (root / "reviewed" / "review.csv").read_text().splitlines()
    assert len(rows) == 1 + 4


@pytest.mark.parametrize("body,why", [
    (b"GIF89a not a png at all", "not a PNG"),
    (png(np.zeros(SHAPE, np.uint8), ".jpg"), "not a PNG"),
    (b"\x89PNG\r\n\x1a\n broken", "unreadable PNG"),
    (png(np.zeros((SHAPE[0], SHAPE[1] + 10), np.uint8)), "send it at the image's size"),
    (png(np.zeros((SHAPE[0] * 2, SHAPE[1] * 2), np.uint8)), "send it at the image's size"),
])
def test_bad_uploads_are_refused(served, body: bytes, why: str) -> None:
    root, _, client = served
    r = client.post("/api/items/u0/accept", content=body)
    assert r.status_code == 400 and why in r.json()["error"]
    assert not (root / "reviewed" / "masks").exists()


@pytest.mark.parametrize("path", ["/api/items/nope/image", "/api/items/..%2F..%2Fetc%2Fpasswd/image",
                                  "/api/items/%2Fetc%2Fpasswd/mask", "/api/items/u0/secret",
                                  "/api/items/../../etc/passwd", "/static/../session.py"])
def test_unknown_ids_and_path_tricks_are_404(served, path: str) -> None:
    _, _, client = served
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", ["/api/items/..%2Fu0/accept", "/api/items/%2Ftmp%2Fx/accept", "/api/items/u0/delete"])
def test_posts_to_unknown_ids_are_404(served, path: str) -> None:
    root, _, client = served
    assert client.post(path, content=png(np.zeros(SHAPE, np.uint8))).status_code == 404
    assert not (root / "reviewed" / "masks").exists()


def test_tampered_worklist_names_are_refused(tmp_path: Path) -> None:
    wl = make_review_set(tmp_path, n=1)
    text = wl.read_text().replace('"synth/u0"', '"synth/../../evil"')
    wl.write_text(text)
    with pytest.raises(InputError, match="not a plain file name"):
        open_session(wl, out=tmp_path / "reviewed")


def test_output_folder_never_overlaps_inputs(tmp_path: Path) -> None:
    wl = make_review_set(tmp_path, n=1)
    with pytest.raises(InputError, match="overlaps the inputs"):
        open_session(wl, out=tmp_path / "data" / "synth" / "unlabelled" / "reviewed")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user's own file")
    with pytest.raises(InputError, match="not a review folder"):
        open_session(wl, out=tmp_path / "mine")


def test_session_resumes_earlier_decisions(tmp_path: Path) -> None:
    wl = make_review_set(tmp_path, n=2)
    client = TestClient(create_app(open_session(wl, out=tmp_path / "reviewed")))
    assert client.post("/api/items/u0/skip").status_code == 200
    again = TestClient(create_app(open_session(wl, out=tmp_path / "reviewed")))
    assert [it["status"] for it in again.get("/api/items").json()["items"]] == ["skipped", "todo"]


def test_prepare_takes_the_reviewed_folder_as_a_source(tmp_path: Path) -> None:
    from toothseg.curate.prepare import prepare
    from toothseg.data.layout import read_index
    from toothseg.data.synth import synth

    synth(tmp_path / "clinic", labelled=6, unlabelled=0, height=64, width=128, duplicates=False)
    wl = make_review_set(tmp_path, n=2)
    client = TestClient(create_app(open_session(wl, out=tmp_path / "reviewed")))
    m = np.zeros(SHAPE, np.uint8)
    m[20:40, 20:60] = 255
    for i in ("u0", "u1"):
        assert client.post(f"/api/items/{i}/accept", content=png(m)).status_code == 200
    s = prepare([tmp_path / "clinic", tmp_path / "reviewed"], out=tmp_path / "run2", preset="tiny", n_folds=2)
    assert s["labelled"] == 8
    keys = {x.key: x for x in read_index(tmp_path / "run2" / "samples.csv")}
    assert keys["reviewed/u0"].labelled and keys["reviewed/u1"].mask_path.name == "u1.png"


def test_oversized_upload_is_413(served, monkeypatch: pytest.MonkeyPatch) -> None:
    import toothseg.review.app as app_mod

    root, session, _ = served
    monkeypatch.setattr(app_mod, "MAX_UPLOAD", 100)
    client = TestClient(app_mod.create_app(session))
    r = client.post("/api/items/u0/accept", content=b"\x89PNG\r\n\x1a\n" + b"0" * 200)
    assert r.status_code == 413 and not (root / "reviewed" / "masks").exists()


def test_a_predict_output_folder_can_be_reviewed(tmp_path: Path) -> None:
    wl = make_review_set(tmp_path, n=2)
    pred = tmp_path / "preds"
    (pred / "masks").mkdir(parents=True)
    rows = ["stem,input,status,height,width,tooth_area_px,tooth_area_fraction,n_components,mean_confidence,error"]
    for i in range(2):
        src = tmp_path / "data" / "synth" / "unlabelled" / f"u{i}.png"
        (pred / "masks" / f"u{i}.png").write_bytes((wl.parent / "worklist.pred" / "synth" / f"u{i}.png").read_bytes())
        rows.append(f"u{i},{src},ok,{SHAPE[0]},{SHAPE[1]},1,0.1,1,0.9,")
    rows.append("bad,/nowhere/bad.png,failed,,,,,,,unreadable")
    (pred / "summary.csv").write_text("\n".join(rows) + "\n")
    client = TestClient(create_app(open_session(pred, user="t")))
    assert [it["id"] for it in client.get("/api/items").json()["items"]] == ["u0", "u1"]
    assert client.post("/api/items/u1/accept", content=png(np.full(SHAPE, 255, np.uint8))).status_code == 200
    assert cv2.imread(str(pred / "reviewed" / "masks" / "u1.png"), cv2.IMREAD_GRAYSCALE).all()


def test_cli_review_reports_a_missing_source(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from toothseg.cli import app
    from toothseg.errors import ConfigError

    res = CliRunner().invoke(app, ["review", str(tmp_path / "nope")])
    assert isinstance(res.exception, InputError) and "not found" in str(res.exception)
    res = CliRunner().invoke(app, ["review", str(make_review_set(tmp_path)), "--port", "0"])
    assert isinstance(res.exception, ConfigError)
