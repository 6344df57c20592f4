"""Shared fixtures: a tiny checkpoint in a library root, and small folders of pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork.testing.factory import build_components, write_checkpoint_file

CAPTION = "sks, cat, sitting"


@pytest.fixture(scope="session")
def library_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library root holding `models/Stable-diffusion/tiny.safetensors` (random weights)."""
    root = tmp_path_factory.mktemp("library")
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_checkpoint_file(build_components("sd1"), folder / "tiny.safetensors")
    (root / "models" / "Lora").mkdir()
    return root


@pytest.fixture(scope="session")
def checkpoint(library_root: Path) -> Path:
    return library_root / "models" / "Stable-diffusion" / "tiny.safetensors"


def write_pictures(
    folder: Path, count: int, *, seed: int = 0, caption: str | None = CAPTION
) -> Path:
    """`count` distinct random 64 px pictures, each with a caption file (unless None)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:02d}.png")
        if caption is not None:
            (folder / f"{index:02d}.txt").write_text(caption, encoding="utf-8")
    return folder


def write_options(path: Path, checkpoint: Path, **extra: object) -> Path:
    """A flat sd-scripts TOML for a tiny run: 64 px, batch 2, dim 2, 2 epochs, seed 1."""
    values: dict[str, object] = {
        "pretrained_model_name_or_path": str(checkpoint),
        "resolution": 64,
        "train_batch_size": 2,
        "network_dim": 2,
        "network_alpha": 1,
        "learning_rate": 1e-3,
        "max_train_epochs": 2,
        "seed": 1,
        **extra,
    }
    lines = []
    for key, value in values.items():
        text = (
            f'"{value}"'
            if isinstance(value, str)
            else str(value).lower()
            if isinstance(value, bool)
            else repr(value)
        )
        lines.append(f"{key} = {text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
