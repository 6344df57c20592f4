"""A model's discrete noise-level table and the timestep <-> sigma maps over it.

The table follows k-diffusion's ``DiscreteSchedule`` (crowsonkb/k-diffusion, MIT): ``sigmas[t]`` is
``sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])`` in ascending timestep order, timesteps between
entries are interpolated linearly in log-sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily

LCM_ORIGINAL_STEPS = 50
"""The number of timesteps an LCM model was distilled on (A1111's LCM sampler uses 50)."""


@dataclass(frozen=True, eq=False)
class ModelSigmas:
    """A model's noise-level table.

    ``sigmas`` is a 1-D float32 tensor in ascending order. Entry ``k`` belongs to the model timestep
    ``k * stride + offset`` (stride 1, offset 0 for a full table; a distilled table such as LCM's
    keeps every 20th timestep). ``quantize`` snaps ``sigma_to_t`` to the nearest entry.
    """

    sigmas: Tensor
    family: BaseFamily = BaseFamily.SD1
    stride: int = 1
    offset: int = 0
    quantize: bool = False

    def __post_init__(self) -> None:
        if self.sigmas.ndim != 1 or self.sigmas.numel() < 2:
            raise ConfigError(
                f"a sigma table must be 1-D with at least 2 entries, got shape {tuple(self.sigmas.shape)}"
            )
        if not bool((self.sigmas[1:] >= self.sigmas[:-1]).all()) or float(self.sigmas[0]) <= 0:
            raise ConfigError("a sigma table must be positive and ascending (timestep order)")

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def log_sigmas(self) -> Tensor:
        return self.sigmas.log()

    def sigma_to_t(self, sigma: Tensor, quantize: bool | None = None) -> Tensor:
        """The (fractional) model timestep of each noise level in ``sigma``."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.float().log()
        dists = log_sigma - log_sigmas[:, None]
        if self.quantize if quantize is None else quantize:
            index = dists.abs().argmin(dim=0).view(sigma.shape).float()
            return index * self.stride + self.offset
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high = low + 1
        low_log, high_log = log_sigmas[low], log_sigmas[high]
        w = ((low_log - log_sigma) / (low_log - high_log)).clamp(0, 1)
        index = (1 - w) * low + w * high
        return index.view(sigma.shape) * self.stride + self.offset

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """The noise level at each (fractional) model timestep in ``t``."""
        index = t.float()
        if self.stride != 1 or self.offset != 0:
            index = ((index - self.offset) / self.stride).clamp(0, self.sigmas.numel() - 1)
        log_sigmas = self.log_sigmas.to(index.device)
        low, high, w = index.floor().long(), index.ceil().long(), index.frac()
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()

    def timestep_range(self) -> tuple[float, float]:
        """The model timesteps of the largest and the smallest table entry."""
        top = (self.sigmas.numel() - 1) * self.stride + self.offset
        return float(top), float(self.offset)

    def default_sigmas(self, n: int) -> Tensor:
        """``n`` noise levels evenly spaced in timestep from the top of the table down, then 0.

        This is k-diffusion's ``get_sigmas(n)``, what A1111 uses when neither the user nor the
        sampler picks a schedule.
        """
        start, end = self.timestep_range()
        t = torch.linspace(start, end, n)
        return append_zero(self.t_to_sigma(t))


def append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def sd_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> Tensor:
    """Stable Diffusion's ``scaled_linear`` alpha-bar table (float32, computed in float64).

    ``betas = linspace(sqrt(beta_start), sqrt(beta_end), n) ** 2`` as in the original LDM code; the
    cumulative product is taken in float64 and stored as float32, as A1111 keeps it.
    """
    if num_train_timesteps < 2:
        raise ConfigError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
    if not 0 < beta_start < beta_end < 1:
        raise ConfigError(
            f"betas must satisfy 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}"
        )
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas**2, dim=0).float()


def sd_sigmas(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    *,
    family: BaseFamily = BaseFamily.SD1,
) -> ModelSigmas:
    """The sigma table of an SD1/SD2/SDXL model (all share these betas): about 0.0292 to 14.6146."""
    alphas_cumprod = sd_alphas_cumprod(num_train_timesteps, beta_start, beta_end)
    return ModelSigmas(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, family=family)


def lcm_model_sigmas(model: ModelSigmas, original_steps: int = LCM_ORIGINAL_STEPS) -> ModelSigmas:
    """The reduced table an LCM sampler walks: every ``len/original_steps``-th entry, ending at the top.

    For 1000 timesteps and 50 original steps the entries are timesteps 19, 39, ..., 999, and
    ``sigma_to_t`` snaps to them, as A1111's LCM denoiser does.
    """
    total = model.sigmas.numel()
    if model.stride != 1 or model.offset != 0 or not 0 < original_steps <= total:
        raise ConfigError(
            f"an LCM table needs a full sigma table and 0 < original_steps <= {total}",
            hint=f"got stride {model.stride}, offset {model.offset}, original_steps {original_steps}",
        )
    skip = total // original_steps
    index = torch.tensor([total - 1 - k * skip for k in range(original_steps)][::-1])
    return ModelSigmas(
        model.sigmas[index].clone(),
        family=model.family,
        stride=skip,
        offset=total - 1 - (original_steps - 1) * skip,
        quantize=True,
    )
