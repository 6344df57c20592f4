"""A tiny SD1 library, a datasets folder with one kohya image folder, and a running JobService."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork.core.settings import Settings
from brushwork.jobs import JobService, ServiceConfig
from brushwork.testing.factory import build_components, write_checkpoint_file


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("a1111")
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_checkpoint_file(build_components("sd1", seed=0), folder / "tiny.safetensors")
    for name in ("VAE", "Lora"):
        (root / "models" / name).mkdir()
    return root


def write_image_folder(dataset: Path, count: int = 2, repeats: int = 2) -> Path:
    """``dataset/<repeats>_sks cube`` with ``count`` 64 px images and captions."""
    folder = dataset / f"{repeats}_sks cube"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"sks cube, tag{index}", encoding="utf-8")
    return dataset


@pytest.fixture
def service(tiny_root: Path, tmp_path: Path) -> Iterator[JobService]:
    data = tmp_path / "data"
    write_image_folder(data / "datasets" / "cubes")
    settings = Settings(roots=(tiny_root,), data_dir=data, device="cpu", precision="fp32")
    config = ServiceConfig(
        settings,
        roots=(tiny_root,),
        devices=("cpu",),
        outputs=data / "outputs",
        training_outputs=tmp_path / "trained",
    )
    running = JobService(config)
    running.start()
    yield running
    running.close()
