"""The web UI in a real browser: Playwright driving Debian's Chromium (no browser download).

Skipped, saying why, when Playwright or a system Chromium is missing. Screenshots go to
``$BRUSHWORK_ARTIFACTS`` (else the test's tmp folder).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no system Chromium (apt-get install chromium); not downloading one"
)


@pytest.mark.slow
def test_type_a_prompt_generate_see_progress_and_read_the_infotext_back(
    live, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    shots = Path(os.environ.get("BRUSHWORK_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--headless=new"]
        )
        page = browser.new_page()
        page.goto(live.url + "/")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        assert page.locator("#model").input_value().startswith("tiny.safetensors")
        page.fill("#prompt", "a lighthouse at dusk")
        page.select_option("#sampler", "Euler")
        for field, value in (("#steps", "60"), ("#width", "64"), ("#height", "64"),
                             ("#seed", "4242")):  # fmt: skip
            page.fill(field, value)
        page.screenshot(path=str(shots / "ui-before.png"))
        page.click("#generate")
        page.wait_for_function(
            "document.querySelector('#progress-text').textContent.startsWith('step ')",
            timeout=30_000,
        )
        page.screenshot(path=str(shots / "ui-progress.png"))
        page.wait_for_selector("#gallery img", timeout=60_000)
        infotext = page.locator("#infotext").inner_text()
        assert infotext.startswith("a lighthouse at dusk\n") and "Seed: 4242" in infotext
        page.screenshot(path=str(shots / "ui-image.png"))

        source = page.locator("#gallery img").first.get_attribute("src") or ""
        png = tmp_path / "drawn.png"
        png.write_bytes(base64.b64decode(source.split(",", 1)[1]))
        page.set_input_files("#png-file", str(png))
        page.wait_for_function("document.querySelector('#png-text').textContent.length > 0")
        assert page.locator("#png-text").inner_text() == infotext
        page.screenshot(path=str(shots / "ui-pnginfo.png"))
        browser.close()
