"""Every field a client sends: wrong types and impossible values get 422 naming the field; no
name or file field reaches a place outside the library and the server's folders."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
import requests
from PIL import Image

SMALL = {"width": 32, "height": 32, "steps": 2, "sampler_name": "Euler", "seed": 1}


def _png(color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n_iter": 0}, "n_iter"),
        ({"batch_size": 65}, "batch_size"),
        ({"steps": 1.5}, "steps"),
        ({"seed": "lucky"}, "seed"),
        ({"subseed_strength": 2}, "subseed_strength"),
        ({"height": 12}, "height"),
        ({"enable_hr": True, "hr_scale": "big"}, "hr_scale"),
        ({"enable_hr": True, "hr_upscaler": "../../upscaler.pth"}, "hr_upscaler"),
        ({"enable_hr": True, "hr_resize_x": -8}, "hr_resize_x"),
        ({"scheduler": "warp"}, "scheduler"),
        ({"enable_hr": True, "hr_sampler_name": "Nope"}, "hr_sampler_name"),
        ({"prompt": ["not", "text"]}, "prompt"),
        ({"override_settings": {"eta_noise_seed_delta": "x"}}, "eta_noise_seed_delta"),
        ({"override_settings": {"show_progress_type": "Psychic"}}, "show_progress_type"),
        ({"override_settings": "CLIP_stop_at_last_layers=2"}, "override_settings"),
    ],
)
def test_txt2img_fields(live: Any, body: dict[str, Any], field: str) -> None:
    reply = requests.post(f"{live.url}/sdapi/v1/txt2img", json={**SMALL, **body}, timeout=30)
    assert reply.status_code == 422, reply.text
    assert field in reply.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mask": "file:///etc/passwd"}, "mask"),
        ({"mask": "/etc/passwd"}, "mask"),
        ({"mask": "bm90IGFuIGltYWdl"}, "mask"),
        ({"inpainting_fill": 9}, "inpainting_fill"),
        ({"resize_mode": 7}, "resize_mode"),
        ({"mask_blur": -1}, "mask_blur"),
        ({"inpainting_mask_invert": 3}, "inpainting_mask_invert"),
        ({"init_images": ["/etc/passwd"]}, "init_images"),
    ],
)
def test_img2img_fields(live: Any, body: dict[str, Any], field: str) -> None:
    full = {**SMALL, "init_images": [_png()], **body}
    reply = requests.post(f"{live.url}/sdapi/v1/img2img", json=full, timeout=30)
    assert reply.status_code == 422, reply.text
    assert field in reply.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sd_vae": "../VAE/x.safetensors"}, "sd_vae"),
        ({"sd_vae": "/etc/passwd"}, "sd_vae"),
        ({"sd_model_checkpoint": "~/models/x.ckpt"}, "sd_model_checkpoint"),
        ({"sd_model_checkpoint": 5}, "sd_model_checkpoint"),
        ({"live_previews_enable": "yes"}, "live_previews_enable"),
        ({"show_progress_every_n_steps": -5}, "show_progress_every_n_steps"),
        ({"return_grid": 1}, "return_grid"),
    ],
)
def test_options_fields(live: Any, body: dict[str, Any], field: str) -> None:
    reply = requests.post(f"{live.url}/sdapi/v1/options", json=body, timeout=30)
    assert reply.status_code == 422, reply.text
    assert field in reply.text


def test_network_tags_in_a_prompt_only_name_library_files(live: Any) -> None:
    for tag in ("<lora:../../../etc/passwd:1>", "<hypernet:/etc/shadow:1>", "<lora:C:\\x:1>"):
        reply = requests.post(
            f"{live.url}/sdapi/v1/txt2img", json={**SMALL, "prompt": f"a cat {tag}"}, timeout=60
        )
        assert reply.status_code in (404, 422), reply.text
        assert "not in the library" in reply.json()["detail"]  # looked up by name, not read


def test_png_info_reads_the_image_sent_never_a_path(live: Any) -> None:
    for image in ("/etc/passwd", "file:///etc/passwd", "../../etc/passwd"):
        reply = requests.post(f"{live.url}/sdapi/v1/png-info", json={"image": image}, timeout=10)
        assert reply.status_code == 422 and "image" in reply.text
        assert "root:" not in reply.text


@pytest.mark.parametrize(
    "path",
    [
        "/brushwork/v1/library/..%2F..%2Fetc%2Fpasswd/preview",
        "/brushwork/v1/library/0000000000000000/preview",
        "/brushwork/v1/jobs/..%2F..%2Fetc/outputs/0",
        "/brushwork/v1/jobs/nope/outputs/0",
        "/brushwork/v1/train/nope/samples/..%2F..%2Fetc%2Fpasswd",
        "/ui/..%2F..%2F..%2Fetc%2Fpasswd",
        "/ui/../../../etc/passwd",
    ],
)
def test_file_routes_serve_only_what_they_list(live: Any, path: str) -> None:
    reply = requests.get(live.url + path, timeout=10)
    assert reply.status_code == 404, (path, reply.status_code)
    assert "root:" not in reply.text


def test_a_training_request_names_the_option_it_refuses(live: Any) -> None:
    for body, field in (
        ({"train_data_dir": "../../etc"}, "train_data_dir"),
        ({"train_data_dir": "cubes", "output_dir": "/tmp/x"}, "output_dir"),
        ({"train_data_dir": "cubes", "network_dim": "wide"}, "network_dim"),
        ({"train_data_dir": "cubes", "sample_prompts": "/etc/passwd"}, "sample_prompts"),
    ):
        for route in ("train/lora", "train/lora/plan"):
            reply = requests.post(f"{live.url}/brushwork/v1/{route}", json=body, timeout=30)
            assert reply.status_code == 422, (route, reply.text)
            assert field in reply.json()["detail"]
    reply = requests.post(f"{live.url}/brushwork/v1/train/lora", json=["not", "a", "dict"])
    assert reply.status_code == 422
