"""The loss of one training batch through a UNet: the step LoRA and full fine-tuning share.

Latents come from the batch's cache (unscaled, as kohya caches them) or are sampled from the VAE
with the batch's generator; the captions go through the (possibly training) text encoder; the
noising, target and weighting are `objective`'s.
"""

from __future__ import annotations

from typing import Any

import torch

from brushwork.loading import LoadedModel
from brushwork.training.objective import ObjectiveSettings, denoising_loss, noise_latents
from brushwork.training.text import CaptionEncoder


def batch_latents(model: LoadedModel, batch: Any, generator: torch.Generator) -> torch.Tensor:
    """The batch's clean latents, scaled by the model's VAE factor (float32)."""
    device, scale = model.device, model.vae_scaling_factor
    if batch.latents is not None:
        cached: torch.Tensor = batch.latents.to(device, torch.float32) * scale
        return cached
    with torch.no_grad():
        images = batch.images.to(device, model.vae_dtype)
        sampled: torch.Tensor = model.vae.encode(images).latent_dist.sample(generator=generator)
    return sampled.float() * scale


def denoising_batch_loss(
    unet: torch.nn.Module,
    model: LoadedModel,
    captions: CaptionEncoder,
    objective: ObjectiveSettings,
    alphas_cumprod: torch.Tensor,
    batch: Any,
    generator: torch.Generator,
    *,
    text_grad: bool,
) -> torch.Tensor:
    """Noise the batch, predict with `unet` (the prepared module), weight, average."""
    latents = batch_latents(model, batch, generator)
    with torch.set_grad_enabled(text_grad):
        context = captions.encode(batch.captions, model.device)
    noised = noise_latents(latents, alphas_cumprod, objective, generator)
    prediction = unet(noised.noisy, noised.timesteps, encoder_hidden_states=context).sample
    return denoising_loss(prediction, noised, alphas_cumprod, objective, batch.loss_weights)
