"""``/brushwork/v1``: training jobs over HTTP, the library with hashes and conversion, the
gallery; and ``/sdapi/v1/progress``'s live preview and ``/sdapi/v1/skip``."""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
from PIL import Image

from brushwork.formats.safeio import read_header

SMALL = {"width": 32, "height": 32, "sampler_name": "Euler"}


def _wait_for_step(url: str, step: int = 2, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        progress = requests.get(f"{url}/sdapi/v1/progress", timeout=10).json()
        if progress["state"]["sampling_step"] >= step:
            return progress
        assert time.monotonic() < deadline, "the job never got going"
        time.sleep(0.02)


def _dataset(live: Any) -> None:
    folder = live.data / "datasets" / "cubes" / "2_sks cube"
    if folder.is_dir():
        return
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            folder / f"{index}.png"
        )
        (folder / f"{index}.txt").write_text("sks cube", encoding="utf-8")


def test_a_lora_run_over_http_reports_steps_loss_and_files(live: Any) -> None:
    _dataset(live)
    body = {"train_data_dir": "cubes", "output_name": "http-cube", "resolution": 64,
            "train_batch_size": 2, "max_train_epochs": 2, "save_every_n_epochs": 1,
            "network_dim": 2, "network_alpha": 1, "seed": 1}  # fmt: skip
    plan = requests.post(f"{live.url}/brushwork/v1/train/lora/plan", json=body, timeout=30)
    assert plan.status_code == 200, plan.text
    assert plan.json()["total_steps"] == 4 and "num epochs: 2" in plan.json()["plan"]
    datasets = requests.get(f"{live.url}/brushwork/v1/datasets", timeout=10).json()
    assert datasets["datasets"] == [{"name": "cubes", "subsets": [
        {"folder": "2_sks cube", "repeats": 2, "name": "sks cube", "images": 2}]}]  # fmt: skip

    job = requests.post(f"{live.url}/brushwork/v1/train/lora", json=body, timeout=30).json()
    deadline = time.monotonic() + 120
    seen_steps: list[int] = []
    while True:
        run = requests.get(f"{live.url}/brushwork/v1/train/{job['id']}", timeout=10).json()
        seen_steps.append(run["progress"]["step"])
        if run["state"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert run["state"] == "done", run["error"]
    assert run["progress"]["total"] == 4 and run["progress"]["epochs"] == 2
    assert [row["step"] for row in run["losses"]] == [1, 2, 3, 4]
    assert all(np.isfinite(row["loss"]) for row in run["losses"])
    assert run["saved"] == ["http-cube-000001.safetensors", "http-cube.safetensors"]
    assert "total optimization steps: 4" in run["plan"]
    later = requests.get(f"{live.url}/brushwork/v1/train/{job['id']}?since=3", timeout=10)
    assert [row["step"] for row in later.json()["losses"]] == [4]
    final = Path(run["final_file"])
    assert final.parent == live.data / "trained" / "http-cube"
    assert read_header(final).metadata["ss_output_name"] == "http-cube"
    record = requests.get(f"{live.url}/brushwork/v1/jobs/{job['id']}", timeout=10).json()
    assert record["state"] == "done"


def test_the_library_lists_hashes_and_converts_files(live: Any) -> None:
    from brushwork.testing.factory import build_components

    vae_folder = live.root / "models" / "VAE"
    pickled = vae_folder / "old.pt"
    vae = build_components("sd1", seed=0).vae.state_dict()
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in vae.items()}}, pickled)
    try:
        _check_library(live, vae_folder)
    finally:  # the library root is shared with the other server tests
        for path in (pickled, vae_folder / "old.safetensors"):
            path.unlink(missing_ok=True)


def _check_library(live: Any, vae_folder: Path) -> None:
    requests.post(f"{live.url}/sdapi/v1/refresh-vae", timeout=30)
    items = requests.get(f"{live.url}/brushwork/v1/library", timeout=30).json()
    by_name = {item["name"]: item for item in items}
    tiny = by_name["tiny"]
    assert tiny["kind"] == "checkpoint" and tiny["base"] == "sd1" and tiny["preview"] is None
    hashed = requests.post(f"{live.url}/brushwork/v1/library/{tiny['id']}/hash", timeout=60)
    assert hashed.json()["sha256"] and hashed.json()["autov2"] == hashed.json()["sha256"][:10]

    old = by_name["old"]
    assert old["format"] == "pickle" and old["kind"] == "vae"
    converted = requests.post(
        f"{live.url}/brushwork/v1/library/{old['id']}/convert", json={"half": True}, timeout=60
    )
    assert converted.status_code == 200, converted.text
    assert Path(converted.json()["target"]) == vae_folder / "old.safetensors"
    assert converted.json()["halved"] > 0
    again = requests.post(f"{live.url}/brushwork/v1/library/{old['id']}/convert", json={})
    assert again.status_code == 422 and "already exists" in again.text  # never replaced
    problems = requests.get(f"{live.url}/brushwork/v1/library/problems", timeout=30).json()
    assert problems["checked"] >= 3


def test_progress_shows_the_live_preview_unless_told_to_skip_it(live: Any) -> None:
    requests.post(f"{live.url}/sdapi/v1/options", json={"show_progress_every_n_steps": 1})
    with ThreadPoolExecutor(1) as pool:
        body = {**SMALL, "prompt": "preview", "steps": 300, "seed": 2}
        running = pool.submit(requests.post, f"{live.url}/sdapi/v1/txt2img", json=body)
        _wait_for_step(live.url)
        progress = requests.get(f"{live.url}/sdapi/v1/progress", timeout=10).json()
        image = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
        assert image.size == (16, 16) and image.mode == "RGB"
        assert progress["textinfo"].startswith("step ")
        skipped = requests.get(f"{live.url}/sdapi/v1/progress?skip_current_image=true")
        assert skipped.json()["current_image"] is None
        requests.post(f"{live.url}/sdapi/v1/interrupt", timeout=10)
        assert running.result(60).status_code == 200
    requests.post(f"{live.url}/sdapi/v1/options", json={"show_progress_every_n_steps": 10})


def test_skip_ends_the_current_batch_and_the_next_one_is_drawn(live: Any) -> None:
    with ThreadPoolExecutor(1) as pool:
        body = {**SMALL, "prompt": "two", "steps": 60, "seed": 40, "n_iter": 2}
        running = pool.submit(requests.post, f"{live.url}/sdapi/v1/txt2img", json=body)
        _wait_for_step(live.url)
        assert requests.post(f"{live.url}/sdapi/v1/skip", timeout=10).json() == {}
        reply = running.result(120).json()
    info = json.loads(reply["info"])
    assert info["interrupted"] is False and info["all_seeds"] == [40, 41]
    assert len(reply["images"]) == 3  # grid, the skipped batch's image, the full one


def test_the_gallery_lists_saved_images_with_their_infotext(live: Any) -> None:
    body = {**SMALL, "prompt": "for the gallery", "steps": 2, "seed": 31}
    reply = requests.post(f"{live.url}/sdapi/v1/txt2img", json=body, timeout=60).json()
    (saved,) = json.loads(reply["info"])["saved"]
    items = requests.get(f"{live.url}/brushwork/v1/gallery?limit=5", timeout=10).json()
    newest = items[0]
    assert newest["name"] == Path(saved).name and "Seed: 31" in newest["infotext"]
    image = requests.get(live.url + newest["url"], timeout=10)
    assert image.headers["content-type"] == "image/png"
    assert image.content == Path(saved).read_bytes()
