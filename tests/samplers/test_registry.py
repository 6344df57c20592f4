"""Sampler lookup by A1111 names, legacy combined names, per-sampler schedules, API listings."""

from __future__ import annotations

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.samplers import (
    ModelSigmas,
    api_samplers,
    api_schedules,
    batch_noise,
    get_sampler,
    get_schedule,
    img2img_sigmas,
    img2img_steps,
    lcm_model_sigmas,
    list_samplers,
    make_sigmas,
    resolve_sampler_name,
    schedule_label,
)

A1111_NAMES = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DDIM", "PLMS", "UniPC", "LCM",
]  # fmt: skip


def test_samplers_are_listed_in_a1111_order() -> None:
    assert [s.name for s in list_samplers()] == A1111_NAMES


@pytest.mark.parametrize(
    ("alias", "name"),
    [("k_euler_a", "Euler a"), ("K_EULER_ANCESTRAL", "Euler a"), ("euler_ancestral", "Euler a"),
     ("k_dpmpp_2m", "DPM++ 2M"), ("dpm++ 2m", "DPM++ 2M"), ("ddim", "DDIM"), ("k_lcm", "LCM"),
     ("k_dpm_2_a", "DPM2 a"), ("unipc", "UniPC"), ("  Euler  ", "Euler")],
)  # fmt: skip
def test_aliases_in_any_case(alias: str, name: str) -> None:
    assert get_sampler(alias).name == name


@pytest.mark.parametrize(
    ("given", "expected"),
    [("DPM++ 2M Karras", ("DPM++ 2M", "Karras")), ("DPM++ 2M SDE Karras", ("DPM++ 2M SDE", "Karras")),
     ("DPM++ 2M SDE Heun Exponential", ("DPM++ 2M SDE Heun", "Exponential")),
     ("Euler a", ("Euler a", "Automatic")), ("DPM++ 2M SDE Heun", ("DPM++ 2M SDE Heun", "Automatic")),
     ("LMS Karras", ("LMS", "Karras")), ("k_dpmpp_2m sgm_uniform", ("DPM++ 2M", "SGM Uniform")),
     ("DPM2 a karras", ("DPM2 a", "Karras"))],
)  # fmt: skip
def test_legacy_combined_names_split_into_sampler_and_schedule(
    given: str, expected: tuple[str, str]
) -> None:
    assert resolve_sampler_name(given) == expected
    assert get_sampler(given).name == expected[0]


def test_an_explicit_schedule_is_kept_unless_the_name_carries_one() -> None:
    assert resolve_sampler_name("Euler", "karras") == ("Euler", "Karras")
    assert resolve_sampler_name("DPM++ 2M Karras", "Exponential") == ("DPM++ 2M", "Karras")
    with pytest.raises(ConfigError, match="unknown schedule"):
        resolve_sampler_name("Euler", "Sharp")


