"""Auth on every route, 422 naming the field, path traversal refused, 503 on a full queue,
two workers on one queue."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from brushwork.server.app import ServerConfig, create_app

SMALL = {"width": 32, "height": 32, "steps": 2, "sampler_name": "Euler"}


def _route_paths() -> list[tuple[str, str]]:
    """Every documented route, with each method."""
    paths = create_app(ServerConfig()).openapi()["paths"]
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "0", path))
        for path, methods in paths.items()
        for method in methods
    ]


def test_with_api_auth_every_route_answers_401_without_credentials(
    tiny_root: Path, tmp_path: Path, serve_factory
) -> None:
    with serve_factory(
        tiny_root, tmp_path, credentials=(("alice", "s3cret"), ("bob", "pw:with:colons"))
    ) as live:
        routes = [*_route_paths(), ("GET", "/"), ("GET", "/ui/index.html"), ("GET", "/docs"),
                  ("GET", "/openapi.json"), ("GET", "/nope")]  # fmt: skip
        assert ("POST", "/sdapi/v1/txt2img") in routes and len(routes) > 30
        for method, path in routes:
            reply = requests.request(method, live.url + path, timeout=10)
            assert reply.status_code == 401, (method, path)
            assert reply.headers["www-authenticate"].startswith("Basic")
            wrong = requests.request(method, live.url + path, auth=("alice", "nope"), timeout=10)
            assert wrong.status_code == 401, (method, path)
        for user, password in (("alice", "s3cret"), ("bob", "pw:with:colons")):
            ok = requests.get(f"{live.url}/sdapi/v1/options", auth=(user, password), timeout=10)
            assert ok.status_code == 200
        assert requests.get(f"{live.url}/docs", auth=("alice", "s3cret"), timeout=10).ok


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"width": "wide"}, "width"),
        ({"steps": 0}, "steps"),
        ({"width": 65}, "width"),
        ({"cfg_scale": "high"}, "cfg_scale"),
        ({"sampler_name": "Nonexistent sampler"}, "sampler_name"),
        ({"denoising_strength": 3}, "denoising_strength"),
        ({"override_settings": {"CLIP_stop_at_last_layers": 99}}, "CLIP_stop_at_last_layers"),
        (
            {"override_settings": {"sd_model_checkpoint": "../../../etc/passwd"}},
            "sd_model_checkpoint",
        ),
        ({"override_settings": {"sd_vae": "/etc/passwd"}}, "sd_vae"),
        ({"override_settings": {"sd_vae": "..\\..\\secret.pt"}}, "sd_vae"),
    ],
)
def test_a_malformed_txt2img_gets_422_naming_the_field(live, body: dict, field: str) -> None:  # type: ignore[type-arg]
    reply = requests.post(f"{live.url}/sdapi/v1/txt2img", json={**SMALL, **body}, timeout=30)
    assert reply.status_code == 422, reply.text
    assert field in reply.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"init_images": ["http://169.254.169.254/latest"]}, "init_images"),
        ({"init_images": ["file:///etc/passwd"]}, "init_images"),
        ({"init_images": ["bm90IGFuIGltYWdl"]}, "init_images"),
        ({"init_images": []}, "init_images"),
        ({"init_images": "notalist"}, "init_images"),
    ],
)
def test_a_malformed_img2img_gets_422_naming_the_field(live, body: dict, field: str) -> None:  # type: ignore[type-arg]
    reply = requests.post(f"{live.url}/sdapi/v1/img2img", json={**SMALL, **body}, timeout=30)
    assert reply.status_code == 422, reply.text
    assert field in reply.text


def test_options_refuse_paths_and_unknown_checkpoints(live) -> None:
    for name in ("../models/Stable-diffusion/tiny.safetensors", "/etc/passwd", "C:\\x.ckpt"):
        reply = requests.post(
            f"{live.url}/sdapi/v1/options", json={"sd_model_checkpoint": name}, timeout=10
        )
        assert reply.status_code == 422 and "sd_model_checkpoint" in reply.text
    reply = requests.post(
        f"{live.url}/sdapi/v1/options", json={"sd_model_checkpoint": "missing"}, timeout=10
    )
    assert reply.status_code == 404
    png = requests.post(
        f"{live.url}/sdapi/v1/png-info",
        json={"image": base64.b64encode(b"junk").decode()},
        timeout=10,
    )
    assert png.status_code == 422 and "image" in png.text


def test_a_full_queue_answers_503_with_retry_after(
    tiny_root: Path, tmp_path: Path, serve_factory
) -> None:
    with serve_factory(tiny_root, tmp_path, queue_size=1) as live:
        long = {**SMALL, "steps": 400, "prompt": "long"}
        url = f"{live.url}/sdapi/v1/txt2img"
        pool = ThreadPoolExecutor(2)
        running = pool.submit(requests.post, url, json=long, timeout=60)
        deadline = time.monotonic() + 30
        while (
            requests.get(f"{live.url}/sdapi/v1/progress", timeout=5).json()["state"][
                "sampling_step"
            ]
            < 1
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        waiting = pool.submit(requests.post, url, json=long, timeout=60)
        while (
            requests.get(f"{live.url}/sdapi/v1/progress", timeout=5).json()["state"]["job_count"]
            < 2
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        refused = requests.post(url, json=SMALL, timeout=10)
        assert refused.status_code == 503 and time.monotonic() - started < 5
        assert int(refused.headers["retry-after"]) > 0
        jobs = requests.get(f"{live.url}/brushwork/v1/jobs", timeout=5).json()
        queued = [job for job in jobs["live"] if job["state"] == "queued"]
        cancelled = requests.post(
            f"{live.url}/brushwork/v1/jobs/{queued[0]['id']}/cancel", timeout=5
        )
        assert cancelled.json()["state"] == "cancelled"
        assert waiting.result(30).status_code == 409
        requests.post(f"{live.url}/sdapi/v1/interrupt", timeout=5)
        assert running.result(30).status_code == 200
        record = {
            job["state"]
            for job in requests.get(f"{live.url}/brushwork/v1/jobs", timeout=5).json()["record"]
        }
        assert {"interrupted", "cancelled"} <= record


def test_two_workers_on_cpu_serve_one_queue_without_mixing_images(
    tiny_root: Path, tmp_path: Path, serve_factory
) -> None:
    with serve_factory(tiny_root, tmp_path, devices=("cpu", "cpu")) as live:
        seeds = list(range(100, 106))

        def draw(seed: int) -> dict:  # type: ignore[type-arg]
            body = {**SMALL, "prompt": f"client {seed}", "seed": seed}
            return requests.post(f"{live.url}/sdapi/v1/txt2img", json=body, timeout=120).json()

        with ThreadPoolExecutor(len(seeds)) as pool:
            replies = list(pool.map(draw, seeds))
        for seed, reply in zip(seeds, replies, strict=True):
            info = json.loads(reply["info"])
            assert info["all_seeds"] == [seed] and info["prompt"] == f"client {seed}"
        jobs = requests.get(f"{live.url}/brushwork/v1/jobs", timeout=5).json()["live"]
        assert len({job["worker"] for job in jobs}) == 2
