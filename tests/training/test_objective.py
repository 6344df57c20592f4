"""The denoising objective: noising, targets, min-SNR weights and noise offset."""

from __future__ import annotations

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.samplers.sigmas import sd_alphas_cumprod
from brushwork.training.objective import (
    NoisedBatch,
    ObjectiveSettings,
    denoising_loss,
    min_snr_weights,
    noise_latents,
    sample_noise,
)

ALPHAS = sd_alphas_cumprod(1000, 0.00085, 0.012)


def test_min_snr_weight_matches_hand_computation() -> None:
    timesteps = torch.tensor([0, 500, 999])
    weights = min_snr_weights(ALPHAS, timesteps, 5.0, "epsilon")
    v_weights = min_snr_weights(ALPHAS, timesteps, 5.0, "v_prediction")
    for i, t in enumerate(timesteps.tolist()):
        abar = float(ALPHAS[t])
        snr = abar / (1 - abar)
        assert float(weights[i]) == pytest.approx(min(snr, 5.0) / snr, rel=1e-5)
        assert float(v_weights[i]) == pytest.approx(min(snr, 5.0) / (snr + 1), rel=1e-5)
    assert float(weights[0]) < 0.01 and float(weights[2]) == pytest.approx(1.0)


def test_noising_and_targets_follow_the_ddpm_formulas() -> None:
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    for prediction in ("epsilon", "v_prediction"):
        settings = ObjectiveSettings(prediction_type=prediction)
        noised = noise_latents(latents, ALPHAS, settings, torch.Generator().manual_seed(2))
        noise = sample_noise(latents, torch.Generator().manual_seed(2))
        abar = ALPHAS[noised.timesteps].view(-1, 1, 1, 1)
        torch.testing.assert_close(noised.noisy, abar.sqrt() * latents + (1 - abar).sqrt() * noise)
        expected = (
            noise if prediction == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * latents
        )
        torch.testing.assert_close(noised.target, expected)


def test_the_same_generator_gives_the_same_batch_noise() -> None:
    latents = torch.zeros(3, 4, 4, 4)
    settings = ObjectiveSettings(min_timestep=100, max_timestep=200)
    a = noise_latents(latents, ALPHAS, settings, torch.Generator().manual_seed(9))
    b = noise_latents(latents, ALPHAS, settings, torch.Generator().manual_seed(9))
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.timesteps, b.timesteps)
    assert a.timesteps.min() >= 100 and a.timesteps.max() < 200


def test_noise_offset_shifts_each_channel_by_one_draw() -> None:
    latents = torch.zeros(2, 4, 16, 16)
    plain = sample_noise(latents, torch.Generator().manual_seed(4))
    offset = sample_noise(latents, torch.Generator().manual_seed(4), noise_offset=0.5)
    shift = offset - plain
    per_channel = shift.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))
    channel = torch.Generator().manual_seed(4)
    torch.randn(latents.shape, generator=channel)
    expected = 0.5 * torch.randn((2, 4, 1, 1), generator=channel)
    torch.testing.assert_close(shift[..., :1, :1], expected)


def test_loss_is_weighted_per_sample() -> None:
    target = torch.zeros(2, 1, 2, 2)
    noised = NoisedBatch(target, torch.tensor([999, 999]), target)
    prediction = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])
    settings = ObjectiveSettings()
    assert float(denoising_loss(prediction, noised, ALPHAS, settings)) == pytest.approx(2.5)
    weighted = denoising_loss(prediction, noised, ALPHAS, settings, torch.tensor([1.0, 0.5]))
    assert float(weighted) == pytest.approx((1 + 4 * 0.5) / 2)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="min_timestep"):
        ObjectiveSettings(min_timestep=10, max_timestep=5)
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        ObjectiveSettings(min_snr_gamma=0)
