"""Pieces every solver uses: input checks, the model call and its report, the ODE derivative,
ancestral splits, multistep sums."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers.types import Denoiser, StepCallback, StepInfo


def prepare(x: Tensor, sigmas: Tensor) -> Tensor:
    """Check a solver's inputs; return ``sigmas`` as float32 on ``x``'s device."""
    if not x.is_floating_point() or x.ndim < 1 or x.shape[0] < 1:
        raise ConfigError(
            f"x must be a floating-point batch, got {x.dtype} of shape {tuple(x.shape)}"
        )
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ConfigError(
            f"sigmas must be 1-D with at least 2 values, got shape {tuple(sigmas.shape)}"
        )
    sigmas = sigmas.detach().to(device=x.device, dtype=torch.float32)
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()):
        raise ConfigError("sigmas must be finite and not negative")
    if float(sigmas[0]) <= 0 or bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise ConfigError(
            "sigmas must start above 0 and strictly decrease (every step lowers the noise level)"
        )
    return sigmas


def sigma_batch(x: Tensor, sigma: Tensor) -> Tensor:
    """One copy of the noise level per batch item, as the denoiser expects."""
    return sigma * x.new_ones([x.shape[0]])


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The probability-flow ODE derivative dx/dsigma (Karras et al. 2022, eq. 3 with D)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step into a deterministic part down to ``sigma_down`` and fresh noise ``sigma_up``.

    ``sigma_down ** 2 + sigma_up ** 2 == sigma_to ** 2``; ``eta`` scales the noise (0 = ODE).
    """
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def churn(sigmas: Tensor, i: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """Karras et al. (2022) Algorithm 2's gamma: how far to raise the noise level before step i."""
    if s_churn <= 0 or not s_tmin <= float(sigmas[i]) <= s_tmax:
        return 0.0
    return min(s_churn / (len(sigmas) - 1), 2**0.5 - 1)


def denoise(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    i: int,
    callback: StepCallback | None,
    sigma_hat: Tensor | None = None,
) -> Tensor:
    """The model's data estimate for step ``i`` (at ``sigma_hat`` when the noise was raised).

    The step is reported to ``callback`` with the estimate, before the solver moves ``x``.
    """
    sigma = sigmas[i] if sigma_hat is None else sigma_hat
    denoised = model(x, sigma_batch(x, sigma))
    report(callback, i, len(sigmas) - 1, x, sigmas[i], sigma, denoised)
    return denoised


def weighted_sum(
    weights: Sequence[float | Tensor], tensors: Sequence[Tensor], like: Tensor
) -> Tensor:
    """``sum(w * t)`` over pairs, starting from zeros shaped like ``like`` (multistep solvers)."""
    return sum((w * t for w, t in zip(weights, tensors, strict=True)), torch.zeros_like(like))


def report(
    callback: StepCallback | None,
    i: int,
    total: int,
    x: Tensor,
    sigma: Tensor,
    sigma_hat: Tensor,
    denoised: Tensor,
) -> None:
    if callback is not None:
        callback(StepInfo(i, total, x, float(sigma), float(sigma_hat), denoised))
