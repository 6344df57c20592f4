"""The samplers by A1111 name: lookup, legacy combined names, schedules per sampler, API listings.

Unlike A1111, an unknown sampler or schedule name is an error that lists the valid names; A1111
silently falls back to its first sampler.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError
from brushwork.samplers import ddim, dpmpp, karras, unipc
from brushwork.samplers.schedules import (
    AUTOMATIC,
    SCHEDULES,
    ScheduleInfo,
    ScheduleOptions,
    get_schedule,
    schedule_keys,
)
from brushwork.samplers.sigmas import ModelSigmas, lcm_model_sigmas
from brushwork.samplers.types import Denoiser, NoiseSource, StepCallback

SamplerFunction = Callable[..., Tensor]
_NOT_OPTIONS = ("noise", "callback")


@dataclass(frozen=True, eq=False)
class SamplerInfo:
    """One sampler: its solver, A1111 names and defaults.

    ``default_schedule`` is A1111's ``scheduler`` option (what "Automatic" means and what infotext
    writes); ``automatic_schedule`` is what Automatic means here when A1111 has no default.
    """

    name: str
    function: SamplerFunction
    aliases: tuple[str, ...] = ()
    also_accepted: tuple[str, ...] = ()
    default_schedule: str | None = None
    automatic_schedule: str = "automatic"
    discard_penultimate_sigma: bool = False
    second_order: bool = False
    brownian_noise: bool = False
    uses_ensd: bool = False
    sigma_table: Literal["model", "lcm"] = "model"
    fixed_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def option_defaults(self) -> dict[str, Any]:
        """The options this sampler takes (eta, s_noise, order...) with their defaults."""
        parameters = inspect.signature(self.function).parameters.values()
        return {
            p.name: p.default
            for p in parameters
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name not in _NOT_OPTIONS
            and p.name not in self.fixed_options
        }

    def __call__(
        self,
        model: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise: NoiseSource,
        callback: StepCallback | None = None,
        **options: Any,
    ) -> Tensor:
        """Run the solver; an option it does not take is a ConfigError naming the valid ones."""
        known = self.option_defaults()
        unknown = sorted(set(options) - set(known))
        if unknown:
            valid = ", ".join(known) or "none"
            raise ConfigError(
                f"sampler {self.name} has no option {', '.join(unknown)}; its options: {valid}"
            )
        return self.function(
            model, x, sigmas, noise=noise, callback=callback, **self.fixed_options, **options
        )

    def api_options(self) -> dict[str, str | bool]:
        """The ``options`` field A1111's ``/sdapi/v1/samplers`` shows for this sampler."""
        options: dict[str, str | bool] = {}
        if self.default_schedule is not None:
            options["scheduler"] = self.default_schedule
        if self.discard_penultimate_sigma:
            options["discard_next_to_last_sigma"] = True
        if self.second_order:
            options["second_order"] = True
        if self.brownian_noise:
            options["brownian_noise"] = True
        if self.uses_ensd:
            options["uses_ensd"] = True
        options.update({k: v for k, v in self.fixed_options.items() if isinstance(v, str | bool)})
        return options

    def api_item(self) -> dict[str, object]:
        """The item ``/sdapi/v1/samplers`` returns for this sampler."""
        return {"name": self.name, "aliases": list(self.aliases), "options": self.api_options()}


def _fixed(**options: Any) -> Mapping[str, Any]:
    return MappingProxyType(options)


