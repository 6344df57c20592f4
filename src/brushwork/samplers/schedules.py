"""Sigma schedules: how the noise levels of a run are spaced, with A1111's names and details.

Every schedule returns a float32 CPU tensor of descending noise levels for ``n`` steps, normally
``n + 1`` values ending in 0. Karras: Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models" (rho = 7). Align Your Steps: Sabour et al. 2024 (NVIDIA's
published 10-step tables). Beta: Lee et al. 2024, "Beta Sampling is All You Need" (alpha = beta
= 0.6). KL Optimal: Sabour et al. 2024, "Align Your Steps", appendix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.samplers.betadist import beta_ppf
from brushwork.samplers.sigmas import ModelSigmas, append_zero

KARRAS_RHO = 7.0
POLYEXPONENTIAL_RHO = 1.0
BETA_ALPHA = 0.6
BETA_BETA = 0.6

# NVIDIA's Align Your Steps noise levels for 10 steps (11 values before the final 0).
AYS_SD1 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


@dataclass(frozen=True)
class ScheduleOptions:
    """User overrides (A1111's "Schedule min/max sigma", "Schedule rho", Beta alpha/beta).

    ``None`` means: take the model's range, or the schedule's default rho.
    """

    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None
    beta_alpha: float = BETA_ALPHA
    beta_beta: float = BETA_BETA


@dataclass(frozen=True)
class ScheduleRange:
    """The resolved range a schedule function works with."""

    sigma_min: float
    sigma_max: float
    rho: float
    beta_alpha: float
    beta_beta: float


ScheduleFunction = Callable[[int, ModelSigmas, ScheduleRange], Tensor]


def uniform(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Evenly spaced model timesteps from the top of the table to the bottom (k-diffusion's default)."""
    return model.default_sigmas(n)


def karras(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Karras et al. (2022), eq. 5: evenly spaced in sigma ** (1 / rho)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = span.sigma_min ** (1 / span.rho)
    max_inv_rho = span.sigma_max ** (1 / span.rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** span.rho)


def exponential(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Evenly spaced in log sigma."""
    return append_zero(torch.linspace(math.log(span.sigma_max), math.log(span.sigma_min), n).exp())


def polyexponential(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Log sigma along a power ramp (rho 1 is the exponential schedule)."""
    ramp = torch.linspace(1, 0, n) ** span.rho
    log_min, log_max = math.log(span.sigma_min), math.log(span.sigma_max)
    return append_zero(torch.exp(ramp * (log_max - log_min) + log_min))


def _timesteps_between(model: ModelSigmas, span: ScheduleRange) -> tuple[float, float]:
    start = model.sigma_to_t(torch.tensor(span.sigma_max, dtype=torch.float32))
    end = model.sigma_to_t(torch.tensor(span.sigma_min, dtype=torch.float32))
    return float(start), float(end)


def sgm_uniform(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Evenly spaced timesteps as in Stability's sgm code: ``n + 1`` points, the last one dropped."""
    start, end = _timesteps_between(model, span)
    return append_zero(model.t_to_sigma(torch.linspace(start, end, n + 1)[:-1]))


def normal(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Evenly spaced timesteps between the sigma range's ends, both included."""
    start, end = _timesteps_between(model, span)
    return append_zero(model.t_to_sigma(torch.linspace(start, end, n)))


def simple(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Every ``len/n``-th entry of the table, from the top (ComfyUI's "simple")."""
    stride = model.sigmas.numel() / n
    picks = [float(model.sigmas[-(1 + int(k * stride))]) for k in range(n)]
    return append_zero(torch.tensor(picks, dtype=torch.float32))


def ddim_uniform(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Table entries 1, 1 + s, 1 + 2s, ... with ``s = len // n``, top first (DDIM's timesteps).

    As in A1111 this gives ``ceil((len - 1) / s)`` steps, which can be one more than ``n``.
    """
    size = model.sigmas.numel()
    stride = max(size // n, 1)
    picks = [float(model.sigmas[k]) for k in range(1, size, stride)][::-1]
    return append_zero(torch.tensor(picks, dtype=torch.float32))


def _loglinear_resample(values: tuple[float, ...], n: int) -> Tensor:
    logs = torch.tensor(values[::-1], dtype=torch.float64).log()
    positions = torch.linspace(0, 1, n, dtype=torch.float64) * (len(values) - 1)
    low = positions.floor().long().clamp(max=len(values) - 2)
    frac = positions - low
    return (logs[low] * (1 - frac) + logs[low + 1] * frac).exp().flip(0)


def align_your_steps(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """NVIDIA's Align Your Steps table (SDXL or SD1), resampled log-linearly when ``n != 11``."""
    table = AYS_SDXL if model.family is BaseFamily.SDXL else AYS_SD1
    values = (
        torch.tensor(table, dtype=torch.float64)
        if n == len(table)
        else _loglinear_resample(table, n)
    )
    return append_zero(values.float())


def kl_optimal(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Evenly spaced in arctan(sigma); ``n + 1`` values ending at sigma_min, not 0 (as A1111)."""
    alpha_min = torch.arctan(torch.tensor(span.sigma_min, dtype=torch.float32))
    alpha_max = torch.arctan(torch.tensor(span.sigma_max, dtype=torch.float32))
    step = torch.arange(n + 1) / n
    return torch.tan(step * alpha_min + (1.0 - step) * alpha_max)


def beta(n: int, model: ModelSigmas, span: ScheduleRange) -> Tensor:
    """Beta-distribution quantiles mapped linearly onto [sigma_min, sigma_max] (as A1111 does)."""
    ramp = [1.0 - v for v in torch.linspace(0, 1, n, dtype=torch.float64).tolist()]
    quantiles = [beta_ppf(q, span.beta_alpha, span.beta_beta) for q in ramp]
    picks = [span.sigma_min + q * (span.sigma_max - span.sigma_min) for q in quantiles]
    return append_zero(torch.tensor(picks, dtype=torch.float32))


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule as A1111 lists it on ``/sdapi/v1/schedulers``."""

    name: str
    label: str
    build: ScheduleFunction | None
    default_rho: float | None = None
    need_inner_model: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def is_automatic(self) -> bool:
        return self.build is None

    def resolve(self, model: ModelSigmas, options: ScheduleOptions | None = None) -> ScheduleRange:
        options = options or ScheduleOptions()
        sigma_min = options.sigma_min or model.sigma_min
        sigma_max = options.sigma_max or model.sigma_max
        rho = options.rho or self.default_rho or 1.0
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(
                f"schedule {self.label}: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        if rho <= 0:
            raise ConfigError(f"schedule {self.label}: rho must be positive, got {rho}")
        return ScheduleRange(sigma_min, sigma_max, rho, options.beta_alpha, options.beta_beta)

    def __call__(
        self, steps: int, model: ModelSigmas, options: ScheduleOptions | None = None
    ) -> Tensor:
        """The noise levels for ``steps`` steps. Automatic here means the model's default spacing."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        span = self.resolve(model, options)
        build = self.build or uniform
        return build(steps, model, span).to(device="cpu", dtype=torch.float32)

    def api_item(self) -> dict[str, object]:
        """The item ``/sdapi/v1/schedulers`` returns for this schedule."""
        return {
            "name": self.name,
            "label": self.label,
            "aliases": list(self.aliases) or None,
            "default_rho": -1.0 if self.default_rho is None else self.default_rho,
            "need_inner_model": self.need_inner_model,
        }


AUTOMATIC = "Automatic"

SCHEDULES: tuple[ScheduleInfo, ...] = (
    ScheduleInfo("automatic", AUTOMATIC, None),
    ScheduleInfo("uniform", "Uniform", uniform, need_inner_model=True),
    ScheduleInfo("karras", "Karras", karras, default_rho=KARRAS_RHO),
    ScheduleInfo("exponential", "Exponential", exponential),
    ScheduleInfo(
        "polyexponential", "Polyexponential", polyexponential, default_rho=POLYEXPONENTIAL_RHO
    ),
    ScheduleInfo(
        "sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=("SGMUniform",)
    ),
    ScheduleInfo("kl_optimal", "KL Optimal", kl_optimal),
    ScheduleInfo("align_your_steps", "Align Your Steps", align_your_steps),
    ScheduleInfo("simple", "Simple", simple, need_inner_model=True),
    ScheduleInfo("normal", "Normal", normal, need_inner_model=True),
    ScheduleInfo("ddim", "DDIM", ddim_uniform, need_inner_model=True),
    ScheduleInfo("beta", "Beta", beta, need_inner_model=True),
)


def schedule_keys(schedule: ScheduleInfo) -> tuple[str, ...]:
    """Every spelling that names ``schedule``: name, label and aliases."""
    return (schedule.name, schedule.label, *schedule.aliases)


def find_schedule(name: str) -> ScheduleInfo | None:
    """The schedule with this name, label or alias (case-insensitive), or None."""
    wanted = name.strip().casefold()
    for schedule in SCHEDULES:
        if wanted in (key.casefold() for key in schedule_keys(schedule)):
            return schedule
    return None


def get_schedule(name: str) -> ScheduleInfo:
    """The schedule named ``name`` (A1111 name, label or alias, any case); ConfigError otherwise."""
    schedule = find_schedule(name) if isinstance(name, str) else None
    if schedule is None:
        valid = ", ".join(s.label for s in SCHEDULES)
        raise ConfigError(f"unknown schedule {name!r}; valid schedules: {valid}")
    return schedule


def list_schedules() -> tuple[ScheduleInfo, ...]:
    """Every schedule, in A1111's order."""
    return SCHEDULES
