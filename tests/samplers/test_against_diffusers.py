"""Our solvers against diffusers' schedulers on the same sigmas and the same (exact) model.

diffusers steps a variance-preserving or scaled sample with an epsilon model; here the epsilon is
derived from the toy denoiser, so both sides integrate the same ODE and must agree to float32.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    UniPCMultistepScheduler,
)
from torch import Tensor

from brushwork.samplers import batch_noise, get_sampler

from .conftest import gaussian_denoiser

# diffusers' set_timesteps runs NumPy on torch tensors, which NumPy 2 warns about (not our code).
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")

SD = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
START = torch.linspace(-2, 2, 7).reshape(1, 7)
STEPS = 10


def _model_sigma(scheduler: object, timestep: Tensor) -> float:
    index = scheduler.step_index  # type: ignore[attr-defined]
    if index is None:
        index = scheduler.index_for_timestep(timestep)  # type: ignore[attr-defined]
    if hasattr(scheduler, "sigmas_interpol") and not scheduler.state_in_first_order:  # type: ignore[attr-defined]
        return float(scheduler.sigmas_interpol[index])  # type: ignore[attr-defined]
    return float(scheduler.sigmas[index])  # type: ignore[attr-defined]


def _run_diffusers(
    scheduler: object, vp: bool, stop_before_last: bool = False, **step_kw: object
) -> Tensor:
    """Run a diffusers scheduler with the toy model; return the sample in VE scale."""
    sigma0 = float(scheduler.sigmas[0])  # type: ignore[attr-defined]
    sample = START * sigma0 / (math.sqrt(1 + sigma0**2) if vp else 1.0)
    timesteps = list(scheduler.timesteps)  # type: ignore[attr-defined]
    if stop_before_last:
        timesteps = timesteps[:-1]
    for t in timesteps:
        sigma = _model_sigma(scheduler, t)
        x = scheduler.scale_model_input(sample, t) * math.sqrt(1 + sigma**2)  # type: ignore[attr-defined]
        eps = (x - gaussian_denoiser(x, torch.tensor([sigma]))) / sigma
        sample = scheduler.step(eps, t, sample, **step_kw).prev_sample  # type: ignore[attr-defined]
    if vp and stop_before_last:
        sample = sample * math.sqrt(1 + float(scheduler.sigmas[-2]) ** 2)  # type: ignore[attr-defined]
    return sample


def _ours(name: str, sigmas: Tensor, **options: object) -> Tensor:
    noise = batch_noise((7,), [0])
    return get_sampler(name)(gaussian_denoiser, START * sigmas[0], sigmas, noise=noise, **options)


@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize(
    ("name", "scheduler_class"),
    [
        ("Euler", EulerDiscreteScheduler),
        ("Heun", HeunDiscreteScheduler),
        ("DPM2", KDPM2DiscreteScheduler),
    ],
)
def test_karras_ode_solvers_match_diffusers(name: str, scheduler_class: type, karras: bool) -> None:
    scheduler = scheduler_class(**SD, use_karras_sigmas=karras, timestep_spacing="linspace")
    scheduler.set_timesteps(STEPS)
    sigmas = scheduler.sigmas.float()
    sigmas = {"Euler": sigmas, "Heun": torch.cat([sigmas[:1], sigmas[1::2]]), "DPM2": sigmas[0::2]}[
        name
    ]
    assert sigmas.shape == (STEPS + 1,)
    expected = _run_diffusers(scheduler, vp=False)
    torch.testing.assert_close(_ours(name, sigmas), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("karras", [False, True])
def test_dpmpp_2m_matches_diffusers(karras: bool) -> None:
    scheduler = DPMSolverMultistepScheduler(
        **SD, use_karras_sigmas=karras, algorithm_type="dpmsolver++", solver_order=2,
        final_sigmas_type="zero", lower_order_final=True,
    )  # fmt: skip
    scheduler.set_timesteps(STEPS)
    expected = _run_diffusers(scheduler, vp=True)
    torch.testing.assert_close(
        _ours("DPM++ 2M", scheduler.sigmas.float()), expected, rtol=0, atol=2e-6
    )


@pytest.mark.parametrize("karras", [False, True])
def test_unipc_bh2_matches_diffusers(karras: bool) -> None:
    scheduler = UniPCMultistepScheduler(
        **SD, use_karras_sigmas=karras, solver_order=3, solver_type="bh2",
        final_sigmas_type="zero", lower_order_final=True,
    )  # fmt: skip
    scheduler.set_timesteps(STEPS)
    expected = _run_diffusers(scheduler, vp=True)
    ours = _ours("UniPC", scheduler.sigmas.float(), variant="bh2")
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-6)


def test_unipc_bh1_matches_diffusers_up_to_the_final_step() -> None:
    """diffusers' bh1 turns the last step to sigma 0 into NaN; compare just before it."""
    scheduler = UniPCMultistepScheduler(
        **SD, use_karras_sigmas=True, solver_order=3, solver_type="bh1",
        final_sigmas_type="zero", lower_order_final=True,
    )  # fmt: skip
    scheduler.set_timesteps(STEPS)
    expected = _run_diffusers(scheduler, vp=True, stop_before_last=True)
    seen: list[Tensor] = []
    final = _ours("UniPC", scheduler.sigmas.float(), callback=lambda info: seen.append(info.x))
    torch.testing.assert_close(seen[-1], expected, rtol=0, atol=2e-6)
    assert bool(torch.isfinite(final).all())


def test_euler_ancestral_matches_diffusers_with_the_same_generator() -> None:
    class GeneratorNoise:
        def __init__(self, seed: int) -> None:
            self.generator = torch.Generator().manual_seed(seed)

        def randn_like(self, x: Tensor) -> Tensor:
            return torch.randn(x.shape, generator=self.generator, dtype=x.dtype)

    scheduler = EulerAncestralDiscreteScheduler(**SD)
    scheduler.set_timesteps(STEPS)
    expected = _run_diffusers(scheduler, vp=False, generator=torch.Generator().manual_seed(5))
    sigmas = scheduler.sigmas.float()
    ours = get_sampler("Euler a")(
        gaussian_denoiser, START * sigmas[0], sigmas, noise=GeneratorNoise(5)
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-6)
