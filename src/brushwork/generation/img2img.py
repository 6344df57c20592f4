"""img2img and inpainting inputs: init images, the mask, the initial latent and the overlay.

The steps are A1111's (``StableDiffusionProcessingImg2Img.init``), done once per job:

1. the mask: alpha or grey, rounded, inverted if asked, blurred (x then y); "only masked" crops
   its padded bounding box (stretched to the request's aspect ratio) and scales it to the
   request's size; "whole picture" resizes it with the resize mode, and the overlay mask is
   the blurred mask doubled (so only pixels the blur barely touched stay partly original);
2. each init image: flattened on white, resized with the resize mode (not for latent upscale
   or "only masked"), its overlay taken, cropped for "only masked", the masked area filled
   for masked content "fill";
3. the VAE encodes each image (the posterior's mean, scaled by the checkpoint's factor; A1111
   draws a sample of the posterior with an unseeded generator, so its init latent is not
   reproducible); latent upscale interpolates the latent to the request's size (bilinear);
4. the latent mask is the mask resized to latent size (bicubic), rounded if asked; masked
   content "latent noise" replaces the masked latent with seeded noise, "latent nothing" with 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from brushwork.generation.imaging import (
    CropBox,
    apply_overlay,
    binary_mask,
    blur_mask,
    crop_region,
    expand_to_ratio,
    fill_masked,
    image_to_tensor,
    latent_mask,
    mask_to_tensor,
    overlay_for,
    resize_image,
    tensor_to_mask,
)
from brushwork.generation.request import (
    GenerationRequest,
    MaskedContent,
    ResizeMode,
)
from brushwork.loading import LoadedModel
from brushwork.samplers import batch_noise

logger = logging.getLogger(__name__)

BACKGROUND = (255, 255, 255)


@dataclass(frozen=True, eq=False)
class PreparedMask:
    """The mask at processing size, the one for the overlay, and where to paste back."""

    processing: Image.Image  # request size; white = paint
    for_overlay: Image.Image
    paste_to: CropBox | None  # "only masked": the box of the original image


@dataclass(frozen=True, eq=False)
class Img2ImgInputs:
    """What an img2img pass starts from."""

    init_latent: Tensor  # (B, C, h, w), float32, on the model's device
    paint: Tensor | None  # (1, 1, h, w): 1 where to paint; None without a mask
    overlays: tuple[Image.Image, ...]  # one per image (empty without a mask)
    paste_to: CropBox | None

    def finish(self, image: Image.Image, index: int) -> Image.Image:
        """A decoded result with the original pixels put back outside the mask."""
        if not self.overlays:
            return image
        return apply_overlay(image, self.overlays[index], self.paste_to)


def prepare_mask(request: GenerationRequest) -> PreparedMask | None:
    """Step 1 of the module docstring (None: no mask, or "only masked" with an empty mask)."""
    if request.mask is None:
        return None
    mask = binary_mask(request.mask, round_values=request.mask_round)
    if request.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    mask = blur_mask(mask, request.mask_blur_x, request.mask_blur_y)
    width, height = request.width, request.height
    if request.inpaint_full_res:
        box = crop_region(mask, request.inpaint_full_res_padding)
        if box is None:
            logger.warning("only masked: the mask is empty; drawing over the whole picture")
            return None
        box = expand_to_ratio(box, width, height, mask.size)
        processing = resize_image(ResizeMode.RESIZE_AND_FILL, mask.crop(box), width, height)
        return PreparedMask(processing, mask, box)
    processing = resize_image(request.resize_mode, mask, width, height)
    doubled = tensor_to_mask(mask_to_tensor(processing) * 255.0 * 2.0)
    return PreparedMask(processing, doubled, None)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        background.alpha_composite(image.convert("RGBA"))
        return background.convert("RGB")
    return image.convert("RGB")


def _prepare_image(
    image: Image.Image, request: GenerationRequest, mask: PreparedMask | None
) -> tuple[Image.Image, Image.Image | None]:
    """Step 2: the image to encode, and its overlay."""
    width, height = request.width, request.height
    image = _flatten(image)
    only_masked = mask is not None and mask.paste_to is not None
    if not only_masked and request.resize_mode != ResizeMode.LATENT_UPSCALE:
        image = resize_image(request.resize_mode, image, width, height)
    overlay = None
    if mask is not None:
        overlay_mask = mask.for_overlay
        if overlay_mask.size != image.size:
            overlay_mask = resize_image(request.resize_mode, overlay_mask, *image.size)
        overlay = overlay_for(image, overlay_mask)
        if mask.paste_to is not None:
            image = resize_image(
                ResizeMode.RESIZE_AND_FILL, image.crop(mask.paste_to), width, height
            )
        if request.inpainting_fill != MaskedContent.ORIGINAL:
            image = fill_masked(image, mask.processing)
    return image, overlay


def latent_factor(model: LoadedModel) -> int:
    """How many pixels one latent cell covers: 8 for every real SD VAE (one halving per VAE
    block after the first; the tiny test VAEs have fewer blocks)."""
    return int(2 ** (len(model.vae.config.block_out_channels) - 1))


def encode_images(model: LoadedModel, pixels: Sequence[Tensor]) -> Tensor:
    """Images (CHW in [0, 1]) -> scaled latents, one VAE call per image (as A1111 does)."""
    latents = []
    with torch.inference_mode():
        for image in pixels:
            latents.append(_encode_one(model, image.unsqueeze(0) * 2.0 - 1.0))
    return torch.cat(latents)


def _encode_one(model: LoadedModel, image: Tensor) -> Tensor:
    sample = image.to(model.device, model.vae_dtype)
    latent = model.vae.encode(sample).latent_dist.mean
    if model.vae_dtype != torch.float32 and bool(torch.isnan(latent).any()):
        logger.warning(
            "the VAE gave NaN in %s while encoding; switching it to fp32", model.vae_dtype
        )
        model.vae.to(torch.float32)
        model.vae_dtype = torch.float32
        latent = model.vae.encode(sample.float()).latent_dist.mean
    scaled: Tensor = latent.float() * model.vae_scaling_factor
    return scaled


def prepare_img2img(
    model: LoadedModel, request: GenerationRequest, seeds: Sequence[int]
) -> Img2ImgInputs:
    """Everything above, for one batch (``seeds``: the first batch's, for "latent noise")."""
    mask = prepare_mask(request)
    sources = list(request.init_images)
    if len(sources) == 1:
        sources = sources * request.batch_size
    prepared = [_prepare_image(image, request, mask) for image in sources]
    init_latent = encode_images(model, [image_to_tensor(image) for image, _ in prepared])
    factor = latent_factor(model)
    size = (request.height // factor, request.width // factor)
    if request.resize_mode == ResizeMode.LATENT_UPSCALE and init_latent.shape[-2:] != size:
        init_latent = F.interpolate(init_latent, size=size, mode="bilinear")
    if mask is None:
        return Img2ImgInputs(init_latent, None, (), None)
    paint = latent_mask(mask.processing, size[1], size[0], round_values=request.mask_round)
    paint = paint.view(1, 1, *size).to(init_latent.device)
    if request.inpainting_fill == MaskedContent.LATENT_NOISE:
        noise = batch_noise(init_latent.shape[1:], seeds, source=request.rng).first()
        init_latent = init_latent * (1.0 - paint) + noise.to(init_latent.device) * paint
    elif request.inpainting_fill == MaskedContent.LATENT_NOTHING:
        init_latent = init_latent * (1.0 - paint)
    overlays = tuple(overlay for _, overlay in prepared if overlay is not None)
    return Img2ImgInputs(init_latent, paint, overlays, mask.paste_to)
