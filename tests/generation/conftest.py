"""A tiny SD1 library (checkpoint, LoRA, hypernetwork, embedding) and loaded tiny models.

The models are loaded once per session in fp32 on the CPU. Tests that patch them (LoRA,
hypernetworks) go through the generator, which restores the weights after every job.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.core.settings import Settings
from brushwork.formats.embedding import TEXT_ENCODER, Embedding, write_embedding
from brushwork.formats.hypernetwork import create_hypernetwork, write_hypernetwork
from brushwork.formats.lora import LoraModule, LoraNetwork, write_lora
from brushwork.generation import GenerationRequest, Generator
from brushwork.library.catalog import Library
from brushwork.loading import LoadedModel, load_model
from brushwork.testing.factory import Components, build_components, write_checkpoint_file

SIZE = 32  # pixels; the tiny VAE halves once, so the tiny UNet sees 16x16 latents


def small_request(**changes: object) -> GenerationRequest:
    """A fast request for the tiny models: 32x32, 3 Euler steps, seed 1."""
    fields: dict[str, object] = {
        "prompt": "a red cube",
        "negative_prompt": "blurry",
        "width": SIZE,
        "height": SIZE,
        "steps": 3,
        "sampler_name": "Euler",
        "seed": 1,
    }
    fields.update(changes)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def random_lora(components: Components, seed: int = 0) -> LoraNetwork:
    """A rank-4 LoRA on the UNet's attention projections and the text encoder's q/v."""
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    models = {"unet": components.unet, "text_encoder": components.text_encoders["text_encoder"]}
    for component, model in models.items():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            if not (name.endswith(("to_q", "to_v", "q_proj", "v_proj"))):
                continue
            target = f"{component}.{name}"
            down = torch.randn(4, module.in_features, generator=generator) * 0.3
            up = torch.randn(module.out_features, 4, generator=generator) * 0.3
            modules[target] = LoraModule.lora(target, down, up, 4.0)
    return LoraNetwork(modules)


@pytest.fixture(scope="session")
def sd1_components() -> Components:
    return build_components("sd1")


@pytest.fixture(scope="session")
def library_root(tmp_path_factory: pytest.TempPathFactory, sd1_components: Components) -> Path:
    root = tmp_path_factory.mktemp("library")
    models = root / "models"
    checkpoint = models / "Stable-diffusion" / "tiny.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_checkpoint_file(sd1_components, checkpoint)
    (models / "Lora").mkdir()
    write_lora(
        models / "Lora" / "style.safetensors",
        random_lora(sd1_components),
        family="sd1",
        unet_config=dict(sd1_components.unet.config),
    )
    (models / "hypernetworks").mkdir()
    hypernetwork = create_hypernetwork(
        "ink", (64, 32), activation_func="relu", weight_initialization="XavierNormal", seed=0
    )
    write_hypernetwork(models / "hypernetworks" / "ink.pt", hypernetwork)
    (root / "embeddings").mkdir()
    vectors = torch.randn(2, 64, generator=torch.Generator().manual_seed(3))
    write_embedding(root / "embeddings" / "shiny.pt", Embedding("shiny", {TEXT_ENCODER: vectors}))
    return root


@pytest.fixture(scope="session")
def checkpoint_path(library_root: Path) -> Path:
    return library_root / "models" / "Stable-diffusion" / "tiny.safetensors"


@pytest.fixture(scope="session")
def sd1(checkpoint_path: Path) -> LoadedModel:
    return load_model(checkpoint_path, device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = tmp_path_factory.mktemp("sdxl") / "tiny-xl.safetensors"
    write_checkpoint_file(build_components("sdxl"), path)
    return load_model(path, device="cpu", precision="fp32")


@pytest.fixture
def library(library_root: Path, tmp_path: Path) -> Library:
    opened = Library.open(Settings(data_dir=tmp_path / "data"), [library_root])
    yield opened  # type: ignore[misc]
    opened.close()


@pytest.fixture(scope="session")
def generator(sd1: LoadedModel) -> Generator:
    """A generator without a library (no networks, no embeddings)."""
    return Generator(sd1)
