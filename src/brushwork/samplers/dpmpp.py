"""DPM-Solver++ solvers: 2M, 2M SDE (midpoint and Heun), 3M SDE, SDE and 2S a.

Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"
(data-prediction solvers in t = -log sigma, the half log-SNR). The SDE variants follow
k-diffusion's formulation (crowsonkb/k-diffusion, MIT): each step keeps ``exp(-eta h)`` of the
deterministic update and adds matching Brownian noise. Brownian noise comes from
:class:`~brushwork.samplers.brownian.BrownianNoise` over the seeded noise source.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers.brownian import BrownianNoise
from brushwork.samplers.stepping import ancestral_step, denoise, prepare, sigma_batch, to_d
from brushwork.samplers.types import Denoiser, NoiseSource, StepCallback

SolverType = Literal["midpoint", "heun"]


def _t(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def _data_step(x: Tensor, sigma_ratio: Tensor, h: Tensor, denoised: Tensor) -> Tensor:
    """The first-order DPM-Solver++ step over ``h`` in t: ``sigma_ratio`` is sigma_to / sigma."""
    return sigma_ratio * x - (-h).expm1() * denoised


def _brownian_step(
    x: Tensor,
    brownian: BrownianNoise,
    sigma: Tensor,
    sigma_next: Tensor,
    eta_h: Tensor,
    s_noise: float,
) -> Tensor:
    """Add the Brownian noise an SDE step keeps: ``sigma_next * sqrt(1 - exp(-2 eta h))``."""
    scale = sigma_next * (-2 * eta_h).expm1().neg().sqrt() * s_noise
    return x + brownian(sigma, sigma_next) * scale


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M): second-order multistep, one model call per step."""
    sigmas = prepare(x, sigmas)
    old_denoised: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(model, x, sigmas, i, callback)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            combined = denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            combined = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = _data_step(x, _sigma(t_next) / _sigma(t), h, combined)
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: SolverType = "midpoint",
) -> Tensor:
    """DPM-Solver++(2M) SDE; ``solver_type`` picks the midpoint or the Heun-like correction."""
    if solver_type not in ("midpoint", "heun"):
        raise ConfigError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    sigmas = prepare(x, sigmas)
    brownian = BrownianNoise(noise, x)
    old_denoised: Tensor | None = None
    h_last: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(model, x, sigmas, i, callback)
        if sigmas[i + 1] == 0:
            x = denoised
            old_denoised = denoised
            continue
        h = _t(sigmas[i + 1]) - _t(sigmas[i])
        eta_h = eta * h
        phi = (-h - eta_h).expm1().neg()
        x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + phi * denoised
        if old_denoised is not None and h_last is not None:
            r = h_last / h
            if solver_type == "heun":
                x = x + (phi / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
            else:
                x = x + 0.5 * phi * (1 / r) * (denoised - old_denoised)
        if eta:
            x = _brownian_step(x, brownian, sigmas[i], sigmas[i + 1], eta_h, s_noise)
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep with Brownian noise."""
    sigmas = prepare(x, sigmas)
    brownian = BrownianNoise(noise, x)
    denoised_1: Tensor | None = None
    denoised_2: Tensor | None = None
    h_1: Tensor | None = None
    h_2: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(model, x, sigmas, i, callback)
        if sigmas[i + 1] == 0:
            x = denoised
            denoised_1, denoised_2 = denoised, denoised_1
            continue
        h = _t(sigmas[i + 1]) - _t(sigmas[i])
        h_eta = h * (eta + 1)
        x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
        phi_2 = h_eta.neg().expm1() / h_eta + 1
        if (
            h_2 is not None
            and h_1 is not None
            and denoised_1 is not None
            and denoised_2 is not None
        ):
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif h_1 is not None and denoised_1 is not None:
            x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
        if eta:
            x = _brownian_step(x, brownian, sigmas[i], sigmas[i + 1], h * eta, s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
) -> Tensor:
    """DPM-Solver++ (stochastic, second order; two model calls per step)."""
    sigmas = prepare(x, sigmas)
    brownian = BrownianNoise(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoise(model, x, sigmas, i, callback)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        # Step 1: to the intermediate level s, with its share of noise.
        sd, su = ancestral_step(_sigma(t), _sigma(s), eta)
        s_ = _t(sd)
        x_2 = _data_step(x, _sigma(s_) / _sigma(t), s_ - t, denoised)
        x_2 = x_2 + brownian(_sigma(t), _sigma(s)) * s_noise * su
        denoised_2 = model(x_2, sigma_batch(x_2, _sigma(s)))
        # Step 2: the full step with the blended data estimate.
        sd, su = ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_next_ = _t(sd)
        blended = (1 - fac) * denoised + fac * denoised_2
        x = _data_step(x, _sigma(t_next_) / _sigma(t), t_next_ - t, blended)
        x = x + brownian(_sigma(t), _sigma(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral sampling with DPM-Solver++(2S) single-step second-order steps ("DPM++ 2S a")."""
    sigmas = prepare(x, sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise(model, x, sigmas, i, callback)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = _data_step(x, _sigma(s) / _sigma(t), h / 2, denoised)
            denoised_2 = model(x_2, sigma_batch(x_2, _sigma(s)))
            x = _data_step(x, _sigma(t_next) / _sigma(t), h, denoised_2)
        if sigmas[i + 1] > 0 and eta:
            x = x + noise.randn_like(x) * s_noise * sigma_up
    return x
