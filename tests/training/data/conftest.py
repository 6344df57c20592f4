"""Tiny image folders written with Pillow for the dataset tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

# shapes at resolution 128 (min 64, max 256, step 64):
# square -> 128x128, wide (3:1) -> 192x64, tall (1:3) -> 64x192, long (4:1) -> 256x64
SHAPES = {"square": (128, 128), "wide": (300, 100), "tall": (100, 300), "long": (400, 100)}

WriteImages = Callable[..., list[Path]]


def write_image(path: Path, size: tuple[int, int], colour: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, ((colour * 37) % 256, (colour * 91) % 256, (colour * 53) % 256))
    # a gradient so that crops and flips change the pixels
    for x in range(0, size[0], max(1, size[0] // 8)):
        image.paste((x % 256, 255 - x % 256, colour % 256), (x, 0, x + 2, size[1]))
    image.save(path)
    return path


@pytest.fixture
def write_images() -> WriteImages:
    """write_images(folder, shape, count, start=0, captions=None, ext=".txt")."""

    def write(
        folder: Path,
        shape: str,
        count: int,
        *,
        start: int = 0,
        captions: list[str] | None = None,
        caption_ext: str = ".txt",
        prefix: str = "",
    ) -> list[Path]:
        paths = []
        for i in range(start, start + count):
            path = write_image(folder / f"{prefix}{shape}{i:02d}.png", SHAPES[shape], colour=i)
            if captions is not None:
                path.with_suffix(caption_ext).write_text(captions[(i - start) % len(captions)])
            paths.append(path)
        return paths

    return write


class FakeEncoder:
    """A stand-in VAE: 8x average pooling plus a 4th channel; counts images encoded."""

    def __init__(self) -> None:
        self.images_seen = 0
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images_seen += images.shape[0]
        pooled = torch.nn.functional.avg_pool2d(images, 8)
        return torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1)


@pytest.fixture
def encoder() -> FakeEncoder:
    return FakeEncoder()
