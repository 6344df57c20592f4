"""Seeds and initial noise, compatible with A1111's ``ImageRNG``.

One generator per image, seeded with that image's seed, so a batch gives the same images as single
runs. The first draw is the initial latent noise (with variation seed and seed resize applied);
every later draw (ancestral and SDE noise) comes from the same per-image generators.

Two sources: ``cpu`` is torch's CPU generator (``torch.randn`` after ``manual_seed``), and ``nv``
is Philox 4x32-10 (Salmon et al. 2011, "Parallel Random Numbers: As Easy as 1, 2, 3") with the
Box-Muller transform laid out as CUDA's ``torch.randn`` lays it out, reproducing A1111's
``--randn-source NV`` (and so NVIDIA GPU noise) on any machine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor

from brushwork.core.errors import ConfigError

RngSource = Literal["cpu", "nv"]
RNG_SOURCES: tuple[str, ...] = get_args(RngSource)
RANDOM_SEED = -1
MAX_SEED = 2**64 - 1
RANDOM_SEED_LIMIT = 4294967294
"""A1111 draws random seeds with ``random.randrange(4294967294)``."""
LATENT_DOWNSCALE = 8

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUNDS = 10
# float32(2.3283064e-10) is exactly 2**-32; float32(2.3283064e-10 * 6.2831855) has bits 0x30c90fdb.
# A1111 multiplies uint32 arrays by these float32 arrays, which NumPy promotes to float64.
_TWO_POW32_INV = 2.0**-32
_TWO_POW32_INV_2PI = float.fromhex("0x1.921fb6p-30")


class NoiseStream(Protocol):
    """A seeded generator of standard normal tensors."""

    def randn(self, shape: Sequence[int]) -> Tensor: ...


def _check_seed(seed: int, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"{what} must be an integer from 0 to {MAX_SEED} (or -1 for a random one), got {seed!r}"
        )
    return seed


def _mul_hi_lo(a: Tensor, multiplier: int) -> tuple[Tensor, Tensor]:
    """High and low 32 bits of ``a * multiplier`` for uint32 values held in int64 (no overflow)."""
    low_product = a * (multiplier & 0xFFFF)
    high_product = a * (multiplier >> 16)
    carry = (low_product >> 16) + high_product
    low = ((carry & 0xFFFF) << 16) | (low_product & 0xFFFF)
    return carry >> 16, low


def _box_muller(x: Tensor, y: Tensor) -> Tensor:
    u = x.double() * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y.double() * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    return (torch.sqrt(-2.0 * torch.log(u)) * torch.sin(v)).float()


class PhiloxGenerator:
    """Philox 4x32-10 normals laid out as CUDA's ``torch.randn`` (A1111's ``rng_philox``).

    Element ``i`` of call number ``offset`` uses the counter ``[offset, 0, i, 0]`` and the 64-bit
    seed as the key; Box-Muller turns its first two outputs into one float32 normal.
    """

    def __init__(self, seed: int) -> None:
        self.seed = _check_seed(seed)
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> Tensor:
        count = math.prod(shape)
        c0 = torch.full((count,), self.offset & _MASK32, dtype=torch.int64)
        c1 = torch.zeros(count, dtype=torch.int64)
        c2 = torch.arange(count, dtype=torch.int64)
        c3 = torch.zeros(count, dtype=torch.int64)
        key0, key1 = self.seed & _MASK32, (self.seed >> 32) & _MASK32
        for round_index in range(_PHILOX_ROUNDS):
            if round_index:
                key0 = (key0 + _PHILOX_W[0]) & _MASK32
                key1 = (key1 + _PHILOX_W[1]) & _MASK32
            hi0, lo0 = _mul_hi_lo(c0, _PHILOX_M[0])
            hi2, lo2 = _mul_hi_lo(c2, _PHILOX_M[1])
            c0, c1, c2, c3 = hi2 ^ c1 ^ key0, lo2, hi0 ^ c3 ^ key1, lo0
        self.offset += 1
        return _box_muller(c0, c1).reshape(tuple(shape))


class TorchCpuGenerator:
    """torch's CPU generator: equals ``torch.randn(shape, generator=Generator().manual_seed(seed))``."""

    def __init__(self, seed: int) -> None:
        self.seed = _check_seed(seed)
        self._generator = torch.Generator("cpu")
        self._generator.manual_seed(seed)

    def randn(self, shape: Sequence[int]) -> Tensor:
        return torch.randn(tuple(shape), generator=self._generator)


