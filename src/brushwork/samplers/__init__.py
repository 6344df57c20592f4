"""samplers floor (F1): k-diffusion-style solvers, sigma schedules and A1111-compatible seeded noise.

Every solver has one signature::

    sample(model, x, sigmas, *, noise, callback=None, **options) -> Tensor

``model(x, sigma) -> denoised`` (k-diffusion's convention), ``x`` starts as noise times
``sigmas[0]``, ``noise`` is a seeded :class:`NoiseSource`. Look samplers and schedules up by their
A1111 names with :func:`get_sampler` / :func:`get_schedule`, build the noise levels with
:func:`make_sigmas` and the noise with :func:`batch_noise`.
"""

from brushwork.samplers.denoisers import lcm_boundary_denoiser, network_denoiser
from brushwork.samplers.registry import (
    SAMPLERS,
    SamplerInfo,
    api_samplers,
    api_schedules,
    effective_schedule,
    get_sampler,
    img2img_sigmas,
    img2img_steps,
    list_samplers,
    make_sigmas,
    resolve_sampler_name,
    schedule_label,
)
from brushwork.samplers.rng import (
    BatchNoise,
    ImageNoise,
    PhiloxGenerator,
    RngSource,
    TorchCpuGenerator,
    batch_noise,
    batch_seeds,
    noise_stream,
    parse_rng_source,
    resolve_seed,
    slerp,
)
from brushwork.samplers.schedules import (
    SCHEDULES,
    ScheduleInfo,
    ScheduleOptions,
    get_schedule,
    list_schedules,
)
from brushwork.samplers.sigmas import ModelSigmas, lcm_model_sigmas, sd_alphas_cumprod, sd_sigmas
from brushwork.samplers.types import Denoiser, NoiseSource, StepCallback, StepInfo

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "BatchNoise",
    "Denoiser",
    "ImageNoise",
    "ModelSigmas",
    "NoiseSource",
    "PhiloxGenerator",
    "RngSource",
    "SamplerInfo",
    "ScheduleInfo",
    "ScheduleOptions",
    "StepCallback",
    "StepInfo",
    "TorchCpuGenerator",
    "api_samplers",
    "api_schedules",
    "batch_noise",
    "batch_seeds",
    "effective_schedule",
    "get_sampler",
    "get_schedule",
    "img2img_sigmas",
    "img2img_steps",
    "lcm_boundary_denoiser",
    "lcm_model_sigmas",
    "list_samplers",
    "list_schedules",
    "make_sigmas",
    "network_denoiser",
    "noise_stream",
    "parse_rng_source",
    "resolve_sampler_name",
    "resolve_seed",
    "schedule_label",
    "sd_alphas_cumprod",
    "sd_sigmas",
    "slerp",
]
