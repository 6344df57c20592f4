"""Shared fixtures for the training-loop tests: a tiny SD1 checkpoint and a captioned folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from brushwork.testing.factory import build_components, write_checkpoint_file
from brushwork.training.config import LoraTrainingConfig
from brushwork.training.config_file import resolve_config


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    return write_checkpoint_file(build_components("sd1"), folder / "tiny.safetensors")


def make_image_folder(root: Path, count: int = 4, repeats: int = 2) -> Path:
    """`root/<repeats>_sks cat/` with `count` 32x32 images and `.txt` captions."""
    folder = root / f"{repeats}_sks cat"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"sks cat, tag{i % 2}, red", encoding="utf-8")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


def lora_config(checkpoint: Path, data: Path, output: Path, **options: Any) -> LoraTrainingConfig:
    """A small, fast run: 64 px, batch 2, 4 steps, dim 4 / alpha 2, lr 1e-3."""
    values: dict[str, Any] = {
        "pretrained_model_name_or_path": str(checkpoint),
        "train_data_dir": str(data),
        "output_dir": str(output),
        "output_name": "tiny",
        "resolution": 64,
        "train_batch_size": 2,
        "max_train_steps": 4,
        "network_dim": 4,
        "network_alpha": 2,
        "learning_rate": 1e-3,
        "seed": 7,
    }
    config, _ = resolve_config(values | options)
    return config
