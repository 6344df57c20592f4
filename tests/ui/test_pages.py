"""The web UI in a real browser (Playwright + Debian's Chromium): what an A1111 user does first.

Skipped, saying why, when Playwright or a system Chromium is missing. Each test keeps
screenshots (see conftest).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _png_of(source: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB")


def _generate_txt2img(page: Any, prompt: str, *, steps: str = "40", seed: str = "4242") -> None:
    page.fill("#txt2img-prompt", prompt)
    page.select_option("#txt2img-sampler", "Euler")
    for field, value in (("#txt2img-steps", steps), ("#txt2img-width", "64"),
                         ("#txt2img-height", "64"), ("#txt2img-seed", seed)):  # fmt: skip
        page.fill(field, value)
    page.click("#txt2img-generate")


def test_type_a_prompt_generate_see_progress_and_preview_and_read_the_infotext_back(
    page: Any, shots: Path, tmp_path: Path
) -> None:
    assert page.locator("#model").input_value().startswith("tiny.safetensors")
    page.evaluate("fetch('/sdapi/v1/options', {method: 'POST', headers: {'Content-Type': "
                  "'application/json'}, body: JSON.stringify({show_progress_every_n_steps: 2})})")  # fmt: skip
    _generate_txt2img(page, "a lighthouse at dusk", steps="60")
    page.wait_for_function(
        "document.querySelector('#txt2img-progress-text').textContent.startsWith('step ')",
        timeout=30_000,
    )
    page.wait_for_function("!document.querySelector('#txt2img-preview').hidden", timeout=30_000)
    preview = _png_of(page.locator("#txt2img-preview").get_attribute("src") or "")
    assert preview.size == (32, 32)  # the live preview: the cheap latent map, latent size
    page.screenshot(path=str(shots / "txt2img-progress.png"))
    page.wait_for_selector("#txt2img-images img", timeout=60_000)
    infotext = page.locator("#txt2img-infotext").inner_text()
    assert infotext.startswith("a lighthouse at dusk\n") and "Seed: 4242" in infotext
    page.screenshot(path=str(shots / "txt2img-image.png"))

    page.click("#txt2img-seed-reuse")
    assert page.locator("#txt2img-seed").input_value() == "4242"
    page.click("#txt2img-seed-random")
    assert page.locator("#txt2img-seed").input_value() == "-1"

    png = tmp_path / "drawn.png"
    png.write_bytes(base64.b64decode(
        (page.locator("#txt2img-images img").first.get_attribute("src") or "").split(",", 1)[1]
    ))  # fmt: skip
    page.click("[data-tab=pnginfo]")
    page.set_input_files("#png-file", str(png))
    page.wait_for_function("document.querySelector('#png-text').textContent.length > 0")
    assert page.locator("#png-text").inner_text() == infotext
    page.screenshot(path=str(shots / "pnginfo.png"))
    page.evaluate("document.querySelector('#txt2img-prompt').value = ''")
    page.click("#png-to-txt2img")
    page.wait_for_function("document.querySelector('#txt2img-prompt').value.length > 0")
    assert page.locator("#txt2img-prompt").input_value() == "a lighthouse at dusk"
    assert page.locator("#txt2img-seed").input_value() == "4242"


def test_img2img_repaints_only_the_mask_drawn_in_the_page(
    page: Any, shots: Path, tmp_path: Path
) -> None:
    init = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    page.click("[data-tab=img2img]")
    page.set_input_files("#img2img-file", str(init))
    page.wait_for_selector("#mask-stage.loaded")
    box = page.locator("#mask-canvas").bounding_box()
    middle_y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.35, middle_y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.65, middle_y, steps=8)
    page.mouse.up()
    page.fill("#img2img-prompt", "a blue hole")
    page.select_option("#img2img-sampler", "Euler")
    page.fill("#img2img-steps", "8")
    page.fill("#img2img-denoise", "1")
    page.fill("#img2img-mask-blur", "0")
    page.screenshot(path=str(shots / "img2img-mask.png"))
    page.click("#img2img-generate")
    page.wait_for_selector("#img2img-images img", timeout=60_000)
    result = np.asarray(_png_of(page.locator("#img2img-images img").first.get_attribute("src")
                                or "")).astype(int)  # fmt: skip
    assert result.shape == (64, 64, 3)
    assert np.abs(result[2, 2] - [200, 30, 30]).max() <= 3  # unpainted: the init image
    assert np.abs(result[32, 32] - [200, 30, 30]).max() > 10  # painted: redrawn
    assert "Denoising strength: 1" in page.locator("#img2img-infotext").inner_text()
    page.screenshot(path=str(shots / "img2img-result.png"))


def test_extra_network_cards_insert_their_tags_into_the_prompt(page: Any, shots: Path) -> None:
    page.fill("#txt2img-prompt", "a castle")
    page.click("#txt2img-networks-toggle")
    card = page.locator("#txt2img-networks .card[data-name=cubes]")
    assert card.locator("img").count() == 1  # the preview sidecar
    assert "sd1" in card.inner_text() and "sks cube" in card.inner_text()
    page.screenshot(path=str(shots / "extra-networks.png"))
    card.click()
    assert page.locator("#txt2img-prompt").input_value() == "a castle <lora:cubes:0.8> sks cube"
    page.click("#txt2img-networks [data-kind=embedding]")
    page.click("#txt2img-networks .card[data-name=shiny]")
    assert page.locator("#txt2img-prompt").input_value().endswith("sks cube shiny")


def test_gallery_sends_an_image_with_its_settings_to_img2img(page: Any, shots: Path) -> None:
    _generate_txt2img(page, "a gallery picture", steps="4", seed="77")
    page.wait_for_selector("#txt2img-images img", timeout=60_000)
    page.click("[data-tab=gallery]")
    page.wait_for_selector("#gallery-grid img")
    page.locator("#gallery-grid img").first.click()
    assert "Seed: 77" in page.locator("#gallery-infotext").inner_text()
    page.screenshot(path=str(shots / "gallery.png"))
    page.click("#gallery-to-img2img")
    page.wait_for_selector("#tab-img2img:not([hidden]) #mask-stage.loaded")
    page.wait_for_function("document.querySelector('#img2img-prompt').value.length > 0")
    assert page.locator("#img2img-prompt").input_value() == "a gallery picture"
    assert page.locator("#img2img-seed").input_value() == "77"
    assert page.locator("#img2img-width").input_value() == "64"


def test_library_page_lists_the_models_with_hashes_on_request(page: Any, shots: Path) -> None:
    page.click("[data-tab=library]")
    row = page.locator("#library-table tr", has_text="tiny")
    row.wait_for()
    assert "checkpoint" in row.inner_text() and "sd1" in row.inner_text()
    lora = page.locator("#library-table tr", has_text="cubes")
    assert "lora" in lora.inner_text() and "sks cube" in lora.inner_text()
    lora.get_by_role("button", name="Hash").click()
    page.wait_for_function(
        "[...document.querySelectorAll('#library-table tr')].some("
        "r => r.textContent.includes('cubes') && r.querySelector('code'))"
    )
    page.select_option("#library-kind", "embedding")
    assert page.locator("#library-table tbody tr").count() == 1
    page.screenshot(path=str(shots / "library.png"))


def _small_txt2img_settings(page: Any) -> None:
    page.select_option("#txt2img-sampler", "Euler")
    for field, value in (("#txt2img-steps", "2"), ("#txt2img-width", "64"),
                         ("#txt2img-height", "64"), ("#txt2img-seed", "9")):  # fmt: skip
        page.fill(field, value)


def test_xyz_page_draws_a_grid_with_the_txt2img_settings(page: Any, shots: Path) -> None:
    page.fill("#txt2img-prompt", "a red cube")
    _small_txt2img_settings(page)
    page.click("[data-tab=xyz]")
    page.wait_for_selector("#xyz-x-type")
    page.select_option("#xyz-x-type", "steps")
    page.fill("#xyz-x-values", "1,2")
    page.select_option("#xyz-y-type", "prompt-sr")
    page.fill("#xyz-y-values", "red, blue")
    page.click("#xyz-generate")
    page.wait_for_selector("#xyz-images img.grid", timeout=60_000)
    assert page.locator("#xyz-infotext").inner_text().startswith("4 of 4 cells")
    grid = _png_of(page.locator("#xyz-images img").first.get_attribute("src") or "")
    assert grid.width > 128 and grid.height > 128  # 2 x 2 cells of 64 px, with the legend
    page.screenshot(path=str(shots / "xyz.png"), full_page=True)


def test_training_page_shows_the_step_plan_then_trains_with_a_loss_curve(
    page: Any, shots: Path
) -> None:
    _small_txt2img_settings(page)  # the epoch x strength grid draws with these
    page.click("[data-tab=train]")
    page.wait_for_function("document.querySelector('#train-dataset').options.length > 0")
    assert page.locator("#train-dataset").input_value() == "cubes"
    assert "2_sks cube: 2 images x 2 repeats" in page.locator("#train-dataset-info").inner_text()
    for field, value in (("#train-output-name", "ui-cube"), ("#train-resolution", "64"),
                         ("#train-batch", "2"), ("#train-epochs", "3"), ("#train-dim", "2"),
                         ("#train-alpha", "1"), ("#train-sample-every", "1")):  # fmt: skip
        page.fill(field, value)
    page.fill("#train-prompts", "sks cube --w 64 --h 64 --s 2 --d 3")
    page.wait_for_function(
        "document.querySelector('#train-plan').textContent.includes('total optimization steps: 6')"
    )
    page.click("#train-start")
    page.wait_for_function(
        "document.querySelector('#train-status').textContent.startsWith('done')", timeout=120_000
    )
    assert page.locator("#train-loss").get_attribute("data-points") == "6"
    assert page.locator("#train-files li").all_inner_texts() == [
        "ui-cube-000001.safetensors", "ui-cube-000002.safetensors", "ui-cube.safetensors",
    ]  # fmt: skip
    labels = page.locator("#train-samples .sample-row").evaluate_all(
        "rows => rows.map(r => r.dataset.label)"
    )
    assert labels == ["e000001", "e000002", "e000003"]
    page.screenshot(path=str(shots / "training.png"), full_page=True)

    assert page.locator("#grid-prompt").input_value() == "sks cube"
    page.fill("#grid-strengths", "0.5,1")
    page.click("#grid-generate")
    page.wait_for_selector("#grid-images img.grid", timeout=120_000)
    assert page.locator("#grid-infotext").inner_text().startswith("6 of 6 cells")  # 3 files x 2
    page.screenshot(path=str(shots / "training-epoch-grid.png"), full_page=True)