SAMPLERS: tuple[SamplerInfo, ...] = (
    SamplerInfo("DPM++ 2M", dpmpp.sample_dpmpp_2m, ("k_dpmpp_2m",), ("dpmpp_2m",), "karras"),
    SamplerInfo(
        "DPM++ SDE",
        dpmpp.sample_dpmpp_sde,
        ("k_dpmpp_sde",),
        ("dpmpp_sde",),
        "karras",
        second_order=True,
        brownian_noise=True,
    ),
    SamplerInfo(
        "DPM++ 2M SDE",
        dpmpp.sample_dpmpp_2m_sde,
        ("k_dpmpp_2m_sde",),
        ("dpmpp_2m_sde",),
        "exponential",
        brownian_noise=True,
    ),
    SamplerInfo(
        "DPM++ 2M SDE Heun",
        dpmpp.sample_dpmpp_2m_sde,
        ("k_dpmpp_2m_sde_heun",),
        ("dpmpp_2m_sde_heun",),
        "exponential",
        brownian_noise=True,
        fixed_options=_fixed(solver_type="heun"),
    ),
    SamplerInfo(
        "DPM++ 2S a",
        dpmpp.sample_dpmpp_2s_ancestral,
        ("k_dpmpp_2s_a",),
        ("dpmpp_2s_ancestral",),
        "karras",
        uses_ensd=True,
        second_order=True,
    ),
    SamplerInfo(
        "DPM++ 3M SDE",
        dpmpp.sample_dpmpp_3m_sde,
        ("k_dpmpp_3m_sde",),
        ("dpmpp_3m_sde",),
        "exponential",
        discard_penultimate_sigma=True,
        brownian_noise=True,
    ),
    SamplerInfo(
        "Euler a",
        karras.sample_euler_ancestral,
        ("k_euler_a", "k_euler_ancestral"),
        ("euler_ancestral", "euler_a"),
        uses_ensd=True,
    ),
    SamplerInfo("Euler", karras.sample_euler, ("k_euler",), ("euler",)),
    SamplerInfo("LMS", karras.sample_lms, ("k_lms",), ("lms",)),
    SamplerInfo("Heun", karras.sample_heun, ("k_heun",), ("heun",), second_order=True),
    SamplerInfo(
        "DPM2",
        karras.sample_dpm_2,
        ("k_dpm_2",),
        ("dpm_2",),
        "karras",
        discard_penultimate_sigma=True,
        second_order=True,
    ),
    SamplerInfo(
        "DPM2 a",
        karras.sample_dpm_2_ancestral,
        ("k_dpm_2_a",),
        ("dpm_2_ancestral",),
        "karras",
        discard_penultimate_sigma=True,
        uses_ensd=True,
        second_order=True,
    ),
    SamplerInfo("DDIM", ddim.sample_ddim, ("ddim",), automatic_schedule="ddim"),
    SamplerInfo("PLMS", ddim.sample_plms, ("plms",), automatic_schedule="ddim"),
    SamplerInfo("UniPC", unipc.sample_unipc, ("unipc",), ("uni_pc",)),
    SamplerInfo("LCM", ddim.sample_lcm, ("k_lcm",), ("lcm",), sigma_table="lcm"),
)


def _find_sampler(name: str) -> SamplerInfo | None:
    wanted = name.strip().casefold()
    for sampler in SAMPLERS:
        names = (sampler.name, *sampler.aliases, *sampler.also_accepted)
        if wanted in (candidate.casefold() for candidate in names):
            return sampler
    return None


def _unknown_sampler(name: object) -> ConfigError:
    valid = ", ".join(s.name for s in SAMPLERS)
    return ConfigError(f"unknown sampler {name!r}; valid samplers: {valid}")


def _split_schedule_suffix(name: str) -> tuple[SamplerInfo, ScheduleInfo] | None:
    """``"DPM++ 2M Karras"`` -> (DPM++ 2M, Karras): a legacy name with the schedule at the end."""
    folded = name.strip().casefold()
    for schedule in SCHEDULES:
        for key in schedule_keys(schedule):
            suffix = " " + key.casefold()
            if folded.endswith(suffix):
                sampler = _find_sampler(folded[: -len(suffix)])
                if sampler is not None:
                    return sampler, schedule
    return None


def get_sampler(name: str) -> SamplerInfo:
    """The sampler with this A1111 name or alias (any case); a legacy combined name also works.

    ``"DPM++ 2M Karras"`` gives DPM++ 2M (use :func:`resolve_sampler_name` to keep the schedule).
    """
    if not isinstance(name, str):
        raise _unknown_sampler(name)
    sampler = _find_sampler(name)
    if sampler is None:
        split = _split_schedule_suffix(name)
        if split is None:
            raise _unknown_sampler(name)
        sampler = split[0]
    return sampler


