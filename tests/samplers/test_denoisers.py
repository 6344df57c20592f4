"""Epsilon and v-prediction networks wrapped as denoisers; LCM's boundary condition."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers import (
    ModelSigmas,
    batch_noise,
    get_sampler,
    lcm_boundary_denoiser,
    lcm_model_sigmas,
    make_sigmas,
    network_denoiser,
)

from .conftest import MU


def _per_item(value: Tensor, like: Tensor) -> Tensor:
    return value.reshape(-1, *([1] * (like.ndim - 1)))


class PointNetwork:
    """The exact network for data at MU, in variance-preserving scale at model timesteps."""

    def __init__(self, table: ModelSigmas, prediction: str) -> None:
        self.table = table
        self.prediction = prediction
        self.timesteps: list[Tensor] = []

    def __call__(self, x_scaled: Tensor, t: Tensor) -> Tensor:
        self.timesteps.append(t)
        sigma = _per_item(self.table.t_to_sigma(t), x_scaled)
        alpha = 1 / (1 + sigma**2) ** 0.5
        eps = (x_scaled / alpha - MU) / sigma
        if self.prediction == "epsilon":
            return eps
        return alpha * eps - sigma * alpha * MU  # v = alpha * eps - sigma_vp * x0


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_network_denoiser_recovers_the_data(prediction: str, table: ModelSigmas) -> None:
    network = PointNetwork(table, prediction)
    denoiser = network_denoiser(network, table, prediction)  # type: ignore[arg-type]
    sigma = table.sigmas[[100, 700]]
    x = MU + torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)) * _per_item(
        sigma, torch.zeros(2, 1, 1)
    )
    torch.testing.assert_close(denoiser(x, sigma), torch.full_like(x, MU), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        network.timesteps[0], torch.tensor([100.0, 700.0]), atol=1e-3, rtol=0
    )


def test_network_denoiser_drives_a_sampler(table: ModelSigmas) -> None:
    denoiser = network_denoiser(PointNetwork(table, "epsilon"), table)
    sigmas = make_sigmas("DPM++ 2M", 6, table)
    noise = batch_noise((2, 2), [4])
    out = get_sampler("DPM++ 2M")(denoiser, noise.first() * sigmas[0], sigmas, noise=noise)
    torch.testing.assert_close(out, torch.full_like(out, MU), atol=1e-4, rtol=0)


def test_unknown_prediction_type_is_refused(table: ModelSigmas) -> None:
    with pytest.raises(ConfigError, match="epsilon, v_prediction"):
        network_denoiser(lambda x, t: x, table, "sample")  # type: ignore[arg-type]


def test_lcm_boundary_condition_uses_the_snapped_timestep(table: ModelSigmas) -> None:
    lcm = lcm_model_sigmas(table)
    denoiser = lcm_boundary_denoiser(lambda x, sigma: torch.full_like(x, MU), lcm)
    x = torch.full((1, 3), 2.0)
    sigma = torch.tensor([float(table.sigmas[19]) * 1.01])  # snaps to timestep 19
    scaled = 190.0
    c_skip = 0.25 / (scaled**2 + 0.25)
    c_out = scaled / (scaled**2 + 0.25) ** 0.5
    torch.testing.assert_close(denoiser(x, sigma), c_out * MU + c_skip * x, rtol=1e-6, atol=0)
