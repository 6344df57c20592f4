"""The denoising objective: DDPM noising on SD's scaled-linear schedule, targets and loss weights.

    noisy = √ᾱ_t · x₀ + √(1-ᾱ_t) · ε
    target = ε (epsilon models), or v = √ᾱ_t · ε - √(1-ᾱ_t) · x₀ (v-parameterisation)
    SNR_t = ᾱ_t / (1-ᾱ_t); min-SNR-γ weight = min(SNR, γ)/SNR, or min(SNR, γ)/(SNR+1) for v
    (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy";
    sd-scripts' `apply_snr_weight`)

Noise offset (sd-scripts' `--noise_offset`) adds `offset · N(0,1)` per sample and channel, so
the model learns to move whole-image brightness. All randomness comes from the generator passed
in, so a batch's noise depends on the batch, not on the process or the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from brushwork.core.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class ObjectiveSettings:
    prediction_type: str = "epsilon"
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    min_timestep: int = 0
    max_timestep: int = 1000

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"unknown prediction type {self.prediction_type!r}")
        if not 0 <= self.min_timestep < self.max_timestep <= 1000:
            raise ConfigError(
                f"min_timestep {self.min_timestep} / max_timestep {self.max_timestep}: "
                "need 0 <= min_timestep < max_timestep <= 1000"
            )
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ConfigError(f"min_snr_gamma is {self.min_snr_gamma}; it must be > 0")


@dataclass(frozen=True)
class NoisedBatch:
    noisy: torch.Tensor
    timesteps: torch.Tensor  # [B] long
    target: torch.Tensor


def sample_noise(
    latents: torch.Tensor, generator: torch.Generator, *, noise_offset: float = 0.0
) -> torch.Tensor:
    """ε ~ N(0, I) like `latents`, plus the per-channel offset when `noise_offset` > 0."""
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    if noise_offset:
        b, c = latents.shape[:2]
        offset = torch.randn((b, c, 1, 1), generator=generator, dtype=torch.float32)
        noise = noise + noise_offset * offset
    return noise.to(latents.device, latents.dtype)


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ/(1-ᾱ) at each timestep (float32)."""
    abar = alphas_cumprod.float().to(timesteps.device)[timesteps]
    return abar / (1.0 - abar)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-γ."""
    ratio = snr(alphas_cumprod, timesteps)
    clipped = torch.clamp(ratio, max=gamma)
    denominator = ratio + 1.0 if prediction_type == "v_prediction" else ratio
    return clipped / denominator


def noise_latents(
    latents: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    settings: ObjectiveSettings,
    generator: torch.Generator,
) -> NoisedBatch:
    """Pick timesteps and noise for a batch of clean latents; return input and target."""
    noise = sample_noise(latents, generator, noise_offset=settings.noise_offset)
    timesteps = torch.randint(
        settings.min_timestep, settings.max_timestep, (latents.shape[0],), generator=generator
    ).to(latents.device)
    abar = alphas_cumprod.to(latents.device, torch.float32)[timesteps].view(-1, 1, 1, 1)
    signal, sigma = abar.sqrt(), (1.0 - abar).sqrt()
    clean = latents.float()
    noisy = (signal * clean + sigma * noise.float()).to(latents.dtype)
    if settings.prediction_type == "v_prediction":
        target = signal * noise.float() - sigma * clean
    else:
        target = noise.float()
    return NoisedBatch(noisy, timesteps, target)


def denoising_loss(
    prediction: torch.Tensor,
    noised: NoisedBatch,
    alphas_cumprod: torch.Tensor,
    settings: ObjectiveSettings,
    loss_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error per sample, min-SNR- and per-sample-weighted, averaged (float32)."""
    per_sample = torch.nn.functional.mse_loss(
        prediction.float(), noised.target.float(), reduction="none"
    ).mean(dim=(1, 2, 3))
    if settings.min_snr_gamma is not None:
        per_sample = per_sample * min_snr_weights(
            alphas_cumprod, noised.timesteps, settings.min_snr_gamma, settings.prediction_type
        )
    if loss_weights is not None:
        per_sample = per_sample * loss_weights.to(per_sample.device, torch.float32)
    return per_sample.mean()
