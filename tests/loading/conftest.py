"""Tiny checkpoints of each family, written once per test session, and helpers to run them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.testing.factory import Components, build_components, write_checkpoint_file

FAMILIES = ["sd1", "sd2", "sdxl"]


@pytest.fixture(scope="session")
def tiny() -> dict[str, Components]:
    return {family: build_components(family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_files(
    tiny: dict[str, Components], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        family: write_checkpoint_file(components, folder / f"{family}.safetensors")
        for family, components in tiny.items()
    }


def unet_inputs(components: Components, batch: int = 2, seed: int = 0) -> dict[str, object]:
    """Seeded inputs for a tiny UNet of any family (SDXL's added conditions included)."""
    generator = torch.Generator().manual_seed(seed)
    config = components.unet.config
    inputs: dict[str, object] = {
        "sample": torch.randn(batch, 4, 16, 16, generator=generator),
        "timestep": torch.tensor([999.0, 10.0][:batch]),
        "encoder_hidden_states": torch.randn(
            batch, 77, config.cross_attention_dim, generator=generator
        ),
    }
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, generator=generator),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * batch),
        }
    return inputs


def run_unet(
    unet: torch.nn.Module, inputs: dict[str, object], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    cast = {
        k: (v.to(dtype) if isinstance(v, torch.Tensor) and k != "timestep" else v)
        for k, v in inputs.items()
    }
    if "added_cond_kwargs" in cast:
        cast["added_cond_kwargs"] = {k: v.to(dtype) for k, v in inputs["added_cond_kwargs"].items()}  # type: ignore[union-attr]
    with torch.no_grad():
        return unet(**cast).sample


def token_ids(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 49406, (2, 77), generator=generator)
    ids[:, 0], ids[:, 20] = 49406, 49407
    return ids