def parse_rng_source(value: str) -> RngSource:
    """``cpu`` or ``nv`` from any spelling A1111 uses (``CPU``, ``NV``)."""
    wanted = value.strip().lower() if isinstance(value, str) else value
    if wanted == "cpu":
        return "cpu"
    if wanted == "nv":
        return "nv"
    hint = (
        "GPU noise depends on the card; use nv to reproduce NVIDIA GPU noise on any machine"
        if wanted == "gpu"
        else None
    )
    raise ConfigError(f"unknown RNG source {value!r}; valid sources: cpu, nv", hint=hint)


def noise_stream(seed: int, source: RngSource = "cpu") -> NoiseStream:
    """A fresh generator for ``seed`` from ``source``."""
    return PhiloxGenerator(seed) if parse_rng_source(source) == "nv" else TorchCpuGenerator(seed)


def slerp(val: float, low: Tensor, high: Tensor) -> Tensor:
    """A1111's spherical interpolation for variation seeds: ``low`` at 0, ``high`` at 1.

    Vectors run along dim 1. When they are nearly parallel it falls back to
    ``low * val + high * (1 - val)``: weights reversed, exactly as A1111 does.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    low_weight = (torch.sin((1.0 - val) * omega) / sin_omega).unsqueeze(1)
    high_weight = (torch.sin(val * omega) / sin_omega).unsqueeze(1)
    return low_weight * low + high_weight * high


@dataclass(frozen=True)
class ImageNoise:
    """How one image's noise is seeded (A1111's seed, variation seed and seed-resize fields)."""

    seed: int
    subseed: int | None = None
    subseed_strength: float = 0.0
    seed_resize_from_h: int = 0
    seed_resize_from_w: int = 0
    source: RngSource = "cpu"

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        if self.subseed is not None:
            _check_seed(self.subseed, "subseed")
        if not 0.0 <= self.subseed_strength <= 1.0:
            raise ConfigError(f"variation strength must lie in [0, 1], got {self.subseed_strength}")
        object.__setattr__(self, "source", parse_rng_source(self.source))

    @property
    def uses_subseed(self) -> bool:
        return self.subseed is not None and self.subseed_strength != 0

    @property
    def resizes(self) -> bool:
        return self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0


def _paste_centred(canvas: Tensor, patch: Tensor) -> Tensor:
    """Put ``patch`` (C, h, w) in the middle of ``canvas`` (C, H, W), cropping it if larger."""
    dx = (canvas.shape[2] - patch.shape[2]) // 2
    dy = (canvas.shape[1] - patch.shape[1]) // 2
    width = patch.shape[2] if dx >= 0 else patch.shape[2] + 2 * dx
    height = patch.shape[1] if dy >= 0 else patch.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    sx, sy = max(-dx, 0), max(-dy, 0)
    canvas[:, ty : ty + height, tx : tx + width] = patch[:, sy : sy + height, sx : sx + width]
    return canvas


class BatchNoise:
    """The noise of a batch, drawn as A1111's ``ImageRNG`` draws it; a :class:`NoiseSource`.

    ``next()`` (and ``randn_like``) first returns the initial noise, shape ``(batch, *shape)``;
    later calls return fresh draws from the per-image generators. With ``eta_noise_seed_delta``
    (A1111's ENSD) the generators are re-seeded with ``seed + delta`` after the initial noise.
    """

    def __init__(
        self,
        shape: Sequence[int],
        images: Sequence[ImageNoise],
        *,
        eta_noise_seed_delta: int = 0,
        latent_downscale: int = LATENT_DOWNSCALE,
    ) -> None:
        if not images:
            raise ConfigError("a noise batch needs at least one image")
        self.shape = tuple(int(size) for size in shape)
        if any(image.resizes for image in images) and len(self.shape) != 3:
            raise ConfigError(f"seed resize needs a (C, H, W) latent shape, got {self.shape}")
        self.images = tuple(images)
        self.eta_noise_seed_delta = eta_noise_seed_delta
        self.latent_downscale = latent_downscale
        self._streams = [noise_stream(image.seed, image.source) for image in self.images]
        self._drawn_first = False

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(image.seed for image in self.images)

    def _initial(self, image: ImageNoise, stream: NoiseStream) -> Tensor:
        noise_shape: tuple[int, ...] = self.shape
        if image.resizes:
            noise_shape = (
                self.shape[0],
                image.seed_resize_from_h // self.latent_downscale,
                image.seed_resize_from_w // self.latent_downscale,
            )
        resized = noise_shape != self.shape
        subnoise = None
        if image.subseed is not None and image.subseed_strength != 0:
            subnoise = noise_stream(image.subseed, image.source).randn(noise_shape)
        if resized:
            noise = noise_stream(image.seed, image.source).randn(noise_shape)
        else:
            noise = stream.randn(self.shape)
        if subnoise is not None:
            noise = slerp(image.subseed_strength, noise, subnoise)
        if resized:
            noise = _paste_centred(stream.randn(self.shape), noise)
        return noise

    def first(self) -> Tensor:
        """The initial noise of every image, stacked (float32, CPU). Only once per batch."""
        if self._drawn_first:
            raise ConfigError("the initial noise of this batch was already drawn; make a new batch")
        self._drawn_first = True
        noise = torch.stack(
            [
                self._initial(image, stream)
                for image, stream in zip(self.images, self._streams, strict=True)
            ]
        )
        if self.eta_noise_seed_delta:
            self._streams = [
                noise_stream(image.seed + self.eta_noise_seed_delta, image.source)
                for image in self.images
            ]
        return noise

    def next(self) -> Tensor:
        """The initial noise on the first call, then one fresh draw per image."""
        if not self._drawn_first:
            return self.first()
        return torch.stack([stream.randn(self.shape) for stream in self._streams])

    def randn_like(self, x: Tensor) -> Tensor:
        noise = self.next()
        if noise.shape != x.shape:
            raise ConfigError(
                f"noise for {len(self.images)} images of shape {self.shape} was asked for a "
                f"tensor of shape {tuple(x.shape)}"
            )
        return noise.to(device=x.device, dtype=x.dtype)


def batch_noise(
    shape: Sequence[int],
    seeds: Sequence[int],
    subseeds: Sequence[int] | None = None,
    subseed_strength: float = 0.0,
    seed_resize_from_h: int = 0,
    seed_resize_from_w: int = 0,
    source: RngSource = "cpu",
    *,
    eta_noise_seed_delta: int = 0,
) -> BatchNoise:
    """The noise for a batch with one seed (and optional variation seed) per image.

    ``subseeds`` shorter than ``seeds`` leave the remaining images with subseed 0, as A1111 does.
    """
    images = [
        ImageNoise(
            seed=seed,
            subseed=None if subseeds is None else (subseeds[i] if i < len(subseeds) else 0),
            subseed_strength=subseed_strength,
            seed_resize_from_h=seed_resize_from_h,
            seed_resize_from_w=seed_resize_from_w,
            source=source,
        )
        for i, seed in enumerate(seeds)
    ]
    return BatchNoise(shape, images, eta_noise_seed_delta=eta_noise_seed_delta)


def resolve_seed(seed: int | None, *, rng: random.Random | None = None) -> int:
    """``seed`` itself, or a random one for ``-1``/``None`` (returned, so infotext can record it)."""
    if seed is None or (not isinstance(seed, bool) and seed == RANDOM_SEED):
        return (rng or random.Random()).randrange(RANDOM_SEED_LIMIT)
    return _check_seed(seed)


def batch_seeds(
    seed: int | None,
    subseed: int | None,
    subseed_strength: float,
    count: int,
    *,
    rng: random.Random | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Seeds and variation seeds of ``count`` images, as A1111 numbers them.

    Seeds count up (``seed + i``) only when the variation strength is 0; otherwise every image
    keeps the seed and the variation seeds count up (``subseed + i``).
    """
    if count < 1:
        raise ConfigError(f"a batch needs at least one image, got {count}")
    base, sub = resolve_seed(seed, rng=rng), resolve_seed(subseed, rng=rng)
    step = 1 if subseed_strength == 0 else 0
    return (
        tuple(base + i * step for i in range(count)),
        tuple(sub + i for i in range(count)),
    )
