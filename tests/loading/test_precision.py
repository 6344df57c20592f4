"""The device/dtype policy: CUDA fp16, native-bf16 CPUs bf16, other CPUs fp32; explicit wins."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.loading import precision
from brushwork.loading.precision import (
    choose_dtype,
    choose_vae_dtype,
    cpu_flags,
    cpu_has_native_bf16,
    dtype_name,
    resolve_device,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("device", "native_bf16", "want"),
    [
        (CUDA, False, torch.float16),
        (CUDA, True, torch.float16),
        (CPU, True, torch.bfloat16),
        (CPU, False, torch.float32),
        (torch.device("mps"), False, torch.float32),
    ],
)
def test_auto_precision_follows_the_device(
    device: torch.device, native_bf16: bool, want: torch.dtype
) -> None:
    assert choose_dtype(device, "auto", native_bf16=native_bf16) == want


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("device", [CPU, CUDA])
def test_explicit_precision_always_wins(name: str, device: torch.device) -> None:
    assert dtype_name(choose_dtype(device, name, native_bf16=True)) == name
    assert dtype_name(choose_dtype(device, name, native_bf16=False)) == name


def test_fp16_on_the_cpu_is_allowed_but_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="brushwork.loading.precision"):
        assert choose_dtype(CPU, "fp16") == torch.float16
    assert "slow" in caplog.text


def test_unknown_precision_is_named() -> None:
    with pytest.raises(ConfigError, match="'fp8'"):
        choose_dtype(CPU, "fp8")


def test_auto_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert choose_dtype(CPU) == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert choose_dtype(CPU) == torch.float32


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        ("fpu sse avx2 avx512f avx512_bf16 amx_tile", True),
        ("fpu sse avx2 amx_bf16 amx_tile", True),
        ("fpu sse avx2 avx512f avx512_vnni", False),
        ("", False),
    ],
)
def test_native_bf16_from_cpuinfo(flags: str, want: bool, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n", encoding="utf-8"
    )
    assert cpu_has_native_bf16(cpu_flags(cpuinfo)) is want


def test_missing_cpuinfo_means_no_flags(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_auto_device_is_cuda_only_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(ConfigError, match="no CUDA"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")


@pytest.mark.parametrize(
    ("family", "dtype", "want"),
    [
        (BaseFamily.SDXL, torch.float16, torch.float32),  # the SDXL VAE overflows in fp16
        (BaseFamily.SDXL, torch.bfloat16, torch.bfloat16),
        (BaseFamily.SD1, torch.float16, torch.float16),
        (BaseFamily.SD2, torch.float32, torch.float32),
    ],
)
def test_vae_dtype_policy(family: BaseFamily, dtype: torch.dtype, want: torch.dtype) -> None:
    assert choose_vae_dtype(family, dtype) == want


def test_vae_precision_can_be_forced() -> None:
    assert choose_vae_dtype(BaseFamily.SD1, torch.float16, "fp32") == torch.float32
