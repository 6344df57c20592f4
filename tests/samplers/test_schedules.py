"""Sigma schedules: A1111's names, ranges, shapes and formulas."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.samplers import ModelSigmas, ScheduleOptions, get_schedule, list_schedules, sd_sigmas
from brushwork.samplers.betadist import beta_cdf, beta_ppf
from brushwork.samplers.schedules import AYS_SD1, AYS_SDXL

SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}
DIFFUSERS_SD = {**SD_BETAS, "beta_schedule": "scaled_linear"}
ALL_LABELS = [s.label for s in list_schedules()]


def test_sd_sigma_table_spans_a1111_range(table: ModelSigmas) -> None:
    assert table.sigmas.shape == (1000,)
    assert table.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert table.sigma_max == pytest.approx(14.6146, abs=1e-4)
    alphas_cumprod = EulerDiscreteScheduler(**DIFFUSERS_SD).alphas_cumprod
    torch.testing.assert_close(
        table.sigmas, ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5, rtol=2e-5, atol=0
    )


def test_timestep_sigma_maps_invert_each_other(table: ModelSigmas) -> None:
    t = torch.tensor([0.0, 1.5, 499.25, 999.0])
    torch.testing.assert_close(table.sigma_to_t(table.t_to_sigma(t)), t, atol=1e-3, rtol=0)
    assert float(table.sigma_to_t(table.sigmas[10:11], quantize=True)) == 10.0


@pytest.mark.parametrize(
    "label", [label for label in ALL_LABELS if label not in ("DDIM", "KL Optimal")]
)
def test_schedule_shape_ends_and_order(label: str, table: ModelSigmas) -> None:
    sigmas = get_schedule(label)(10, table)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (11,)
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all()), f"{label} must strictly decrease: {sigmas}"
    assert float(sigmas[0]) == pytest.approx(table.sigma_max, rel=1e-3)
    if label not in ("SGM Uniform", "Align Your Steps", "Simple"):
        assert float(sigmas[-2]) == pytest.approx(table.sigma_min, rel=1e-3)


def test_sgm_uniform_stops_one_timestep_stride_above_the_bottom(table: ModelSigmas) -> None:
    sigmas = get_schedule("SGM Uniform")(10, table)
    assert float(sigmas[-2]) == pytest.approx(float(table.t_to_sigma(torch.tensor(99.9))), rel=1e-4)


def test_karras_matches_the_formula_by_hand(table: ModelSigmas) -> None:
    sigmas = get_schedule("Karras")(3, table, ScheduleOptions(sigma_min=0.1, sigma_max=10.0))
    lo, hi = 0.1 ** (1 / 7), 10.0 ** (1 / 7)
    expected = [(hi + r * (lo - hi)) ** 7 for r in (0.0, 0.5, 1.0)] + [0.0]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-5)


def test_rho_override_changes_karras_but_not_the_ends(table: ModelSigmas) -> None:
    default = get_schedule("Karras")(8, table)
    softer = get_schedule("Karras")(8, table, ScheduleOptions(rho=3.0))
    assert float(default[0]) == pytest.approx(float(softer[0]), rel=1e-6)
    assert float(default[-2]) == pytest.approx(float(softer[-2]), rel=1e-6)
    assert float(softer[4]) > float(default[4])


def test_exponential_is_evenly_spaced_in_log_sigma(table: ModelSigmas) -> None:
    logs = get_schedule("Exponential")(6, table)[:-1].double().log()
    gaps = logs[:-1] - logs[1:]
    torch.testing.assert_close(gaps, torch.full_like(gaps, float(gaps[0])), rtol=1e-5, atol=0)
    polyexponential = get_schedule("Polyexponential")(6, table)
    torch.testing.assert_close(
        polyexponential, get_schedule("Exponential")(6, table), rtol=1e-6, atol=0
    )


def test_uniform_and_karras_match_diffusers(table: ModelSigmas) -> None:
    for karras, label in ((False, "Uniform"), (True, "Karras")):
        scheduler = EulerDiscreteScheduler(
            **DIFFUSERS_SD, use_karras_sigmas=karras, timestep_spacing="linspace"
        )
        scheduler.set_timesteps(12)
        ours = get_schedule(label)(12, table)
        torch.testing.assert_close(ours, scheduler.sigmas.float(), rtol=1e-5, atol=1e-6)


def test_ddim_schedule_walks_the_ddim_timesteps(table: ModelSigmas) -> None:
    scheduler = DDIMScheduler(**DIFFUSERS_SD, steps_offset=1, timestep_spacing="leading")
    scheduler.set_timesteps(20)
    ours = get_schedule("DDIM")(20, table)
    assert torch.equal(ours[:-1], table.sigmas[scheduler.timesteps])
    assert float(ours[-1]) == 0.0


def test_ddim_schedule_can_take_one_step_more_as_a1111(table: ModelSigmas) -> None:
    assert get_schedule("DDIM")(30, table).shape == (32,)  # stride 33: timesteps 1, 34, ..., 991


def test_simple_picks_evenly_strided_table_entries(table: ModelSigmas) -> None:
    sigmas = get_schedule("Simple")(4, table)
    assert sigmas[:-1].tolist() == [float(table.sigmas[k]) for k in (999, 749, 499, 249)]


def test_align_your_steps_uses_nvidia_tables() -> None:
    sd1, sdxl = sd_sigmas(), sd_sigmas(family=BaseFamily.SDXL)
    assert get_schedule("Align Your Steps")(11, sd1)[:-1].tolist() == pytest.approx(AYS_SD1)
    assert get_schedule("Align Your Steps")(11, sdxl)[:-1].tolist() == pytest.approx(AYS_SDXL)
    resampled = get_schedule("align_your_steps")(21, sd1)
    assert resampled.shape == (22,)
    assert resampled[:-1:2].tolist() == pytest.approx(AYS_SD1, rel=1e-5)


def test_kl_optimal_ends_at_sigma_min_as_a1111(table: ModelSigmas) -> None:
    sigmas = get_schedule("KL Optimal")(4, table)
    assert sigmas.shape == (5,)
    assert float(sigmas[-1]) == pytest.approx(table.sigma_min, rel=1e-5)
    angles = sigmas.double().arctan()
    gaps = angles[:-1] - angles[1:]
    torch.testing.assert_close(gaps, torch.full_like(gaps, float(gaps[0])), rtol=1e-4, atol=0)


def test_beta_schedule_follows_the_beta_quantiles(table: ModelSigmas) -> None:
    sigmas = get_schedule("Beta")(3, table)
    span = table.sigma_max - table.sigma_min
    assert sigmas.tolist() == pytest.approx(
        [table.sigma_max, table.sigma_min + 0.5 * span, table.sigma_min, 0.0], rel=1e-6
    )


def test_beta_quantile_function() -> None:
    assert beta_ppf(0.5, 0.6, 0.6) == pytest.approx(0.5, abs=1e-12)  # symmetric
    assert beta_ppf(0.3, 1.0, 1.0) == pytest.approx(0.3, abs=1e-12)  # uniform
    assert beta_ppf(0.75, 2.0, 1.0) == pytest.approx(math.sqrt(0.75), abs=1e-12)  # cdf x**2
    for q in (0.01, 0.2, 0.9):
        assert beta_cdf(beta_ppf(q, 0.6, 0.6), 0.6, 0.6) == pytest.approx(q, abs=1e-12)


def test_sigma_range_overrides_apply(table: ModelSigmas) -> None:
    sigmas = get_schedule("Exponential")(5, table, ScheduleOptions(sigma_min=0.5, sigma_max=8.0))
    assert float(sigmas[0]) == pytest.approx(8.0) and float(sigmas[-2]) == pytest.approx(0.5)


def test_names_labels_and_aliases_in_any_case() -> None:
    assert get_schedule("karras") is get_schedule("KARRAS") is get_schedule("Karras")
    assert get_schedule("SGMUniform") is get_schedule("sgm_uniform")


def test_unknown_schedule_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        get_schedule("Karras Exponential")
    for label in ALL_LABELS:
        assert label in str(caught.value)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_step_counts_are_refused(steps: object, table: ModelSigmas) -> None:
    with pytest.raises(ConfigError, match="steps"):
        get_schedule("Karras")(steps, table)  # type: ignore[arg-type]


def test_bad_sigma_range_is_refused(table: ModelSigmas) -> None:
    with pytest.raises(ConfigError, match="sigma_min < sigma_max"):
        get_schedule("Karras")(5, table, ScheduleOptions(sigma_min=20.0))


def test_api_listing_matches_a1111_fields() -> None:
    items = {item["name"]: item for item in (s.api_item() for s in list_schedules())}
    assert list(items)[:3] == ["automatic", "uniform", "karras"]
    assert items["karras"] == {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    }
    assert items["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert items["uniform"]["default_rho"] == -1.0