@pytest.mark.parametrize("bad", ["Euler b", "DPM++ 2M Sharp", "", "Karras", None])
def test_unknown_sampler_names_list_the_valid_ones(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        get_sampler(bad)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "unknown sampler" in message
    for name in A1111_NAMES:
        assert name in message
    with pytest.raises(ConfigError, match="valid samplers"):
        resolve_sampler_name(bad)  # type: ignore[arg-type]


def test_unknown_options_name_the_valid_ones(table: ModelSigmas) -> None:
    sampler = get_sampler("Euler a")
    assert sampler.option_defaults() == {"eta": 1.0, "s_noise": 1.0}
    with pytest.raises(ConfigError, match=r"no option s_churn; its options: eta, s_noise"):
        sampler(lambda x, s: x, torch.ones(1, 2), make_sigmas(sampler, 2, table),
                noise=batch_noise((2,), [0]), s_churn=1.0)  # fmt: skip


def test_fixed_options_are_not_user_options() -> None:
    assert "solver_type" not in get_sampler("DPM++ 2M SDE Heun").option_defaults()
    assert get_sampler("DPM++ 2M SDE").option_defaults()["solver_type"] == "midpoint"
    assert get_sampler("DDIM").option_defaults() == {"eta": 0.0}


def test_automatic_uses_each_sampler_default(table: ModelSigmas) -> None:
    assert torch.equal(make_sigmas("DPM++ 2M", 10, table), get_schedule("Karras")(10, table))
    assert torch.equal(
        make_sigmas("DPM++ 2M SDE", 10, table), get_schedule("Exponential")(10, table)
    )
    assert torch.equal(make_sigmas("Euler a", 10, table), table.default_sigmas(10))
    assert torch.equal(make_sigmas("DDIM", 10, table), get_schedule("DDIM")(10, table))
    assert torch.equal(make_sigmas("Euler", 10, table, "Karras"), get_schedule("Karras")(10, table))


@pytest.mark.parametrize("name", ["DPM2", "DPM2 a", "DPM++ 3M SDE"])
def test_penultimate_sigma_is_discarded_where_a1111_does(name: str, table: ModelSigmas) -> None:
    sigmas = make_sigmas(name, 10, table, "Karras")
    full = get_schedule("Karras")(11, table)
    assert sigmas.shape == (11,)
    assert torch.equal(sigmas, torch.cat([full[:-2], full[-1:]]))
    kept = make_sigmas(name, 10, table, "Karras", discard_penultimate_sigma=False)
    assert torch.equal(kept, get_schedule("Karras")(10, table))


def test_always_discard_can_be_forced(table: ModelSigmas) -> None:
    forced = make_sigmas("Euler", 5, table, "Karras", discard_penultimate_sigma=True)
    full = get_schedule("Karras")(6, table)
    assert torch.equal(forced, torch.cat([full[:-2], full[-1:]]))


def test_lcm_walks_its_reduced_timestep_table(table: ModelSigmas) -> None:
    lcm = lcm_model_sigmas(table)
    assert lcm.sigmas.shape == (50,)
    assert torch.equal(lcm.sigmas, table.sigmas[19::20])
    assert float(lcm.sigma_to_t(lcm.sigmas[:1])) == 19.0
    sigmas = make_sigmas("LCM", 4, table)
    assert float(sigmas[0]) == pytest.approx(table.sigma_max)
    assert float(sigmas[-2]) == pytest.approx(float(table.sigmas[19]))


def test_schedule_labels_for_infotext() -> None:
    assert schedule_label("DPM++ 2M") == "Karras"
    assert schedule_label("DPM++ 2M SDE", "automatic") == "Exponential"
    assert schedule_label("Euler a") == "Automatic"
    assert schedule_label("Euler a", "karras") == "Karras"
    assert schedule_label("DDIM") == "Automatic"


def test_img2img_steps_follow_a1111() -> None:
    assert img2img_steps(20, 0.75) == (20, 15)
    assert img2img_steps(20, 1.0) == (20, 19)
    assert img2img_steps(20, 0.5, fix_steps=True) == (40, 19)
    with pytest.raises(ConfigError, match="denoising strength"):
        img2img_steps(20, 1.5)


def test_img2img_sigmas_are_the_tail_of_the_schedule(table: ModelSigmas) -> None:
    steps, t_enc = img2img_steps(20, 0.5)
    full = make_sigmas("Euler", steps, table)
    tail = img2img_sigmas(full, steps, t_enc)
    assert tail.shape == (t_enc + 2,)
    assert torch.equal(tail, full[-(t_enc + 2) :])


def test_api_listings_have_a1111_fields() -> None:
    samplers = {item["name"]: item for item in api_samplers()}
    assert list(samplers) == A1111_NAMES
    assert samplers["DPM++ 2M"] == {
        "name": "DPM++ 2M",
        "aliases": ["k_dpmpp_2m"],
        "options": {"scheduler": "karras"},
    }
    assert samplers["DPM2 a"]["options"] == {
        "scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True, "uses_ensd": True,
    }  # fmt: skip
    assert samplers["DPM++ 2M SDE Heun"]["options"] == {
        "scheduler": "exponential", "brownian_noise": True, "solver_type": "heun",
    }  # fmt: skip
    assert samplers["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert samplers["DDIM"]["options"] == {}
    assert next(item["name"] for item in api_schedules()) == "automatic"
