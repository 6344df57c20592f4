"""Requests are checked when built: names resolved, bad values named."""

from __future__ import annotations

import pytest
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.generation import GenerationRequest, MaskedContent
from brushwork.samplers import SAMPLERS


def test_an_unknown_sampler_fails_with_the_list_of_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        GenerationRequest(sampler_name="Euler b")
    message = str(caught.value)
    assert "Euler b" in message
    assert all(sampler.name in message for sampler in SAMPLERS)


def test_an_unknown_schedule_fails() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        GenerationRequest(scheduler="Fancy")


def test_a_legacy_sampler_name_splits_into_sampler_and_schedule() -> None:
    request = GenerationRequest(sampler_name="DPM++ 2M Karras")
    assert (request.sampler_name, request.scheduler) == ("DPM++ 2M", "Karras")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 100),
        ("height", 0),
        ("steps", 0),
        ("batch_size", 0),
        ("clip_skip", 13),
        ("denoising_strength", 1.5),
        ("cfg_scale", float("nan")),
        ("seed", -2),
        ("inpainting_fill", 7),
        ("resize_mode", 9),
        ("rng", "gpu"),
        ("emphasis", "Loud"),
    ],
)
def test_bad_values_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field.split("_")[0] if field != "rng" else "RNG"):
        GenerationRequest(**{field: value})  # type: ignore[arg-type]


def test_a_mask_without_an_init_image_is_refused() -> None:
    with pytest.raises(ConfigError, match="init image"):
        GenerationRequest(mask=Image.new("L", (8, 8)))


def test_init_images_must_be_one_or_one_per_image() -> None:
    image = Image.new("RGB", (8, 8))
    GenerationRequest(init_images=(image,), batch_size=3)
    with pytest.raises(ConfigError, match="2 init images for a batch of 3"):
        GenerationRequest(init_images=(image, image), batch_size=3)


def test_hires_sizes_follow_a1111() -> None:
    base = {"width": 512, "height": 768, "enable_hr": True}
    assert GenerationRequest(**base, hr_scale=1.5).hires_size == (768, 1152)
    assert GenerationRequest(**base, hr_resize_x=1024).hires_size == (1024, 1536)
    assert GenerationRequest(**base, hr_resize_y=1024).hires_size == (682, 1024)
    both = GenerationRequest(**base, hr_resize_x=1024, hr_resize_y=1024)
    assert both.hires_size == (1024, 1536)  # covers the target, then crops the middle
    assert both.hires_crop() == (0, 64)


def test_an_unknown_hires_upscaler_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="Latent \\(bicubic\\)"):
        GenerationRequest(enable_hr=True, hr_upscaler="ESRGAN_4x")


def test_masked_content_accepts_a1111_numbers() -> None:
    request = GenerationRequest(
        init_images=(Image.new("RGB", (8, 8)),), mask=Image.new("L", (8, 8)), inpainting_fill=2
    )
    assert request.inpainting_fill is MaskedContent.LATENT_NOISE
    assert request.mode == "img2img"
