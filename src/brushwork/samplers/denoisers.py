"""Turn a network that predicts noise (epsilon) or velocity (v) into a :data:`Denoiser`.

k-diffusion's wrappers (crowsonkb/k-diffusion, MIT): the network sees ``x / sqrt(sigma**2 + 1)``
(back in variance-preserving scale) and the model timestep of ``sigma``. v-prediction: Salimans &
Ho 2022, "Progressive Distillation". The LCM boundary condition: Song et al. 2023, "Consistency
Models" (sigma_data 0.5, timesteps scaled by 10), applied as A1111 applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers.sigmas import ModelSigmas
from brushwork.samplers.types import Denoiser

Prediction = Literal["epsilon", "v_prediction"]
NetworkCall = Callable[[Tensor, Tensor], Tensor]
"""``network(scaled_x, timesteps) -> output`` (e.g. a UNet with its conditioning bound)."""

LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0


def _per_item(value: Tensor, like: Tensor) -> Tensor:
    return value.reshape(value.shape + (1,) * (like.ndim - value.ndim))


def network_denoiser(
    network: NetworkCall, table: ModelSigmas, prediction: Prediction = "epsilon"
) -> Denoiser:
    """A denoiser over ``network``, which predicts epsilon or v at model timesteps."""
    if prediction not in ("epsilon", "v_prediction"):
        raise ConfigError(
            f"unknown prediction type {prediction!r}; valid types: epsilon, v_prediction"
        )

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        s = _per_item(sigma, x)
        c_in = 1 / (s**2 + 1) ** 0.5
        output = network(x * c_in, table.sigma_to_t(sigma))
        if prediction == "epsilon":
            return x - output * s
        return output * (-s * c_in) + x / (s**2 + 1)

    return denoise


def lcm_boundary_denoiser(model: Denoiser, lcm_table: ModelSigmas) -> Denoiser:
    """Apply LCM's consistency boundary condition ``c_skip * x + c_out * denoised``.

    ``lcm_table`` is the table from :func:`~brushwork.samplers.sigmas.lcm_model_sigmas`; its
    snapped timestep sets the scalings.
    """

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        scaled = _per_item(lcm_table.sigma_to_t(sigma, quantize=True), x) * LCM_TIMESTEP_SCALING
        c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
        c_out = scaled / (scaled**2 + LCM_SIGMA_DATA**2) ** 0.5
        return c_out * model(x, sigma) + c_skip * x

    return denoise
