"""What to draw: one typed, frozen request per generation, with A1111's field names and meanings.

The fields are those of A1111's ``StableDiffusionProcessingTxt2Img`` / ``...Img2Img`` (the
``/sdapi/v1/txt2img`` and ``/sdapi/v1/img2img`` request bodies), so the HTTP face maps a request
1:1. Defaults are those of A1111's UI (the values infotext parsing assumes when a key is
missing), except ``steps`` 20 and ``sampler_name`` DPM++ 2M as in the UI, not the API's 50/Euler.

A request is checked when it is built: an unknown sampler or schedule, a size that is not a
multiple of 8, a mask without an init image... fail here with a ConfigError naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.samplers import RngSource, parse_rng_source, resolve_sampler_name

LATENT_FACTOR = 8
MAX_CLIP_SKIP = 12
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    # A1111's hires "Latent ..." upscalers: interpolate mode and antialias
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS: dict[str, Image.Resampling] = {
    # upscalers that work on decoded images (no upscaler model files yet)
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")


class ResizeMode(IntEnum):
    """How an init image is fitted to the requested size (A1111's ``resize_mode``)."""

    JUST_RESIZE = 0
    CROP_AND_RESIZE = 1
    RESIZE_AND_FILL = 2
    LATENT_UPSCALE = 3  # "Just resize (latent upscale)"


class MaskedContent(IntEnum):
    """What the masked area starts from (A1111's ``inpainting_fill``)."""

    FILL = 0
    ORIGINAL = 1
    LATENT_NOISE = 2
    LATENT_NOTHING = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA applied without a ``<lora:...>`` tag in the prompt (``unet`` None: same as ``te``)."""

    name: str
    te: float = 1.0
    unet: float | None = None


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """One txt2img or img2img job (img2img when ``init_images`` is not empty)."""

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    cfg_scale: float = 7.0
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = 0
    seed_resize_from_w: int = 0
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    rng: RngSource = "cpu"
    eta_noise_seed_delta: int = 0
    emphasis: str = "Original"
    loras: tuple[LoraChoice, ...] = ()
    # img2img / inpaint
    init_images: tuple[Image.Image, ...] = ()
    denoising_strength: float = 0.75
    resize_mode: ResizeMode = ResizeMode.JUST_RESIZE
    initial_noise_multiplier: float = 1.0
    mask: Image.Image | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_round: bool = True
    inpainting_fill: MaskedContent = MaskedContent.ORIGINAL
    inpaint_full_res: bool = False  # "Only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    # hires fix (txt2img)
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_numbers()
        sampler, schedule = resolve_sampler_name(self.sampler_name, self.scheduler)
        object.__setattr__(self, "sampler_name", sampler)
        object.__setattr__(self, "scheduler", schedule)
        object.__setattr__(self, "rng", parse_rng_source(self.rng))
        object.__setattr__(self, "resize_mode", _enum(ResizeMode, self.resize_mode, "resize_mode"))
        fill = _enum(MaskedContent, self.inpainting_fill, "inpainting_fill")
        object.__setattr__(self, "inpainting_fill", fill)
        object.__setattr__(self, "init_images", tuple(self.init_images))
        object.__setattr__(self, "loras", tuple(self.loras))
        if self.emphasis not in EMPHASIS_MODES:
            raise ConfigError(
                f"unknown emphasis mode {self.emphasis!r}; valid modes: {', '.join(EMPHASIS_MODES)}"
            )
        self._check_images()
        if self.enable_hr:
            self._check_hires()

    # -- checks -------------------------------------------------------------------------------

    def _check_sizes(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if _not_int(value) or value < LATENT_FACTOR or value % LATENT_FACTOR:
                raise ConfigError(
                    f"{name} must be a positive multiple of {LATENT_FACTOR}, got {value!r}",
                    hint=f"try {max(LATENT_FACTOR, round(_number(value) / 8) * 8)}",
                )
        for name in ("steps", "batch_size", "n_iter"):
            value = getattr(self, name)
            if _not_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if _not_int(self.clip_skip) or not 1 <= self.clip_skip <= MAX_CLIP_SKIP:
            raise ConfigError(
                f"clip_skip must be an integer from 1 to {MAX_CLIP_SKIP}, got {self.clip_skip!r}"
            )

    def _check_numbers(self) -> None:
        if not _finite(self.cfg_scale):
            raise ConfigError(f"cfg_scale must be a finite number, got {self.cfg_scale!r}")
        for name in ("denoising_strength", "subseed_strength"):
            value = getattr(self, name)
            if not _finite(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value!r}")
        for name in ("seed", "subseed"):
            value = getattr(self, name)
            if _not_int(value) or value < -1:
                raise ConfigError(f"{name} must be an integer >= 0, or -1 for a random one")
        for name in ("mask_blur_x", "mask_blur_y", "inpaint_full_res_padding"):
            value = getattr(self, name)
            if _not_int(value) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if not _finite(self.initial_noise_multiplier):
            raise ConfigError("initial_noise_multiplier must be a finite number")

    def _check_images(self) -> None:
        if self.mask is not None and not self.init_images:
            raise ConfigError("a mask needs an init image to inpaint", hint="pass init_images")
        if len(self.init_images) > 1 and len(self.init_images) != self.batch_size:
            raise ConfigError(
                f"init_images: {len(self.init_images)} init images for a batch of {self.batch_size}",
                hint="give one init image (used for every image) or one per image of the batch",
            )
        if self.init_images and self.enable_hr:
            raise ConfigError("hires fix is for txt2img; an img2img request cannot enable it")

    def _check_hires(self) -> None:
        if self.hr_upscaler not in LATENT_UPSCALE_MODES and self.hr_upscaler not in IMAGE_UPSCALERS:
            valid = ", ".join([*LATENT_UPSCALE_MODES, *IMAGE_UPSCALERS])
            raise ConfigError(
                f"hr_upscaler: unknown hires upscaler {self.hr_upscaler!r}; valid: {valid}"
            )
        if (
            self.hr_resize_x == 0
            and self.hr_resize_y == 0
            and not (_finite(self.hr_scale) and self.hr_scale > 0)
        ):
            raise ConfigError(f"hr_scale must be a positive number, got {self.hr_scale!r}")
        for name in ("hr_resize_x", "hr_resize_y", "hr_second_pass_steps"):
            value = getattr(self, name)
            if _not_int(value) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.hr_sampler_name:
            resolve_sampler_name(self.hr_sampler_name, self.hr_scheduler)
        width, height = self.hires_size
        if width < LATENT_FACTOR or height < LATENT_FACTOR:
            raise ConfigError(
                f"hr_scale/hr_resize_x/hr_resize_y: the hires size {width}x{height} is too small"
            )

    # -- derived facts ------------------------------------------------------------------------

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_images)

    @property
    def mode(self) -> str:
        """``txt2img`` or ``img2img`` (A1111's output folder names)."""
        return "img2img" if self.is_img2img else "txt2img"

    @property
    def image_count(self) -> int:
        return self.batch_size * self.n_iter

    @property
    def hires_size(self) -> tuple[int, int]:
        """The hires pass's (width, height), as A1111 computes it (before cropping)."""
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            return int(self.width * self.hr_scale), int(self.height * self.hr_scale)
        if self.hr_resize_y == 0:
            return self.hr_resize_x, self.hr_resize_x * self.height // self.width
        if self.hr_resize_x == 0:
            return self.hr_resize_y * self.width // self.height, self.hr_resize_y
        if self.width / self.height < self.hr_resize_x / self.hr_resize_y:
            return self.hr_resize_x, self.hr_resize_x * self.height // self.width
        return self.hr_resize_y * self.width // self.height, self.hr_resize_y

    def hires_crop(self, latent_factor: int = LATENT_FACTOR) -> tuple[int, int]:
        """Latent columns and rows the hires pass crops away (both resize sides given and the
        aspect ratio changes: A1111 scales to cover the target, then crops the middle)."""
        if self.hr_resize_x == 0 or self.hr_resize_y == 0:
            return 0, 0
        width, height = self.hires_size
        return (
            (width - self.hr_resize_x) // latent_factor,
            (height - self.hr_resize_y) // latent_factor,
        )

    @property
    def hires_steps(self) -> int:
        return self.hr_second_pass_steps or self.steps

    def with_changes(self, **changes: Any) -> GenerationRequest:
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)


def _enum(kind: type[IntEnum], value: object, name: str) -> Any:
    try:
        return kind(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        valid = ", ".join(f"{member.value} ({member.name.lower()})" for member in kind)
        raise ConfigError(f"unknown {name} {value!r}; valid values: {valid}") from None


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: object) -> float:
    return float(value) if _finite(value) else 512.0  # type: ignore[arg-type]
