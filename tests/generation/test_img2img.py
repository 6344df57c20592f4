"""img2img and inpainting: denoise 0 is the VAE round trip; unmasked pixels stay the original."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from brushwork.generation import GenerationProgress, Generator, MaskedContent, ResizeMode
from brushwork.generation.imaging import (
    blur_mask,
    image_to_tensor,
    resize_image,
    sample_to_image,
)
from brushwork.generation.img2img import encode_images
from brushwork.loading import LoadedModel, decode_latents

from .conftest import SIZE, small_request


@pytest.fixture(scope="module")
def init_image(generator: Generator) -> Image.Image:
    return generator.generate(small_request(seed=99, prompt="a garden")).images[0]


def _mask(box: tuple[int, int, int, int], size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_denoise_zero_returns_the_input_through_the_vae(
    generator: Generator, sd1: LoadedModel, init_image: Image.Image
) -> None:
    result = generator.generate(small_request(init_images=(init_image,), denoising_strength=0))
    with torch.inference_mode():
        latent = encode_images(sd1, [image_to_tensor(init_image)])
        round_trip = sample_to_image(decode_latents(sd1, latent)[0])
    assert torch.equal(image_to_tensor(result.images[0]), image_to_tensor(round_trip))
    assert result.timings.sampling_steps == 0
    assert "Denoising strength: 0," in result.infotexts[0]


def test_denoise_walks_the_tail_of_the_schedule(
    generator: Generator, init_image: Image.Image
) -> None:
    events: list[GenerationProgress] = []
    request = small_request(init_images=(init_image,), denoising_strength=0.5, steps=8)
    result = generator.generate(request, progress=events.append)
    assert events[-1].steps == 5  # t_enc = int(0.5 * 8) = 4: steps from index 3 of 8
    unchanged = generator.generate(small_request(init_images=(init_image,), denoising_strength=0))
    assert not torch.equal(image_to_tensor(result.images[0]), image_to_tensor(unchanged.images[0]))


@pytest.mark.parametrize("fill", list(MaskedContent))
@pytest.mark.parametrize("only_masked", [False, True])
def test_inpaint_keeps_every_unmasked_pixel(
    generator: Generator, init_image: Image.Image, fill: MaskedContent, only_masked: bool
) -> None:
    blur = 1  # kernel 7: the blurred mask reaches 3 pixels beyond the box
    request = small_request(
        init_images=(init_image,),
        mask=_mask((10, 8, 22, 20)),
        mask_blur_x=blur,
        mask_blur_y=blur,
        inpainting_fill=fill,
        inpaint_full_res=only_masked,
        inpaint_full_res_padding=2,
        denoising_strength=0.9,
    )
    result = generator.generate(request)
    out, original = image_to_tensor(result.images[0]), image_to_tensor(init_image)
    outside = torch.ones(SIZE, SIZE, dtype=torch.bool)
    outside[8 - 3 : 20 + 3, 10 - 3 : 22 + 3] = False
    assert torch.equal(out[:, outside], original[:, outside])
    assert (out[:, 10:18, 12:20] - original[:, 10:18, 12:20]).abs().mean() > 0.02
    assert f"Masked content: {fill.label}" in result.infotexts[0]


def test_only_masked_pastes_back_into_the_original_size(
    generator: Generator, init_image: Image.Image
) -> None:
    big = init_image.resize((48, 40))
    request = small_request(
        init_images=(big,),
        mask=_mask((30, 10, 40, 20), big.size),
        mask_blur_x=0,
        mask_blur_y=0,
        inpaint_full_res=True,
        inpaint_full_res_padding=4,
    )
    result = generator.generate(request)
    assert result.images[0].size == (48, 40)
    out, original = image_to_tensor(result.images[0]), image_to_tensor(big)
    assert torch.equal(out[:, :, :26], original[:, :, :26])
    assert not torch.equal(out[:, 10:20, 30:40], original[:, 10:20, 30:40])
    assert "Inpaint area: Only masked, Masked area padding: 4" in result.infotexts[0]


def test_an_inverted_mask_paints_the_outside(generator: Generator, init_image: Image.Image) -> None:
    request = small_request(
        init_images=(init_image,),
        mask=_mask((8, 8, 24, 24)),
        mask_blur_x=0,
        mask_blur_y=0,
        inpainting_mask_invert=True,
    )
    out = image_to_tensor(generator.generate(request).images[0])
    original = image_to_tensor(init_image)
    assert torch.equal(out[:, 8:24, 8:24], original[:, 8:24, 8:24])
    assert not torch.equal(out[:, :4], original[:, :4])


def test_resize_modes_fit_the_image_as_a1111() -> None:
    wide = Image.new("RGB", (40, 20), "red")
    wide.paste((0, 0, 255), (0, 0, 4, 20))  # a blue left edge
    assert resize_image(ResizeMode.JUST_RESIZE, wide, 16, 16).size == (16, 16)
    cropped = resize_image(ResizeMode.CROP_AND_RESIZE, wide, 16, 16)
    assert cropped.getpixel((0, 8))[0] > 200  # the blue edge is cropped away
    filled = resize_image(ResizeMode.RESIZE_AND_FILL, Image.new("RGB", (40, 20), "red"), 16, 16)
    assert filled.size == (16, 16)
    assert filled.getpixel((8, 0))[0] > 200 and filled.getpixel((8, 15))[0] > 200  # bands filled


def test_mask_blur_spreads_as_far_as_a1111s_kernel() -> None:
    mask = _mask((16, 16, 17, 17))
    row = image_to_tensor(blur_mask(mask, 2, 0).convert("RGB"))[0, 16]
    reach = int(2.5 * 2 + 0.5)  # the kernel is 2 * reach + 1 wide
    assert row[16 + reach] > 0 and row[16 - reach] > 0
    assert row[16 + reach + 1] == 0 and row[16 - reach - 1] == 0
    assert torch.equal(row[16 - reach : 17 + reach], row[16 - reach : 17 + reach].flip(0))
    assert row.sum() * 255 == pytest.approx(255, abs=6)  # the kernel sums to one
