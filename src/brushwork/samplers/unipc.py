"""UniPC: the unified predictor-corrector multistep solver, data-prediction form.

Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models" (UniP-p predictor, UniC corrector, B(h) variants bh1 and bh2). Written in variance-exploding
form, where alpha is 1 and lambda = -log sigma. The corrector reuses the model call made at the new
point, so each step costs one model call. As in A1111 (order 3, bh1, lower order at the end);
a final step to sigma 0 returns the data estimate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers.stepping import denoise, prepare, weighted_sum
from brushwork.samplers.types import Denoiser, NoiseSource, StepCallback

UniPCVariant = Literal["bh1", "bh2"]


def _coefficients(h: float, order: int, variant: UniPCVariant) -> tuple[float, float, list[float]]:
    """``h_phi_1``, ``B(h)`` and the right-hand side ``b`` of the order conditions for step ``h``."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    factorial = 1
    b: list[float] = []
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, b


def _solve(ratios: list[float], b: list[float], size: int) -> list[float]:
    """Solve ``R rho = b`` where row k of R holds ``ratio ** k`` (the first ``size`` rows/cols)."""
    matrix = torch.tensor(
        [[ratio**k for ratio in ratios[:size]] for k in range(size)], dtype=torch.float64
    )
    rhs = torch.tensor(b[:size], dtype=torch.float64)
    return [float(v) for v in torch.linalg.solve(matrix, rhs)]


def _step_terms(
    outputs: list[Tensor], lambdas: list[float], lam_t: float, order: int, variant: UniPCVariant
) -> tuple[list[float], list[Tensor], float, float, list[float]]:
    """What a step of ``order`` to ``lam_t`` needs: ratios r_k and scaled differences D_k of the
    earlier outputs against the latest, then ``h_phi_1``, ``B(h)`` and ``b`` (`_coefficients`)."""
    lam_s0, m0 = lambdas[-1], outputs[-1]
    h = lam_t - lam_s0
    ratios: list[float] = []
    diffs: list[Tensor] = []
    for k in range(1, order):
        ratio = (lambdas[-(k + 1)] - lam_s0) / h
        ratios.append(ratio)
        diffs.append((outputs[-(k + 1)] - m0) / ratio)
    return ratios, diffs, *_coefficients(h, order, variant)


def _predict(
    x: Tensor,
    outputs: list[Tensor],
    lambdas: list[float],
    lam_t: float,
    sigma_ratio: Tensor,
    order: int,
    variant: UniPCVariant,
) -> Tensor:
    ratios, diffs, h_phi_1, b_h, b = _step_terms(outputs, lambdas, lam_t, order, variant)
    x_t = sigma_ratio * x - h_phi_1 * outputs[-1]
    if diffs:
        rhos = [0.5] if order == 2 else _solve([*ratios, 1.0], b, order - 1)
        x_t = x_t - b_h * weighted_sum(rhos, diffs, x)
    return x_t


def _correct(
    x_prev: Tensor,
    model_t: Tensor,
    outputs: list[Tensor],
    lambdas: list[float],
    lam_t: float,
    sigma_ratio: Tensor,
    order: int,
    variant: UniPCVariant,
) -> Tensor:
    ratios, diffs, h_phi_1, b_h, b = _step_terms(outputs, lambdas, lam_t, order, variant)
    rhos = [0.5] if order == 1 else _solve([*ratios, 1.0], b, order)
    x_t = sigma_ratio * x_prev - h_phi_1 * outputs[-1]
    correction = weighted_sum(rhos[:-1], diffs, x_t)
    return x_t - b_h * (correction + rhos[-1] * (model_t - outputs[-1]))


@torch.no_grad()
def sample_unipc(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    order: int = 3,
    variant: UniPCVariant = "bh1",
    lower_order_final: bool = True,
) -> Tensor:
    """UniPC multistep (predictor UniP + corrector UniC) of up to ``order``."""
    if variant not in ("bh1", "bh2"):
        raise ConfigError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}")
    if order < 1:
        raise ConfigError(f"UniPC order must be at least 1, got {order}")
    sigmas = prepare(x, sigmas)
    total = len(sigmas) - 1
    outputs: list[Tensor] = []
    lambdas: list[float] = []
    x_prev: Tensor | None = None
    step_order = 1
    for i in range(total):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(model, x, sigmas, i, callback)
        lam = -math.log(float(sigma))
        if x_prev is not None:
            x = _correct(
                x_prev, denoised, outputs, lambdas, lam, sigma / sigmas[i - 1], step_order, variant
            )
        outputs, lambdas = [*outputs, denoised][-order:], [*lambdas, lam][-order:]
        if sigma_next == 0:
            x = denoised
            continue
        step_order = min(order, i + 1, total - i if lower_order_final else order)
        x_prev = x
        x = _predict(
            x,
            outputs,
            lambdas,
            -math.log(float(sigma_next)),
            sigma_next / sigma,
            step_order,
            variant,
        )
    return x
