"""Every solver on toy problems with known answers: accuracy, order, noise statistics, determinism."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers import (
    ModelSigmas,
    ScheduleOptions,
    StepInfo,
    batch_noise,
    get_sampler,
    get_schedule,
    list_samplers,
    make_sigmas,
)

from .conftest import (
    MU,
    CountingDenoiser,
    S,
    exact_ode_solution,
    gaussian_denoiser,
    gaussian_start,
)

ALL = [s.name for s in list_samplers()]
DETERMINISTIC = ["Euler", "Heun", "DPM2", "LMS", "DPM++ 2M", "UniPC", "PLMS", "DDIM"]
STOCHASTIC = [
    "Euler a",
    "DPM2 a",
    "DPM++ 2S a",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE",
]
TWO_CALLS_PER_STEP = ["Heun", "DPM2", "DPM2 a", "DPM++ SDE", "DPM++ 2S a"]


def point_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    """All data sits at MU: the exact denoiser ignores x."""
    return torch.full_like(x, MU)


def _karras(steps: int, table: ModelSigmas, sigma_min: float = 1e-3) -> Tensor:
    options = ScheduleOptions(sigma_min=sigma_min, sigma_max=10.0)
    return get_schedule("Karras")(steps, table, options).double()


def _ode_error(name: str, steps: int, table: ModelSigmas) -> float:
    sigmas = _karras(steps, table)
    unit = torch.linspace(-3, 3, 9, dtype=torch.float64).reshape(1, 9)
    start = gaussian_start(unit, float(sigmas[0]))
    out = get_sampler(name)(gaussian_denoiser, start, sigmas, noise=batch_noise((9,), [0]))
    return float((out - exact_ode_solution(start, float(sigmas[0]))).abs().max())


@pytest.mark.parametrize("name", ALL)
def test_every_sampler_lands_on_point_data(name: str, table: ModelSigmas) -> None:
    sigmas = make_sigmas(name, 8, table)
    noise = batch_noise((3, 4), [1, 2])
    x = noise.first() * sigmas[0]
    out = get_sampler(name)(point_denoiser, x, sigmas, noise=noise)
    torch.testing.assert_close(out, torch.full_like(out, MU), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("Euler", 0.15),
        ("DDIM", 0.15),
        ("Heun", 0.02),
        ("DPM2", 0.01),
        ("LMS", 0.01),
        ("DPM++ 2M", 0.02),
        ("UniPC", 0.005),
        ("PLMS", 0.01),
    ],
)
def test_deterministic_samplers_follow_the_exact_ode(
    name: str, tolerance: float, table: ModelSigmas
) -> None:
    assert _ode_error(name, 32, table) < tolerance


def test_euler_converges_at_first_order(table: ModelSigmas) -> None:
    ratio = _ode_error("Euler", 16, table) / _ode_error("Euler", 32, table)
    assert 1.8 < ratio < 2.2


@pytest.mark.parametrize("name", ["Heun", "DPM2", "DPM++ 2M"])
def test_second_order_samplers_converge_at_second_order(name: str, table: ModelSigmas) -> None:
    ratio = _ode_error(name, 16, table) / _ode_error(name, 32, table)
    assert 3.5 < ratio < 6.0


@pytest.mark.parametrize("name", ["LMS", "UniPC"])
def test_higher_order_samplers_beat_second_order(name: str, table: ModelSigmas) -> None:
    assert _ode_error(name, 16, table) / _ode_error(name, 32, table) > 6.0


def _sample_gaussian(
    name: str, steps: int, table: ModelSigmas, **options: float
) -> tuple[Tensor, Tensor, Tensor]:
    sigmas = make_sigmas(name, steps, table)
    noise = batch_noise((1, 32, 32), list(range(4)))
    x = gaussian_start(noise.first(), float(sigmas[0]))
    return get_sampler(name)(gaussian_denoiser, x, sigmas, noise=noise, **options), x, sigmas


@pytest.mark.parametrize("name", [s for s in STOCHASTIC if s != "Euler a"])
def test_stochastic_samplers_reach_the_data_distribution(name: str, table: ModelSigmas) -> None:
    out, x, sigmas = _sample_gaussian(name, 40, table)
    assert abs(out.mean().item() - MU) < 0.03
    assert abs(out.std().item() - S) < 0.04
    # The noise is real: the result is not the deterministic ODE solution.
    assert (out - exact_ode_solution(x, float(sigmas[0]))).abs().mean().item() > 0.1


def _euler_ancestral_std(sigmas: list[float]) -> float:
    """The exact output std of Euler a on Gaussian data, step by step (its first-order bias)."""
    variance = S**2 + sigmas[0] ** 2
    for sigma, sigma_next in itertools.pairwise(sigmas):
        sigma_up = min(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        gain = 1 + sigma * (sigma_down - sigma) / (S**2 + sigma**2)
        variance = gain**2 * variance + sigma_up**2
    return variance**0.5


@pytest.mark.parametrize(("name", "options"), [("Euler a", {}), ("DDIM", {"eta": 1.0})])
def test_euler_ancestral_output_spread_matches_theory(
    name: str, options: dict[str, float], table: ModelSigmas
) -> None:
    out, _, sigmas = _sample_gaussian(name, 40, table, **options)
    assert abs(out.mean().item() - MU) < 0.03
    assert abs(out.std().item() - _euler_ancestral_std(sigmas.double().tolist())) < 0.015


@pytest.mark.parametrize("name", ALL)
def test_same_seeds_give_bit_identical_results(name: str, table: ModelSigmas) -> None:
    def run(seeds: list[int]) -> Tensor:
        sigmas = make_sigmas(name, 6, table)
        noise = batch_noise((2, 3), seeds)
        return get_sampler(name)(gaussian_denoiser, noise.first() * sigmas[0], sigmas, noise=noise)

    assert torch.equal(run([7, 8]), run([7, 8]))


@pytest.mark.parametrize("name", [*STOCHASTIC, "LCM"])
def test_batch_items_equal_single_runs(name: str, table: ModelSigmas) -> None:
    """A1111's promise: image i of a batch is the image its seed gives alone."""

    def run(seeds: list[int]) -> Tensor:
        sigmas = make_sigmas(name, 6, table)
        noise = batch_noise((2, 3), seeds, source="nv")
        return get_sampler(name)(gaussian_denoiser, noise.first() * sigmas[0], sigmas, noise=noise)

    batch = run([21, 22, 23])
    torch.testing.assert_close(batch[1:2], run([22]), rtol=0, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_depend_on_the_seed_beyond_the_start(
    name: str, table: ModelSigmas
) -> None:
    sigmas = make_sigmas(name, 6, table)
    start = torch.randn((1, 8), generator=torch.Generator().manual_seed(0)) * sigmas[0]
    first = get_sampler(name)(gaussian_denoiser, start, sigmas, noise=batch_noise((8,), [1]))
    second = get_sampler(name)(gaussian_denoiser, start, sigmas, noise=batch_noise((8,), [2]))
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("name", ALL)
def test_callback_reports_every_step_before_it_is_taken(name: str, table: ModelSigmas) -> None:
    sigmas = make_sigmas(name, 5, table)
    seen: list[StepInfo] = []
    noise = batch_noise((4,), [0])
    get_sampler(name)(
        gaussian_denoiser, noise.first() * sigmas[0], sigmas, noise=noise, callback=seen.append
    )
    total = len(sigmas) - 1
    assert [info.i for info in seen] == list(range(total))
    assert all(info.total == total for info in seen)
    assert [info.sigma for info in seen] == pytest.approx(sigmas[:-1].tolist())
    assert all(info.denoised.shape == (1, 4) for info in seen)


@pytest.mark.parametrize("name", ALL)
def test_model_calls_per_step(name: str, table: ModelSigmas) -> None:
    sigmas = make_sigmas(name, 6, table)
    steps = len(sigmas) - 1
    model = CountingDenoiser()
    noise = batch_noise((4,), [0])
    get_sampler(name)(model, noise.first() * sigmas[0], sigmas, noise=noise)
    if name in TWO_CALLS_PER_STEP:
        assert steps < model.calls <= 2 * steps
    elif name == "PLMS":
        assert model.calls == steps + 1  # its first step is a Heun step
    else:
        assert model.calls == steps


def test_ddim_with_eta_zero_is_euler_and_with_eta_one_is_euler_ancestral(
    table: ModelSigmas,
) -> None:
    sigmas = make_sigmas("Euler", 7, table)

    def run(name: str, **options: float) -> Tensor:
        noise = batch_noise((5,), [3])
        return get_sampler(name)(
            gaussian_denoiser, noise.first() * sigmas[0], sigmas, noise=noise, **options
        )

    assert torch.equal(run("DDIM"), run("Euler"))
    assert torch.equal(run("DDIM", eta=1.0), run("Euler a"))


def test_euler_churn_adds_seeded_noise(table: ModelSigmas) -> None:
    sigmas = make_sigmas("Euler", 6, table)

    def run(seed: int, churn: float) -> Tensor:
        noise = batch_noise((5,), [seed])
        x = torch.ones(1, 5) * sigmas[0]
        return get_sampler("Euler")(gaussian_denoiser, x, sigmas, noise=noise, s_churn=churn)

    assert torch.equal(run(1, 1.0), run(1, 1.0))
    assert not torch.allclose(run(1, 1.0), run(1, 0.0))
    assert not torch.allclose(run(1, 1.0), run(2, 1.0))
    assert torch.equal(run(1, 0.0), run(2, 0.0))


def test_ancestral_eta_zero_is_deterministic(table: ModelSigmas) -> None:
    sigmas = make_sigmas("Euler a", 6, table)
    start = torch.ones(1, 5) * sigmas[0]
    one = get_sampler("Euler a")(
        gaussian_denoiser, start, sigmas, noise=batch_noise((5,), [1]), eta=0.0
    )
    two = get_sampler("Euler a")(
        gaussian_denoiser, start, sigmas, noise=batch_noise((5,), [2]), eta=0.0
    )
    assert torch.equal(one, two)


def test_solvers_keep_dtype_and_device(table: ModelSigmas) -> None:
    sigmas = make_sigmas("DPM++ 2M SDE", 4, table)
    x = torch.ones(2, 3, dtype=torch.float64) * sigmas[0]
    out = get_sampler("DPM++ 2M SDE")(gaussian_denoiser, x, sigmas, noise=batch_noise((3,), [1, 2]))
    assert out.dtype == torch.float64


@pytest.mark.parametrize(
    "sigmas",
    [
        torch.tensor([1.0, 2.0, 0.0]),
        torch.tensor([0.0, 0.0]),
        torch.tensor([3.0, 3.0, 0.0]),
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([1.0]),
        torch.tensor([1.0, math.nan, 0.0]),
    ],
)
def test_bad_sigma_lists_are_refused(sigmas: Tensor) -> None:
    with pytest.raises(ConfigError, match="sigmas"):
        get_sampler("Euler")(
            gaussian_denoiser, torch.ones(1, 2), sigmas, noise=batch_noise((2,), [0])
        )
