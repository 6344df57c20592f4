"""Brownian-motion noise for the SDE solvers, drawn from a seeded :class:`NoiseSource`.

DPM-Solver++ SDE asks for the Wiener increment over overlapping intervals ((t, s) then (t, t_next)
with s between them), so the noise must come from one Brownian path, not independent draws.
k-diffusion uses torchsde's Brownian tree; here the path is sampled lazily instead: each new time
point is drawn from the exact conditional law given its neighbours (a Brownian bridge between two
known points, a plain increment beyond the ends). Every new point costs one ``randn_like`` draw,
so the path is reproducible from the seeds. It has the same distribution as the tree's path but
not the same values: SDE images do not match A1111 bit for bit.
"""

from __future__ import annotations

import bisect

import torch
from torch import Tensor

from brushwork.samplers.types import NoiseSource


class BrownianNoise:
    """``noise(sigma, sigma_next)``: the normalised Brownian increment between two noise levels."""

    def __init__(self, noise: NoiseSource, like: Tensor) -> None:
        self._noise = noise
        self._like = like
        self._times: list[float] = []
        self._values: list[Tensor] = []

    def _draw(self) -> Tensor:
        return self._noise.randn_like(self._like).to(torch.float32)

    def _value_at(self, t: float) -> Tensor:
        index = bisect.bisect_left(self._times, t)
        if index < len(self._times) and self._times[index] == t:
            return self._values[index]
        if not self._times:
            value = torch.zeros_like(self._like, dtype=torch.float32)
        elif index == 0:
            after = self._times[0]
            value = self._values[0] + self._draw() * (after - t) ** 0.5
        elif index == len(self._times):
            before = self._times[-1]
            value = self._values[-1] + self._draw() * (t - before) ** 0.5
        else:
            t0, t1 = self._times[index - 1], self._times[index]
            w0, w1 = self._values[index - 1], self._values[index]
            weight = (t - t0) / (t1 - t0)
            std = ((t - t0) * (t1 - t) / (t1 - t0)) ** 0.5
            value = w0 + (w1 - w0) * weight + self._draw() * std
        self._times.insert(index, t)
        self._values.insert(index, value)
        return value

    def __call__(self, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
        t0, t1 = float(sigma), float(sigma_next)
        if t0 == t1:
            return torch.zeros_like(self._like)
        w0 = self._value_at(t0)
        w1 = self._value_at(t1)
        increment: Tensor = (w1 - w0) / abs(t1 - t0) ** 0.5
        return increment.to(device=self._like.device, dtype=self._like.dtype)
