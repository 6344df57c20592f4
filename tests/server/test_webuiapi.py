"""Unmodified A1111 clients against a live `brushwork serve`: webuiapi from PyPI."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import typer
from PIL import Image
from typer.testing import CliRunner

from brushwork.cli.generate_cmd import generate
from brushwork.core.settings import Settings

webuiapi = pytest.importorskip("webuiapi")

SMALL = {"width": 64, "height": 64, "steps": 2, "cfg_scale": 7.0, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def api(live):  # type: ignore[no-untyped-def]
    return webuiapi.WebUIApi(host=live.host, port=live.port)


def test_txt2img_gives_the_image_the_cli_draws_for_the_same_settings(
    live, api, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    result = api.txt2img(prompt="a red cube", negative_prompt="blurry", seed=1234, **SMALL)
    assert len(result.images) == 1
    assert result.image.size == (64, 64)
    assert result.info["all_seeds"] == [1234]
    infotext = result.info["infotexts"][0]
    assert "Seed: 1234" in infotext and "Sampler: Euler" in infotext

    app = typer.Typer()
    app.command()(generate)
    settings = Settings(roots=(live.root,), data_dir=tmp_path / "cli-data", device="cpu",
                        precision="fp32")  # fmt: skip
    out = tmp_path / "cli-out"
    run = CliRunner().invoke(
        app,
        ["a red cube", "--negative", "blurry", "--seed", "1234", "--size", "64x64", "--steps", "2",
         "--cfg", "7", "--sampler", "Euler", "--root", str(live.root), "--out", str(out)],
        obj=settings,
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    (cli_file,) = out.rglob("*.png")
    cli_image = Image.open(cli_file)
    assert np.array_equal(np.asarray(cli_image.convert("RGB")), np.asarray(result.image))
    assert cli_image.info["parameters"] == infotext


def test_the_returned_png_carries_its_infotext_and_png_info_reads_it(api) -> None:  # type: ignore[no-untyped-def]
    result = api.txt2img(prompt="a blue sphere", seed=7, **SMALL)
    assert result.image.info["parameters"] == result.info["infotexts"][0]
    info = api.png_info(result.image)
    assert info.info == result.info["infotexts"][0]
    assert info.parameters["Prompt"] == "a blue sphere"
    assert info.parameters["Seed"] == "7"


def test_images_are_written_before_the_reply(live, api) -> None:  # type: ignore[no-untyped-def]
    result = api.txt2img(prompt="saved", seed=99, **SMALL)
    (saved,) = result.info["saved"]
    assert Path(saved).is_file() and Path(saved).is_relative_to(live.outputs)
    assert Path(saved).name.endswith("-99.png")


def test_a_batch_returns_the_grid_first_then_each_image(api) -> None:  # type: ignore[no-untyped-def]
    result = api.txt2img(prompt="pair", seed=10, batch_size=2, **SMALL)
    assert result.info["index_of_first_image"] == 1
    assert result.info["all_seeds"] == [10, 11]
    assert [image.size for image in result.images] == [(128, 64), (64, 64), (64, 64)]


def test_img2img_with_a_mask(api) -> None:  # type: ignore[no-untyped-def]
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = api.img2img(
        images=[init], mask_image=mask, prompt="a hole", seed=3, denoising_strength=0.6,
        inpainting_fill=1, inpaint_full_res=False, **SMALL,
    )  # fmt: skip
    assert result.image.size == (64, 64)
    pixels = np.asarray(result.image).astype(int)
    assert np.abs(pixels[0, 0] - [200, 30, 30]).max() <= 3  # outside the mask: the init image
    assert "Denoising strength: 0.6" in result.info["infotexts"][0]


def test_options_round_trip_and_select_the_checkpoint(api) -> None:  # type: ignore[no-untyped-def]
    options = api.get_options()
    assert options["sd_model_checkpoint"].startswith("tiny.safetensors")
    api.set_options({"send_seed": False, "CLIP_stop_at_last_layers": 2})
    changed = api.get_options()
    assert changed["send_seed"] is False and changed["CLIP_stop_at_last_layers"] == 2
    result = api.txt2img(prompt="skip", seed=1, **SMALL)
    assert "Clip skip: 2" in result.info["infotexts"][0]
    api.set_options({"CLIP_stop_at_last_layers": 1, "send_seed": True})
    api.util_set_model("tiny")
    assert api.util_get_current_model().startswith("tiny.safetensors [")
    api.set_options(api.get_options())  # Open WebUI posts the whole dict back


def test_listings(api) -> None:  # type: ignore[no-untyped-def]
    assert [m["model_name"] for m in api.get_sd_models()] == ["tiny"]
    samplers = {s["name"] for s in api.get_samplers()}
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= samplers
    assert {s["name"] for s in api.get_schedulers()} >= {"automatic", "karras"}
    assert api.get_loras() == []
    assert api.get_hypernetworks() == []
    assert api.get_sd_vae() == []
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert "ram" in api.get_memory()
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.refresh_checkpoints() is None  # A1111 answers null


def test_interrupt_stops_the_running_job(api) -> None:  # type: ignore[no-untyped-def]
    replies: list[object] = []
    worker = threading.Thread(
        target=lambda: replies.append(
            api.txt2img(
                prompt="long",
                seed=5,
                width=32,
                height=32,
                steps=400,
                n_iter=3,
                sampler_name="Euler",
            )
        )
    )
    started = time.monotonic()
    worker.start()
    while api.get_progress()["state"]["sampling_step"] < 2:
        assert time.monotonic() - started < 30, "the job never started"
        time.sleep(0.05)
    progress = api.get_progress()
    assert 0 < progress["progress"] < 1 and progress["state"]["job_count"] == 1
    api.interrupt()
    worker.join(30)
    (result,) = replies
    assert result.info["interrupted"] is True  # type: ignore[attr-defined]
    assert len(result.images) < 3  # type: ignore[attr-defined]
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_unknown_fields_and_nulls_are_accepted(live) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "x", "seed": 1, **SMALL, "made_up_field": 3, "styles": None,
            "sampler_index": None, "alwayson_scripts": {"controlnet": {"args": []}}}  # fmt: skip
    reply = requests.post(f"{live.url}/sdapi/v1/txt2img", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert isinstance(data["info"], str) and json.loads(data["info"])["seed"] == 1
    png = base64.b64decode(data["images"][0])
    assert Image.open(io.BytesIO(png)).info["parameters"].startswith("x\n")
