"""The review page in real headless Chromium: open it, paint a stroke, accept, and check the saved mask file.

Skipped where Debian's chromium + chromium-driver or selenium are absent (CI installs them in .ci/run).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import cv2
import pytest

from test_review_api import make_review_set

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()),
                                reason="chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
SHAPE = (300, 600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path: Path):
    import uvicorn

    from toothseg.review.app import create_app
    from toothseg.review.server import open_session

    wl = make_review_set(tmp_path, n=2, shape=SHAPE)
    session = open_session(wl, out=tmp_path / "reviewed", user="browser-test")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(session), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}/", tmp_path / "reviewed"
    srv.should_exit = True
    th.join(10)


@pytest.fixture()
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="toothseg-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 20.0):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def test_paint_a_stroke_and_accept(server, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, out = server
    browser.get(url)
    assert wait_for(browser, "return window.reviewReady") == "u0"
    canvas = browser.find_element(By.ID, "mask")
    rect = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    scale = SHAPE[1] / rect[0]  # image pixels per CSS pixel
    # a horizontal stroke across the right half, where the prediction is empty; offsets are from the centre
    y_off, x0, x1 = -int(rect[1] * 0.2), int(rect[0] * 0.1), int(rect[0] * 0.35)
    (ActionChains(browser).move_to_element_with_offset(canvas, x0, y_off).click_and_hold()
     .move_by_offset((x1 - x0) // 2, 0).move_by_offset((x1 - x0) - (x1 - x0) // 2, 0).release().perform())
    browser.find_element(By.ID, "accept").click()
    rec = wait_for(browser, "return window.lastDecision")
    assert rec["decision"] == "accepted" and rec["user"] == "browser-test"

    saved = cv2.imread(str(out / "masks" / "u0.png"), cv2.IMREAD_UNCHANGED)
    assert saved is not None and saved.shape == SHAPE  # saved at the image's own size
    cy = int((rect[1] / 2 + y_off) * scale)
    xa, xb = int((rect[0] / 2 + x0) * scale), int((rect[0] / 2 + x1) * scale)
    assert saved[cy, xa + 5: xb - 5].all(), "the stroke is missing from the saved mask"
    assert not saved[SHAPE[0] - 20:, SHAPE[1] // 2:].any(), "paint where no stroke went"
    h, w = SHAPE
    assert saved[h // 4 + 2: h // 2 - 2, w // 8 + 2: w // 4 - 2].all(), "the predicted tooth was lost"
    assert (out / "images" / "u0.png").is_file()
    # the page moved on to the next image
    assert wait_for(browser, "return window.reviewReady") == "u1"
