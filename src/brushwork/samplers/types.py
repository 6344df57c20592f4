"""The shapes every solver shares: the denoiser, the noise source, the per-step report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``model(x, sigma) -> denoised``: k-diffusion's convention.

``x`` is the noisy latent in variance-exploding form (``x = data + sigma * noise``), ``sigma`` a
1-D tensor holding one noise level per batch item; the result is the model's estimate of the data.
"""


class NoiseSource(Protocol):
    """Where a solver gets its fresh Gaussian noise (ancestral and SDE steps).

    Implementations draw from seeded per-image generators, so a run is reproducible.
    """

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise with the shape, dtype and device of ``x``."""
        ...


@dataclass(frozen=True, eq=False)
class StepInfo:
    """What a solver reports before it takes step ``i`` of ``total`` (for previews and progress)."""

    i: int
    total: int
    x: Tensor
    sigma: float
    sigma_hat: float
    denoised: Tensor


StepCallback = Callable[[StepInfo], None]
