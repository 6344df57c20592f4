"""Tiny SD1 checkpoints (three seeds), an SDXL one, and LoRAs built in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.formats.lora import LoraModule, LoraNetwork
from brushwork.modeltools.common import ModelInput
from brushwork.testing.factory import Components, build_components, write_checkpoint_file


def model_input(path: Path) -> ModelInput:
    return ModelInput.of(path)


def random_lora(
    components: Components,
    *,
    rank: int = 4,
    alpha: float = 2.0,
    seed: int = 0,
    convs: bool = False,
    scale: float = 0.1,
) -> LoraNetwork:
    """A LoRA on every attention / feed-forward Linear of the UNet and the text encoder
    (and, with `convs`, every 3x3 UNet convolution: LoCon)."""
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    roots = {"unet": components.unet, "text_encoder": components.text_encoders["text_encoder"]}
    for component, root in roots.items():
        for name, layer in root.named_modules():
            linear = isinstance(layer, torch.nn.Linear) and (
                "attn" in name or "ff" in name or "mlp" in name
            )
            conv = convs and isinstance(layer, torch.nn.Conv2d) and layer.kernel_size == (3, 3)
            if not (linear or conv):
                continue
            shape = tuple(layer.weight.shape)
            down = torch.randn(rank, *shape[1:], generator=generator) * scale
            up_shape = (shape[0], rank, 1, 1) if conv else (shape[0], rank)
            up = torch.randn(up_shape, generator=generator) * scale
            target = f"{component}.{name}"
            modules[target] = LoraModule.lora(target, down, up, alpha)
    return LoraNetwork(modules)


@pytest.fixture(scope="session")
def sd1_components() -> Components:
    return build_components("sd1", seed=1)


@pytest.fixture(scope="session")
def sd1_files(tmp_path_factory: pytest.TempPathFactory, sd1_components: Components) -> list[Path]:
    """Three tiny SD1 checkpoints of different seeds: a, b, c."""
    folder = tmp_path_factory.mktemp("sd1")
    paths = [write_checkpoint_file(sd1_components, folder / "a.safetensors")]
    for seed, name in ((2, "b"), (3, "c")):
        paths.append(
            write_checkpoint_file(
                build_components("sd1", seed=seed), folder / f"{name}.safetensors"
            )
        )
    return paths


@pytest.fixture(scope="session")
def sdxl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sdxl") / "xl.safetensors"
    return write_checkpoint_file(build_components("sdxl"), path)
