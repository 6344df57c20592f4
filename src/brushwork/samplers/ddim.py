"""The timestep-family solvers written over sigmas: DDIM, PLMS and LCM.

A1111 runs DDIM and PLMS over model timesteps; here they run over a sigma schedule (their
"Automatic" schedule is the DDIM timestep spacing). In variance-exploding form the DDIM update
(Song et al. 2021, "Denoising Diffusion Implicit Models") is an Euler step for eta = 0, and for
eta > 0 it is exactly an ancestral Euler step with the same eta: DDIM's
``sigma_t = eta * sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))`` divided by ``sqrt(a_prev)``
equals ``eta * sigma_next * sqrt(1 - sigma_next**2 / sigma**2)``. PLMS is the pseudo linear
multistep method of Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds".
LCM is the multistep consistency sampling of Luo et al. 2023, "Latent Consistency Models".
"""

from __future__ import annotations

import torch
from torch import Tensor

from brushwork.samplers.karras import euler_ancestral_steps
from brushwork.samplers.stepping import denoise, prepare, sigma_batch, to_d
from brushwork.samplers.types import Denoiser, NoiseSource, StepCallback


@torch.no_grad()
def sample_ddim(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM; ``eta`` 0 (A1111's default "Eta DDIM") is deterministic."""
    return euler_ancestral_steps(model, x, sigmas, noise, callback, eta, 1.0)


def _plms_combination(eps: Tensor, history: list[Tensor]) -> Tensor:
    """Adams-Bashforth combination of the current and up to three earlier noise estimates."""
    if len(history) == 1:
        return (3 * eps - history[-1]) / 2
    if len(history) == 2:
        return (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
    return (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24


@torch.no_grad()
def sample_plms(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
) -> Tensor:
    """PLMS: a Heun first step, then 2nd to 4th order Adams-Bashforth on the noise estimate."""
    sigmas = prepare(x, sigmas)
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        eps = to_d(x, sigma, denoise(model, x, sigmas, i, callback))
        if history:
            eps_prime = _plms_combination(eps, history)
        elif sigma_next > 0:
            x_2 = x + eps * (sigma_next - sigma)
            eps_next = to_d(x_2, sigma_next, model(x_2, sigma_batch(x_2, sigma_next)))
            eps_prime = (eps + eps_next) / 2
        else:
            eps_prime = eps
        x = x + eps_prime * (sigma_next - sigma)
        history.append(eps)
        if len(history) > 3:
            history.pop(0)
    return x


@torch.no_grad()
def sample_lcm(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
) -> Tensor:
    """LCM: jump to the model's data estimate, then re-noise to the next level."""
    sigmas = prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        x = denoise(model, x, sigmas, i, callback)
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise.randn_like(x)
    return x
