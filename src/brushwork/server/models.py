"""Request bodies of ``/sdapi/v1``: A1111's field names and API defaults.

Every field may be omitted or ``null`` (A1111's request models are generated from keyword
arguments, and clients such as webuiapi send ~47 keys, many of them null). Unknown keys are
ignored, as A1111 does. Wrong types fail in pydantic (422 naming the field); values that are
impossible together (a size not a multiple of 8...) fail when the `GenerationRequest` is built.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from brushwork.core.errors import ConfigError

logger = logging.getLogger(__name__)

API_DEFAULT_STEPS = 50  # A1111's API default (its UI says 20)
API_DEFAULT_SAMPLER = "Euler"  # `sampler_index` default, used when sampler_name is null
HIRES_DEFAULT_DENOISE = 0.7
MAX_SIDE = 8192
MAX_STEPS = 1000
MAX_BATCH = 64
MAX_ITER = 1000


class Txt2ImgBody(BaseModel):
    """``POST /sdapi/v1/txt2img``."""

    model_config = ConfigDict(extra="ignore")

    prompt: str | None = None
    negative_prompt: str | None = None
    styles: list[str] | None = None
    seed: int | None = Field(None, ge=-1)
    subseed: int | None = Field(None, ge=-1)
    subseed_strength: float | None = Field(None, ge=0, le=1)
    seed_resize_from_h: int | None = None
    seed_resize_from_w: int | None = None
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH)
    n_iter: int | None = Field(None, ge=1, le=MAX_ITER)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    cfg_scale: float | None = None
    width: int | None = Field(None, ge=8, le=MAX_SIDE)
    height: int | None = Field(None, ge=8, le=MAX_SIDE)
    eta: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    denoising_strength: float | None = Field(None, ge=0, le=1)
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = None
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] | None = None
    # hires fix
    enable_hr: bool | None = None
    hr_scale: float | None = None
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = Field(None, ge=0, le=MAX_STEPS)
    hr_resize_x: int | None = Field(None, ge=0, le=MAX_SIDE)
    hr_resize_y: int | None = Field(None, ge=0, le=MAX_SIDE)
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = None
    hr_negative_prompt: str | None = None
    hr_checkpoint_name: str | None = None


class Img2ImgBody(Txt2ImgBody):
    """``POST /sdapi/v1/img2img``: txt2img's fields and the init image, mask and inpainting."""

    init_images: list[str] | None = None
    mask: str | None = None
    resize_mode: int | None = Field(None, ge=0, le=3)
    mask_blur: int | None = Field(None, ge=0)
    mask_blur_x: int | None = Field(None, ge=0)
    mask_blur_y: int | None = Field(None, ge=0)
    mask_round: bool | None = None
    inpainting_fill: int | None = Field(None, ge=0, le=3)
    inpaint_full_res: bool | None = None
    inpaint_full_res_padding: int | None = Field(None, ge=0)
    inpainting_mask_invert: int | None = Field(None, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    include_init_images: bool | None = None
    image_cfg_scale: float | None = None


class PngInfoBody(BaseModel):
    """``POST /sdapi/v1/png-info``."""

    model_config = ConfigDict(extra="ignore")

    image: str


_COPIED = (
    "prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "batch_size", "n_iter",
    "steps", "cfg_scale", "width", "height", "eta", "s_churn", "s_tmax", "s_tmin", "s_noise",
    "enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
    "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
)  # fmt: skip
_COPIED_IMG2IMG = (
    "resize_mode", "mask_blur_x", "mask_blur_y", "mask_round", "inpainting_fill",
    "inpaint_full_res", "inpaint_full_res_padding", "initial_noise_multiplier",
)  # fmt: skip


def warn_ignored(body: Txt2ImgBody) -> list[str]:
    """Log (and return) what this server ignores: scripts, styles, refiner, face restoring."""
    ignored = []
    if body.alwayson_scripts:
        ignored.append(f"alwayson_scripts ({', '.join(sorted(body.alwayson_scripts))})")
    if body.script_name:
        ignored.append(f"script_name ({body.script_name})")
    if body.styles:
        ignored.append("styles")
    if body.hr_checkpoint_name:
        ignored.append("hr_checkpoint_name")
    for message in ignored:
        logger.warning("ignored request field: %s", message)
    return ignored


def request_fields(body: Txt2ImgBody) -> dict[str, Any]:
    """`GenerationRequest` keyword arguments from a txt2img/img2img body (images excluded)."""
    fields = {name: getattr(body, name) for name in _COPIED if getattr(body, name) is not None}
    fields.setdefault("steps", API_DEFAULT_STEPS)
    if fields.get("s_tmax") == 0:
        del fields["s_tmax"]  # A1111: 0 means infinity, the default (webuiapi sends 0)
    fields["sampler_name"] = body.sampler_name or body.sampler_index or API_DEFAULT_SAMPLER
    fields["scheduler"] = body.scheduler or "Automatic"
    for name in ("seed_resize_from_h", "seed_resize_from_w"):
        value = getattr(body, name)
        fields[name] = max(value or 0, 0)  # A1111's -1 means "off", as 0 does here
    if body.denoising_strength is not None:
        fields["denoising_strength"] = body.denoising_strength
    elif body.enable_hr and not isinstance(body, Img2ImgBody):
        fields["denoising_strength"] = HIRES_DEFAULT_DENOISE
    if isinstance(body, Img2ImgBody):
        fields["enable_hr"] = False
        for name in _COPIED_IMG2IMG:
            value = getattr(body, name)
            if value is not None:
                fields[name] = value
        if body.mask_blur is not None:
            fields.setdefault("mask_blur_x", body.mask_blur)
            fields.setdefault("mask_blur_y", body.mask_blur)
        if body.inpainting_mask_invert is not None:
            fields["inpainting_mask_invert"] = bool(body.inpainting_mask_invert)
    return fields


def check_sampler(fields: dict[str, Any]) -> None:
    """An unknown sampler or schedule names the field (A1111: 404 "Sampler not found")."""
    from brushwork.samplers import resolve_sampler_name

    try:
        resolve_sampler_name(fields["sampler_name"], fields["scheduler"])
    except ConfigError as error:
        raise ConfigError(f"sampler_name/scheduler: {error.message}", hint=error.hint) from None
    if fields.get("hr_sampler_name"):
        try:
            resolve_sampler_name(fields["hr_sampler_name"], fields.get("hr_scheduler"))
        except ConfigError as error:
            message = f"hr_sampler_name/hr_scheduler: {error.message}"
            raise ConfigError(message, hint=error.hint) from None
