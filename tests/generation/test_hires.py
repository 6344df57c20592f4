"""Hires fix: a second pass at the larger size, recorded in the infotext and reproducible."""

from __future__ import annotations

import pytest
import torch

from brushwork.generation import GenerationProgress, Generator, request_from_infotext
from brushwork.generation.imaging import image_to_tensor

from .conftest import SIZE, small_request


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest-exact)", "Lanczos"])
def test_hires_fix_doubles_the_size(generator: Generator, upscaler: str) -> None:
    events: list[GenerationProgress] = []
    request = small_request(
        enable_hr=True, hr_scale=2.0, hr_upscaler=upscaler, denoising_strength=0.6
    )
    result = generator.generate(request, progress=events.append)
    assert result.images[0].size == (2 * SIZE, 2 * SIZE)
    assert [e.phase for e in events] == ["sampling"] * 3 + ["hires"] * 3
    infotext = result.infotexts[0]
    assert f"Size: {SIZE}x{SIZE}," in infotext  # the first pass's size, as A1111 writes it
    assert f"Hires upscale: 2, Hires upscaler: {upscaler}" in infotext
    assert "Denoising strength: 0.6," in infotext


def test_hires_steps_and_target_size_with_another_aspect(generator: Generator) -> None:
    events: list[GenerationProgress] = []
    request = small_request(
        enable_hr=True,
        hr_resize_x=64,
        hr_resize_y=48,
        hr_second_pass_steps=2,
        denoising_strength=0.5,
    )
    result = generator.generate(request, progress=events.append)
    assert result.images[0].size == (64, 48)  # scaled to cover 64x64, middle rows kept
    assert sum(e.phase == "hires" for e in events) == 2
    assert "Hires resize: 64x48, Hires steps: 2," in result.infotexts[0]


def test_a_hires_image_is_drawn_again_from_its_infotext(generator: Generator) -> None:
    first = generator.generate(
        small_request(seed=5, enable_hr=True, hr_scale=1.5, denoising_strength=0.7)
    )
    request, _ = request_from_infotext(first.infotexts[0])
    again = generator.generate(request)
    assert again.infotexts == first.infotexts
    assert torch.equal(image_to_tensor(again.images[0]), image_to_tensor(first.images[0]))
