"""Toy problems with known answers for the sampler tests.

Data ~ N(MU, S**2) per element has the exact denoiser D(x, sigma) = (S**2 x + sigma**2 MU) /
(S**2 + sigma**2), and the probability-flow ODE maps x(sigma0) to
``MU + (x - MU) * S / sqrt(S**2 + sigma0**2)`` at sigma 0.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from brushwork.samplers import ModelSigmas, sd_sigmas

MU = 0.7
S = 0.5


def gaussian_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return (S**2 * x + s**2 * MU) / (S**2 + s**2)


def exact_ode_solution(x_start: Tensor, sigma_start: float) -> Tensor:
    return MU + (x_start - MU) * S / math.sqrt(S**2 + sigma_start**2)


def gaussian_start(unit_noise: Tensor, sigma_start: float) -> Tensor:
    """A draw from the true noised marginal N(MU, S**2 + sigma0**2) built from unit noise."""
    return MU + unit_noise * math.sqrt(S**2 + sigma_start**2)


class CountingDenoiser:
    """Wraps a denoiser and counts calls (to check model evaluations per step)."""

    def __init__(self, inner=gaussian_denoiser) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        assert sigma.shape == (x.shape[0],), "the denoiser gets one sigma per batch item"
        return self.inner(x, sigma)


@pytest.fixture(scope="session")
def table() -> ModelSigmas:
    return sd_sigmas()


@pytest.fixture
def small_noise() -> Tensor:
    return torch.linspace(-2.5, 2.5, 12).reshape(2, 1, 2, 3)
