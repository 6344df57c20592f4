"""Device and dtype policy, chosen at call time.

`auto` picks, as A1111 does by default: CUDA if there is one, else the CPU. The dtype follows the
device: fp16 on CUDA; bf16 on CPUs that compute bf16 natively (AVX512-BF16 or AMX-BF16), where
it runs faster than fp32 at half the memory; fp32 on every other CPU, where bf16 is emulated and
slow. An explicit precision always wins; fp16 on a CPU is allowed but warned about (most CPU
kernels have no fp16 path).

The VAE gets its own dtype: the SDXL VAE overflows to NaN in fp16 (A1111's `--no-half-vae`,
diffusers' `force_upcast`), so it runs in fp32 when the model runs in fp16. bf16 has fp32's
range and needs no upcast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a model dtype (`fp32`, `bf16`, `fp16`)."""
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ConfigError(f"{dtype} is not a model precision", hint=f"use one of {PRECISIONS[1:]}")


def dtype_of(name: str) -> torch.dtype:
    """The dtype of an explicit precision name (`fp32`, `bf16`, `fp16`)."""
    if name not in _DTYPES:
        raise ConfigError(f"unknown precision {name!r}", hint=f"use one of {PRECISIONS[1:]}")
    return _DTYPES[name]


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux `/proc/cpuinfo`); empty elsewhere."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16 on x86)."""
    if flags is None:
        if not sys.platform.startswith("linux"):
            return False  # no portable way to ask; fp32 is the safe answer
        flags = cpu_flags()
    return bool(NATIVE_BF16_FLAGS & flags)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` -> CUDA when available, else CPU; anything else is checked and returned."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"unknown device {device!r}", hint=f"use one of {', '.join(DEVICES)}"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for, but torch sees no CUDA GPU",
            hint="use --device cpu (or auto), or install a CUDA build of torch",
        )
    return resolved


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    return precision


def choose_dtype(
    device: torch.device, precision: str = "auto", *, native_bf16: bool | None = None
) -> torch.dtype:
    """The dtype to run the UNet and text encoders in on `device`.

    `native_bf16` says whether the CPU computes bf16 natively (read from the CPU flags if None).
    """
    if check_precision(precision) != "auto":
        dtype = _DTYPES[precision]
        if device.type == "cpu" and dtype == torch.float16:
            logger.warning("fp16 on the CPU is slow (few CPU kernels have an fp16 path)")
        return dtype
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
        return torch.bfloat16 if native else torch.float32
    return torch.float32


def choose_vae_dtype(
    family: BaseFamily, dtype: torch.dtype, vae_precision: str = "auto"
) -> torch.dtype:
    """The VAE's dtype: the model's, except the SDXL VAE in fp32 when the model runs in fp16."""
    if check_precision(vae_precision) != "auto":
        return _DTYPES[vae_precision]
    if family is BaseFamily.SDXL and dtype == torch.float16:
        return torch.float32
    return dtype
