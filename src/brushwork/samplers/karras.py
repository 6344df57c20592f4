"""The Karras-style ODE solvers and their ancestral variants: Euler, Euler a, Heun, DPM2, DPM2 a, LMS.

All share one signature (see :mod:`brushwork.samplers.types`): ``x`` starts as noise times
``sigmas[0]``, the model returns the denoised estimate. References: Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models" (Algorithm 2: Euler and Heun
steps with optional churn); Lu et al. 2022, "DPM-Solver" (the DPM2 midpoint step, taken halfway in
log sigma); Song et al. 2021, "Score-Based Generative Modeling through SDEs" (ancestral sampling).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers.stepping import (
    ancestral_step,
    churn,
    denoise,
    prepare,
    sigma_batch,
    to_d,
    weighted_sum,
)
from brushwork.samplers.types import Denoiser, NoiseSource, StepCallback

INF = math.inf


Churn = tuple[float, float, float, float]  # s_churn, s_tmin, s_tmax, s_noise


def _churned_slope(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    i: int,
    noise: NoiseSource,
    callback: StepCallback | None,
    churn_args: Churn,
) -> tuple[Tensor, Tensor, Tensor]:
    """Step ``i``'s start: raise the noise level by Karras's gamma, then the ODE slope there.

    Returns the new x, sigma_hat and dx/dsigma at (x, sigma_hat).
    """
    s_churn, s_tmin, s_tmax, s_noise = churn_args
    gamma = churn(sigmas, i, s_churn, s_tmin, s_tmax)
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + noise.randn_like(x) * s_noise * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    denoised = denoise(model, x, sigmas, i, callback, sigma_hat)
    return x, sigma_hat, to_d(x, sigma_hat, denoised)


def _midpoint_step(
    model: Denoiser, x: Tensor, d: Tensor, sigma: Tensor, sigma_to: Tensor
) -> Tensor:
    """DPM-Solver-2: Euler to the midpoint (halfway in log sigma), then the whole step with the
    slope found there."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_batch(x_2, sigma_mid)))
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_euler(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = INF,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps on the probability-flow ODE (first order; Karras et al. 2022, Algorithm 2)."""
    sigmas = prepare(x, sigmas)
    churn_args = (s_churn, s_tmin, s_tmax, s_noise)
    for i in range(len(sigmas) - 1):
        x, sigma_hat, d = _churned_slope(model, x, sigmas, i, noise, callback, churn_args)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


def euler_ancestral_steps(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise: NoiseSource,
    callback: StepCallback | None,
    eta: float,
    s_noise: float,
) -> Tensor:
    """Euler down to sigma_down, then fresh noise up to the next level (shared with DDIM)."""
    sigmas = prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise(model, x, sigmas, i, callback)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0 and eta:
            x = x + noise.randn_like(x) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral sampling with Euler steps ("Euler a")."""
    return euler_ancestral_steps(model, x, sigmas, noise, callback, eta, s_noise)


@torch.no_grad()
def sample_heun(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = INF,
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's method (second order, two model calls per step; Euler on the last step to 0)."""
    sigmas = prepare(x, sigmas)
    churn_args = (s_churn, s_tmin, s_tmax, s_noise)
    for i in range(len(sigmas) - 1):
        x, sigma_hat, d = _churned_slope(model, x, sigmas, i, noise, callback, churn_args)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigma_batch(x_2, sigmas[i + 1])))
        x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = INF,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 style midpoint steps (the midpoint halfway in log sigma)."""
    sigmas = prepare(x, sigmas)
    churn_args = (s_churn, s_tmin, s_tmax, s_noise)
    for i in range(len(sigmas) - 1):
        x, sigma_hat, d = _churned_slope(model, x, sigmas, i, noise, callback, churn_args)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = _midpoint_step(model, x, d, sigma_hat, sigmas[i + 1])
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral sampling with DPM-Solver-2 midpoint steps ("DPM2 a")."""
    sigmas = prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], denoise(model, x, sigmas, i, callback))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            x = _midpoint_step(model, x, d, sigmas[i], sigma_down)
            x = x + noise.randn_like(x) * s_noise * sigma_up
    return x


def lms_coefficient(order: int, t: list[float], i: int, j: int) -> float:
    """The integral over [t_i, t_i+1] of the Lagrange basis polynomial of node t_(i-j).

    The nodes are t_i, t_(i-1), ..., t_(i-order+1); the polynomial is integrated exactly.
    """
    if order - 1 > i:
        raise ValueError(f"order {order} too high for step {i}")
    coefficients = [1.0]  # lowest power first
    for k in range(order):
        if k == j:
            continue
        scale = t[i - j] - t[i - k]
        shifted = [0.0, *coefficients]  # multiply by tau
        for power, value in enumerate(coefficients):
            shifted[power] -= t[i - k] * value
        coefficients = [value / scale for value in shifted]
    start, end = t[i], t[i + 1]
    return sum(
        value * (end ** (power + 1) - start ** (power + 1)) / (power + 1)
        for power, value in enumerate(coefficients)
    )


@torch.no_grad()
def sample_lms(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (Adams-Bashforth in sigma with variable steps), up to ``order`` history."""
    if order < 1:
        raise ConfigError(f"LMS order must be at least 1, got {order}")
    sigmas = prepare(x, sigmas)
    nodes = [float(s) for s in sigmas.double().cpu()]
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        history.append(to_d(x, sigmas[i], denoise(model, x, sigmas, i, callback)))
        if len(history) > order:
            history.pop(0)
        current = min(i + 1, order)
        weights = [lms_coefficient(current, nodes, i, j) for j in range(current)]
        x = x + weighted_sum(weights, history[::-1], x)
    return x