def resolve_sampler_name(name: str, schedule: str | None = None) -> tuple[str, str]:
    """The canonical sampler name and schedule label for a request.

    A schedule at the end of the sampler name (pre-1.9 infotext: ``"DPM++ 2M Karras"``) wins over
    ``schedule``, as in A1111; no schedule at all means ``"Automatic"``.
    """
    if not isinstance(name, str):
        raise _unknown_sampler(name)
    sampler = _find_sampler(name)
    if sampler is not None:
        label = get_schedule(schedule).label if schedule else AUTOMATIC
        return sampler.name, label
    split = _split_schedule_suffix(name)
    if split is None:
        raise _unknown_sampler(name)
    if schedule:
        get_schedule(schedule)  # still reject a bad explicit schedule
    return split[0].name, split[1].label


def _as_sampler(sampler: str | SamplerInfo) -> SamplerInfo:
    return sampler if isinstance(sampler, SamplerInfo) else get_sampler(sampler)


def effective_schedule(
    sampler: str | SamplerInfo, schedule: str | ScheduleInfo = AUTOMATIC
) -> ScheduleInfo:
    """The schedule that actually runs: Automatic becomes the sampler's default."""
    info = _as_sampler(sampler)
    chosen = schedule if isinstance(schedule, ScheduleInfo) else get_schedule(schedule)
    if not chosen.is_automatic:
        return chosen
    return get_schedule(info.default_schedule or info.automatic_schedule)


def schedule_label(sampler: str | SamplerInfo, schedule: str | ScheduleInfo = AUTOMATIC) -> str:
    """What infotext writes as ``Schedule type``: the sampler's default label, else Automatic."""
    info = _as_sampler(sampler)
    chosen = schedule if isinstance(schedule, ScheduleInfo) else get_schedule(schedule)
    if chosen.is_automatic and info.default_schedule is None:
        return AUTOMATIC
    return effective_schedule(info, chosen).label


def make_sigmas(
    sampler: str | SamplerInfo,
    steps: int,
    model: ModelSigmas,
    schedule: str | ScheduleInfo = AUTOMATIC,
    options: ScheduleOptions | None = None,
    *,
    discard_penultimate_sigma: bool | None = None,
) -> Tensor:
    """The noise levels a sampler runs for ``steps`` steps, as A1111 builds them.

    Automatic picks the sampler's default schedule; DPM2, DPM2 a and DPM++ 3M SDE compute one
    step more and drop the next-to-last sigma; LCM walks its reduced timestep table.
    """
    info = _as_sampler(sampler)
    chosen = effective_schedule(info, schedule)
    table = lcm_model_sigmas(model) if info.sigma_table == "lcm" else model
    discard = (
        info.discard_penultimate_sigma
        if discard_penultimate_sigma is None
        else discard_penultimate_sigma
    )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    sigmas = chosen(steps + 1 if discard else steps, table, options)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def img2img_steps(
    steps: int, denoising_strength: float, *, fix_steps: bool = False
) -> tuple[int, int]:
    """``(schedule_steps, t_enc)`` for img2img, as A1111's ``setup_img2img_steps``.

    The run starts ``t_enc + 1`` steps from the end of a ``schedule_steps`` schedule. With
    ``fix_steps`` (A1111's "img2img_fix_steps") exactly ``steps`` steps run.
    """
    if not 0.0 <= denoising_strength <= 1.0:
        raise ConfigError(f"denoising strength must lie in [0, 1], got {denoising_strength}")
    strength = min(denoising_strength, 0.999)
    if fix_steps:
        return (int(steps / strength) if denoising_strength > 0 else 0), steps - 1
    return steps, int(strength * steps)


def img2img_sigmas(sigmas: Tensor, schedule_steps: int, t_enc: int) -> Tensor:
    """The tail of a full schedule an img2img run walks (``sigmas[steps - t_enc - 1:]``)."""
    return sigmas[schedule_steps - t_enc - 1 :]


def list_samplers() -> tuple[SamplerInfo, ...]:
    """Every sampler, in A1111's order."""
    return SAMPLERS


def api_samplers() -> list[dict[str, object]]:
    """The body of ``GET /sdapi/v1/samplers``."""
    return [sampler.api_item() for sampler in SAMPLERS]


def api_schedules() -> list[dict[str, object]]:
    """The body of ``GET /sdapi/v1/schedulers``."""
    return [schedule.api_item() for schedule in SCHEDULES]
