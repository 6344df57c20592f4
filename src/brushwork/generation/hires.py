"""Hires fix: the first pass's latents upscaled, then an img2img pass at the larger size.

As A1111's ``sample_hr_pass``: a "Latent ..." upscaler interpolates the latents (``Latent`` is
bilinear without antialiasing); an image upscaler decodes each image, converts it to 8-bit
pixels, resizes it (Lanczos) and encodes it again. With both hires sides given and another
aspect ratio, the latents are scaled to cover the target and the middle is kept. Then fresh
noise from the same seeds at the new size, and exactly ``hr_second_pass_steps`` (else
``steps``) steps over the tail of a longer schedule. The hires prompts are scheduled with the
first pass's steps and the hires steps (``[a:b:1.5]`` switches halfway through the hires pass).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from brushwork.conditioning import PromptEncoder, schedule_prompt
from brushwork.generation.guidance import Guidance, UNetCall
from brushwork.generation.imaging import image_to_tensor, sample_to_image
from brushwork.generation.img2img import encode_images, latent_factor
from brushwork.generation.infotext import sampler_settings
from brushwork.generation.request import (
    IMAGE_UPSCALERS,
    LATENT_UPSCALE_MODES,
    GenerationRequest,
)
from brushwork.generation.sampling import (
    LatentsReport,
    PassPlan,
    StepReport,
    img2img_plan,
    sample_pass,
)
from brushwork.generation.sampling import schedule_steps as prompt_steps
from brushwork.loading import LoadedModel, decode_latents
from brushwork.prompt import extract_networks
from brushwork.samplers import BatchNoise, resolve_sampler_name

NoiseMaker = Callable[[tuple[int, ...], PassPlan], BatchNoise]


@dataclass(frozen=True, eq=False)
class HiresPass:
    """The second pass of a hires-fix job."""

    plan: PassPlan
    guidance: Guidance
    size: tuple[int, int]  # (width, height) the latents are upscaled to


def plan_hires(model: LoadedModel, request: GenerationRequest, encoder: PromptEncoder) -> HiresPass:
    """Sampler, sigmas and prompts of the hires pass."""
    sampler_name, scheduler = request.sampler_name, request.scheduler
    if request.hr_sampler_name:
        sampler_name, scheduler = resolve_sampler_name(
            request.hr_sampler_name, request.hr_scheduler or scheduler
        )
    elif request.hr_scheduler:
        scheduler = request.hr_scheduler
    settings = sampler_settings(request, sampler_name)
    ensd = request.eta_noise_seed_delta if settings.uses_ensd else 0
    plan = img2img_plan(
        model,
        sampler_name,
        scheduler,
        request.hires_steps,
        request.denoising_strength,
        settings.options,
        ensd,
        fix_steps=True,
    )
    text, _ = extract_networks(request.hr_prompt or request.prompt)
    negative = request.hr_negative_prompt or request.negative_prompt
    total = prompt_steps(plan.sampler, request.hires_steps)
    cond = schedule_prompt(encoder, text, request.steps, hires_steps=total)
    uncond = schedule_prompt(encoder, negative, request.steps, hires_steps=total, allow_and=False)
    return HiresPass(plan, Guidance(cond, uncond, request.cfg_scale), request.hires_size)


def upscale_image(image: Image.Image, width: int, height: int, upscaler: str) -> Image.Image:
    """An image upscaler: one resize to the scale, then to the exact size if that differs."""
    resample = IMAGE_UPSCALERS[upscaler]
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def upscale_latents(
    model: LoadedModel, latents: Tensor, request: GenerationRequest, size: tuple[int, int]
) -> Tensor:
    """The first pass's latents at the hires size, cropped to the target's aspect ratio."""
    width, height = size
    factor = latent_factor(model)
    latent_size = (height // factor, width // factor)
    if request.hr_upscaler in LATENT_UPSCALE_MODES:
        mode, antialias = LATENT_UPSCALE_MODES[request.hr_upscaler]
        samples = F.interpolate(latents, size=latent_size, mode=mode, antialias=antialias)
    else:
        pixels = []
        for index in range(latents.shape[0]):
            decoded = decode_latents(model, latents[index : index + 1])[0]
            image = upscale_image(sample_to_image(decoded), width, height, request.hr_upscaler)
            pixels.append(image_to_tensor(image))
        samples = encode_images(model, pixels)
    crop_x, crop_y = request.hires_crop(factor)
    return samples[
        :,
        :,
        crop_y // 2 : samples.shape[2] - (crop_y + 1) // 2,
        crop_x // 2 : samples.shape[3] - (crop_x + 1) // 2,
    ]


def run_hires(
    model: LoadedModel,
    unet: UNetCall,
    request: GenerationRequest,
    hires: HiresPass,
    latents: Tensor,
    make_noise: NoiseMaker,
    *,
    cancel: threading.Event | None,
    report: StepReport | None,
    on_latents: LatentsReport | None = None,
) -> Tensor:
    """Upscale and run the second pass for one batch."""
    samples = upscale_latents(model, latents, request, hires.size)
    noise = make_noise(tuple(samples.shape[1:]), hires.plan)
    return sample_pass(
        model,
        unet,
        hires.guidance,
        hires.plan,
        noise,
        size=hires.size,
        start=samples,
        cancel=cancel,
        report=report,
        on_latents=on_latents,
    )
