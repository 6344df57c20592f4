"""The infotext of a generated image, and a request read back from one.

Fields and order as A1111's ``create_infotext`` (fixed fields first, then the extra fields in
the order A1111 adds them: hires and mask options at setup, ``Lora hashes`` when the networks
are applied, ``TI hashes`` and ``Emphasis`` when the prompts are encoded, sampler options when
sampling starts), ending with ``Version: brushwork <version>``.

Differences worth knowing: ``RNG`` is always written (``CPU`` or ``NV``: brushwork has no
device-dependent GPU source, A1111 omits ``RNG`` for its GPU default, and reading back an
infotext without ``RNG`` or with ``GPU`` uses ``nv``, the noise of NVIDIA cards); ``Seed resize
from`` is read back as width x height (A1111's reader swaps them); ``Extra LoRAs`` records LoRAs
applied without a prompt tag.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from brushwork import __version__
from brushwork.core.errors import ConfigError
from brushwork.generation.request import GenerationRequest, LoraChoice, MaskedContent
from brushwork.prompt import InfotextValue, format_infotext, parse_infotext
from brushwork.samplers import get_sampler, schedule_label

logger = logging.getLogger(__name__)

VERSION = f"brushwork {__version__}"
SIGMA_OPTIONS = (
    ("s_churn", "Sigma churn"),
    ("s_tmin", "Sigma tmin"),
    ("s_tmax", "Sigma tmax"),
    ("s_noise", "Sigma noise"),
)
SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"


@dataclass(frozen=True)
class ModelFacts:
    """What infotext says about the models used (hashes: A1111's short forms)."""

    model_name: str | None = None
    model_hash: str | None = None
    vae_name: str | None = None
    vae_hash: str | None = None
    lora_hashes: tuple[tuple[str, str], ...] = ()
    ti_hashes: tuple[tuple[str, str], ...] = ()
    version: str = VERSION


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler options a request sets, as passed to the solver and written to infotext."""

    options: Mapping[str, Any] = field(default_factory=dict)
    infotext: Mapping[str, Any] = field(default_factory=dict)
    uses_ensd: bool = False


def number(value: float | int) -> int | float:
    """A float that is a whole number written as an int (``7`` not ``7.0``), as A1111's UI."""
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    return value


def sampler_settings(request: GenerationRequest, sampler_name: str) -> SamplerSettings:
    """The eta / sigma options the sampler takes from the request (A1111's rules: eta when the
    solver has it; churn/tmin/tmax/noise only for Euler, Heun and DPM2; written when they
    differ from the solver's default)."""
    sampler = get_sampler(sampler_name)
    defaults = sampler.option_defaults()
    options: dict[str, Any] = {}
    written: dict[str, Any] = {}
    eta = defaults.get("eta")
    if "eta" in defaults and request.eta is not None:
        options["eta"] = request.eta
        eta = request.eta
        if request.eta != defaults["eta"]:
            written["Eta DDIM" if sampler.name == "DDIM" else "Eta"] = number(request.eta)
    if "s_churn" in defaults:
        for name, label in SIGMA_OPTIONS:
            value = getattr(request, name)
            if value is not None and value != defaults[name]:
                options[name] = value
                written[label] = number(value)
    uses_ensd = sampler.uses_ensd and eta != 0 and request.eta_noise_seed_delta != 0
    return SamplerSettings(options, written, uses_ensd)


def _hires_fields(request: GenerationRequest) -> dict[str, object]:
    if not request.enable_hr:
        return {}
    fields: dict[str, object] = {}
    if request.hr_resize_x == 0 and request.hr_resize_y == 0:
        fields["Hires upscale"] = number(request.hr_scale)
    else:
        fields["Hires resize"] = f"{request.hr_resize_x}x{request.hr_resize_y}"
    if request.hr_second_pass_steps:
        fields["Hires steps"] = request.hr_second_pass_steps
    fields["Hires upscaler"] = request.hr_upscaler
    if request.hr_sampler_name and request.hr_sampler_name != request.sampler_name:
        fields["Hires sampler"] = get_sampler(request.hr_sampler_name).name
    if request.hr_scheduler and request.hr_scheduler != request.scheduler:
        fields["Hires schedule type"] = request.hr_scheduler
    if request.hr_prompt and request.hr_prompt != request.prompt:
        fields["Hires prompt"] = request.hr_prompt
    if request.hr_negative_prompt and request.hr_negative_prompt != request.negative_prompt:
        fields["Hires negative prompt"] = request.hr_negative_prompt
    return fields


def _mask_fields(request: GenerationRequest) -> dict[str, object]:
    if request.mask is None:
        return {}
    fields: dict[str, object] = {}
    if request.mask_blur_x == request.mask_blur_y:
        fields["Mask blur"] = request.mask_blur_x
    else:
        fields["Mask blur x"], fields["Mask blur y"] = request.mask_blur_x, request.mask_blur_y
    if request.inpainting_mask_invert:
        fields["Mask mode"] = "Inpaint not masked"
    fields["Masked content"] = MaskedContent(request.inpainting_fill).label
    if request.inpaint_full_res:
        fields["Inpaint area"] = "Only masked"
        fields["Masked area padding"] = request.inpaint_full_res_padding
    if request.initial_noise_multiplier != 1.0:
        fields["Noise multiplier"] = number(request.initial_noise_multiplier)
    return fields


def _hash_list(pairs: tuple[tuple[str, str], ...]) -> str | None:
    return ", ".join(f"{name}: {short}" for name, short in pairs) if pairs else None


def infotext_fields(
    request: GenerationRequest,
    facts: ModelFacts,
    *,
    seed: int,
    subseed: int,
    settings: SamplerSettings,
) -> dict[str, object]:
    """The ordered ``key: value`` fields of one image's infotext (None values are left out)."""
    varied = request.subseed_strength > 0
    resized = request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0
    uses_denoise = request.is_img2img or request.enable_hr
    uses_emphasis = any(c in request.prompt + request.negative_prompt for c in "([")
    fields: dict[str, object] = {
        "Steps": request.steps,
        "Sampler": request.sampler_name,
        "Schedule type": schedule_label(request.sampler_name, request.scheduler),
        "CFG scale": number(request.cfg_scale),
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": facts.model_hash,
        "Model": facts.model_name,
        "VAE hash": facts.vae_hash,
        "VAE": facts.vae_name,
        "Variation seed": subseed if varied else None,
        "Variation seed strength": number(request.subseed_strength) if varied else None,
        "Seed resize from": (
            f"{request.seed_resize_from_w}x{request.seed_resize_from_h}" if resized else None
        ),
        "Denoising strength": number(request.denoising_strength) if uses_denoise else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "ENSD": request.eta_noise_seed_delta if settings.uses_ensd else None,
        "RNG": request.rng.upper(),
        **_hires_fields(request),
        **_mask_fields(request),
        "Lora hashes": _hash_list(facts.lora_hashes),
        "TI hashes": _hash_list(facts.ti_hashes),
        "Emphasis": request.emphasis if request.emphasis != "Original" and uses_emphasis else None,
        **settings.infotext,
        "Extra LoRAs": _extra_loras(request.loras),
        "Version": facts.version,
    }
    return fields


def _extra_loras(loras: tuple[LoraChoice, ...]) -> str | None:
    if not loras:
        return None
    parts = []
    for lora in loras:
        unet = "" if lora.unet is None else f":{number(lora.unet)}"
        parts.append(f"{lora.name}:{number(lora.te)}{unet}")
    return ", ".join(parts)


def make_infotext(
    request: GenerationRequest,
    facts: ModelFacts,
    *,
    seed: int,
    subseed: int,
    settings: SamplerSettings,
) -> str:
    """The whole infotext of one image (prompt, negative prompt, parameters)."""
    fields = infotext_fields(request, facts, seed=seed, subseed=subseed, settings=settings)
    return format_infotext(request.prompt, request.negative_prompt, fields)


# -- reading back ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedModels:
    """What an infotext says about the models it was drawn with."""

    model_name: str | None = None
    model_hash: str | None = None
    vae_name: str | None = None
    lora_hashes: dict[str, str] = field(default_factory=dict)


def _text(fields: Mapping[str, InfotextValue], key: str) -> str | None:
    value = fields.get(key)
    return None if value is None else str(value)


def _convert(fields: Mapping[str, InfotextValue], key: str, kind: type) -> Any:
    value = _text(fields, key)
    if value is None:
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except ValueError:
        raise ConfigError(f"infotext field {key!r} has an unreadable value {value!r}") from None


def _pairs(value: str | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (value or "").split(","):
        name, sep, short = item.rpartition(":")
        if sep and name.strip():
            pairs[name.strip()] = short.strip()
    return pairs


def _parse_extra_loras(value: str | None) -> tuple[LoraChoice, ...]:
    choices = []
    for item in (value or "").split(","):
        parts = [part.strip() for part in item.split(":")]
        if not parts[0]:
            continue
        te = float(parts[1]) if len(parts) > 1 else 1.0
        unet = float(parts[2]) if len(parts) > 2 else None
        choices.append(LoraChoice(parts[0], te, unet))
    return tuple(choices)


def request_from_infotext(text: str, **overrides: Any) -> tuple[GenerationRequest, RecordedModels]:
    """A txt2img request that draws the image again, and the models the infotext names.

    ``overrides`` are request fields that win over the infotext's values.
    """
    fields = parse_infotext(text)
    values: dict[str, Any] = {
        "prompt": _text(fields, "Prompt") or "",
        "negative_prompt": _text(fields, "Negative prompt") or "",
        "steps": _convert(fields, "Steps", int),
        "sampler_name": _text(fields, "Sampler"),
        "scheduler": _text(fields, "Schedule type"),
        "cfg_scale": _convert(fields, "CFG scale", float),
        "seed": _convert(fields, "Seed", int),
        "width": _convert(fields, "Size-1", int),
        "height": _convert(fields, "Size-2", int),
        "clip_skip": _convert(fields, "Clip skip", int),
        "eta_noise_seed_delta": _convert(fields, "ENSD", int),
        "eta": _convert(fields, "Eta", float) or _convert(fields, "Eta DDIM", float),
        "emphasis": _text(fields, "Emphasis"),
        "loras": _parse_extra_loras(_text(fields, "Extra LoRAs")),
    }
    values.update(_variation_values(fields))
    values.update(_sigma_values(fields))
    values.update(_hires_values(fields))
    values["rng"] = _rng(_text(fields, "RNG"))
    request_values = {k: v for k, v in values.items() if v is not None} | overrides
    recorded = RecordedModels(
        model_name=_text(fields, "Model"),
        model_hash=_text(fields, "Model hash"),
        vae_name=_text(fields, "VAE"),
        lora_hashes=_pairs(_text(fields, "Lora hashes")),
    )
    return GenerationRequest(**request_values), recorded


def _rng(value: str | None) -> str:
    """A1111's default ``GPU`` noise is the card's ``torch.randn``: on NVIDIA cards (the common
    case) it is what the ``nv`` source reproduces on any machine."""
    if value is None or value.upper() == "GPU":
        logger.info("the image was drawn with GPU noise; using the NV source (NVIDIA's noise)")
        return "nv"
    return value


def _variation_values(fields: Mapping[str, InfotextValue]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "subseed": _convert(fields, "Variation seed", int),
        "subseed_strength": _convert(fields, "Variation seed strength", float),
    }
    width = _convert(fields, "Seed resize from-1", int)
    height = _convert(fields, "Seed resize from-2", int)
    if width is not None and height is not None and width > 0 and height > 0:
        values["seed_resize_from_w"], values["seed_resize_from_h"] = width, height
    return values


def _sigma_values(fields: Mapping[str, InfotextValue]) -> dict[str, Any]:
    return {name: _convert(fields, label, float) for name, label in SIGMA_OPTIONS}


def _hires_values(fields: Mapping[str, InfotextValue]) -> dict[str, Any]:
    scale = _convert(fields, "Hires upscale", float)
    resize_x = _convert(fields, "Hires resize-1", int) or 0
    resize_y = _convert(fields, "Hires resize-2", int) or 0
    if scale is None and not (resize_x or resize_y):
        return {}
    sampler = _text(fields, "Hires sampler")
    schedule = _text(fields, "Hires schedule type")
    return {
        "enable_hr": True,
        "hr_scale": scale if scale is not None else 2.0,
        "hr_resize_x": resize_x,
        "hr_resize_y": resize_y,
        "hr_second_pass_steps": _convert(fields, "Hires steps", int) or 0,
        "hr_upscaler": _text(fields, "Hires upscaler") or "Latent",
        "hr_sampler_name": None if sampler in (None, SAME_SAMPLER) else sampler,
        "hr_scheduler": None if schedule in (None, SAME_SCHEDULER) else schedule,
        "hr_prompt": _text(fields, "Hires prompt") or "",
        "hr_negative_prompt": _text(fields, "Hires negative prompt") or "",
        "denoising_strength": _convert(fields, "Denoising strength", float),
    }
