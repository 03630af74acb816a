"""The drag editor in real headless Chromium, driven by Selenium: the page loads, a
handle and a target are placed by clicking, a drag runs, the image changes and the
handle moves toward the target. Uses the bundled SynthFace generator."""

from __future__ import annotations

import base64
import io
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from facegen_rt.serve import create_app
from facegen_rt.weights import BUNDLED_GENERATOR, load_generator

from .conftest import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
_missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
try:
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - the test extras install it
    webdriver = None
    _missing.append("selenium")
# CI installs Chromium (scripts/setup.sh --test); there a missing browser is a failure.
if _missing and not os.environ.get("CI"):
    pytest.skip(f"browser test needs {_missing} (scripts/setup.sh --test installs them)",
                allow_module_level=True)


def _chrome(profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1000,1100",
                 f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def _wait(driver, script: str, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    state = driver.execute_script("return JSON.stringify({...window.editor, image: null})")
    raise AssertionError(f"timed out waiting for `{script}`; editor state: {state}")


def _pixels(data_url: str) -> np.ndarray:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(np.float64)


def _click(driver, canvas, xy, res: int) -> None:
    """Click image pixel (x, y) of the canvas (its CSS size may differ from ``res``)."""
    rect = canvas.rect
    dx = (xy[0] + 0.5) * rect["width"] / res - rect["width"] / 2
    dy = (xy[1] + 0.5) * rect["height"] / res - rect["height"] / 2
    ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy)).click().perform()


@pytest.mark.skipif(not BUNDLED_GENERATOR.exists(), reason="bundled generator not installed")
def test_drag_in_headless_chromium(tmp_path):
    app = create_app(load_generator())
    res = 256
    handle, target = (128, 150), (150, 150)
    driver = _chrome(tmp_path / "profile")
    try:
        with running_server(app) as url:
            driver.get(url)
            _wait(driver, "return window.editor.ready")
            assert driver.title == "facegen_rt drag editor"
            before = _pixels(driver.execute_script("return window.editor.image"))
            canvas = driver.find_element(By.ID, "canvas")
            _click(driver, canvas, handle, res)
            _click(driver, canvas, target, res)
            pairs = _wait(driver, "return window.editor.pairs.length === 1 && window.editor.pairs")
            assert pairs[0]["handle"] == list(handle) and pairs[0]["target"] == list(target)
            steps = driver.find_element(By.ID, "steps")
            steps.clear()
            steps.send_keys("40")
            driver.find_element(By.ID, "start").click()
            reason = _wait(driver, "return window.editor.lastReason", timeout=180)
            state = driver.execute_script("return {...window.editor, image: null}")
            after = _pixels(driver.execute_script("return window.editor.image"))
    finally:
        driver.quit()
    assert state["lastError"] is None, state["lastError"]
    assert reason in ("done", "max_steps")
    assert state["frames"] >= 2 and 1 <= state["step"] <= 40
    change = np.abs(after - before).mean()
    assert change > 1.0, f"the image barely changed (mean |diff| {change:.2f} / 255)"
    start = float(np.hypot(target[0] - handle[0], target[1] - handle[1]))
    end = state["distances"][0]
    moved = state["pairs"][0]["handle"]
    assert end < start - 3, (f"the handle did not move toward the target: distance {start:.1f} "
                             f"-> {end:.1f} px (handle now at {moved})")
