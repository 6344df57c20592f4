"""One sampling pass: the noise levels it walks, its starting latent, the solver run.

txt2img starts from ``noise * sigmas[0]``; img2img (and the hires pass) from
``init + noise * multiplier * sigmas[0]`` over the tail of a full schedule
(``samplers.img2img_steps``: ``t_enc = int(min(strength, 0.999) * steps)``; the hires pass runs
exactly its steps, as A1111's ``sample_img2img(steps=...)``). The noise is the batch's seeded
`BatchNoise`: its first draw is the initial noise, later draws feed ancestral and SDE steps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from brushwork.generation.guidance import Guidance, GuidedDenoiser, InpaintLatents, UNetCall
from brushwork.loading import LoadedModel
from brushwork.samplers import (
    BatchNoise,
    SamplerInfo,
    StepInfo,
    get_sampler,
    img2img_sigmas,
    img2img_steps,
    make_sigmas,
)

StepReport = Callable[[int, int], None]
"""``report(steps_done, steps_of_this_pass)`` after every solver step."""
LatentsReport = Callable[[Tensor], None]
"""``on_latents(denoised)`` after every solver step, before `StepReport`: the model's current
prediction of the finished latents (live previews, and what a skipped batch keeps)."""


def schedule_steps(sampler: SamplerInfo, steps: int) -> int:
    """The step count prompt schedules are built for: doubled for second-order samplers (their
    two model calls per step each advance the schedule, as in A1111)."""
    return steps * 2 if sampler.second_order else steps


@dataclass(frozen=True, eq=False)
class PassPlan:
    """What one pass runs: solver, sigmas (None: no sampling, the start latent is kept)."""

    sampler: SamplerInfo
    sigmas: Tensor | None
    options: Mapping[str, Any] = field(default_factory=dict)
    eta_noise_seed_delta: int = 0

    @property
    def steps(self) -> int:
        return 0 if self.sigmas is None else len(self.sigmas) - 1


def txt2img_plan(
    model: LoadedModel,
    sampler_name: str,
    scheduler: str,
    steps: int,
    options: Mapping[str, Any],
    eta_noise_seed_delta: int = 0,
) -> PassPlan:
    sampler = get_sampler(sampler_name)
    sigmas = make_sigmas(sampler, steps, model.sigmas(), scheduler)
    return PassPlan(sampler, sigmas, dict(options), eta_noise_seed_delta)


def img2img_plan(
    model: LoadedModel,
    sampler_name: str,
    scheduler: str,
    steps: int,
    denoising_strength: float,
    options: Mapping[str, Any],
    eta_noise_seed_delta: int = 0,
    *,
    fix_steps: bool = False,
) -> PassPlan:
    """The tail of the schedule an img2img pass walks; strength 0 samples nothing."""
    sampler = get_sampler(sampler_name)
    if denoising_strength == 0:
        return PassPlan(sampler, None, dict(options), eta_noise_seed_delta)
    full_steps, t_enc = img2img_steps(steps, denoising_strength, fix_steps=fix_steps)
    full = make_sigmas(sampler, full_steps, model.sigmas(), scheduler)
    sigmas = img2img_sigmas(full, full_steps, t_enc)
    return PassPlan(sampler, sigmas, dict(options), eta_noise_seed_delta)


def sample_pass(
    model: LoadedModel,
    unet: UNetCall,
    guidance: Guidance,
    plan: PassPlan,
    noise: BatchNoise,
    *,
    size: tuple[int, int],
    start: Tensor | None = None,
    noise_multiplier: float = 1.0,
    inpaint: InpaintLatents | None = None,
    cancel: threading.Event | None = None,
    report: StepReport | None = None,
    on_latents: LatentsReport | None = None,
) -> Tensor:
    """Run one pass and return the latents (float32, on the model's device)."""
    if plan.sigmas is None:
        if start is None:
            raise ValueError("a pass without sampling needs a start latent")
        return start
    sigmas = plan.sigmas.to(model.device)
    first = noise.first().to(model.device)
    x = first * sigmas[0] if start is None else start + first * noise_multiplier * sigmas[0]
    denoiser = GuidedDenoiser(model, unet, guidance, size=size, inpaint=inpaint, cancel=cancel)
    total = plan.steps

    def callback(info: StepInfo) -> None:
        if on_latents is not None:
            on_latents(info.denoised)
        if report is not None:
            report(info.i + 1, total)

    result = plan.sampler(denoiser, x, sigmas, noise=noise, callback=callback, **plan.options)
    if inpaint is not None:
        result = inpaint.blend(result)
    return result
