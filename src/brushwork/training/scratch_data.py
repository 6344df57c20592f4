"""The in-memory image set of a from-scratch run: every picture and caption of a folder, resized
to one square resolution, served as seeded batches to the engine (a `engine.BatchSource`).

A model trained from scratch is small and so is its data, so holding it all in memory is what
keeps a 2-core CPU busy with training rather than with decoding PNGs. Folders are read the way
kohya lays them out (`<repeats>_<name>/` subfolders, or the pictures directly), captions from the
`.txt`/`.caption` file beside each picture, else the file name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from brushwork.core.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_CAPTION_SUFFIXES = (".txt", ".caption")


@dataclass(frozen=True)
class ScratchBatch:
    """One batch: pixels in [-1, 1] ([B, 3, H, W]), or latents (unscaled, [B, C, h, w]) once
    they are cached; captions (empty when dropped for classifier-free guidance)."""

    epoch: int
    index: int
    images: torch.Tensor
    latents: torch.Tensor | None
    captions: list[str]
    loss_weights: torch.Tensor | None = None


def _caption_for(image: Path) -> str:
    for suffix in _CAPTION_SUFFIXES:
        sidecar = image.with_suffix(suffix)
        if sidecar.is_file():
            return sidecar.read_text(encoding="utf-8").strip()
    return image.stem.replace("_", " ")


def find_images(folder: Path) -> list[Path]:
    """Every picture under `folder` (sorted, so a run sees them in the same order)."""
    if not folder.is_dir():
        raise ConfigError(f"train_data_dir {folder} is not a folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ConfigError(
            f"no pictures in {folder}", hint=f"put {', '.join(IMAGE_SUFFIXES)} files there"
        )
    return found


def load_pixels(path: Path, resolution: int) -> torch.Tensor:
    """A picture as a [3, R, R] tensor in [-1, 1] (centre-cropped to a square, then resized)."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(f"cannot read the picture {path}: {exc}") from exc
    image = ImageOps.fit(image, (resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class InMemoryImageSet:
    """Pictures and captions of a folder, batched by a seeded per-epoch shuffle."""

    def __init__(
        self,
        folder: Path,
        resolution: int,
        batch_size: int,
        *,
        seed: int,
        caption_dropout_rate: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size is {batch_size}; it must be at least 1")
        if not 0.0 <= caption_dropout_rate < 1.0:
            raise ConfigError(f"caption_dropout_rate {caption_dropout_rate} is outside [0, 1)")
        paths = find_images(folder)
        self.paths = paths
        self.captions = [_caption_for(p) for p in paths]
        self.pixels = torch.stack([load_pixels(p, resolution) for p in paths])
        self.latents: torch.Tensor | None = None
        self.batch_size = batch_size
        self.seed = seed
        self.caption_dropout_rate = caption_dropout_rate

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def total_batches(self) -> int:
        return max(1, len(self.paths) // self.batch_size)  # drop the short tail

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.paths)))
        random.Random(self.seed * 7919 + epoch).shuffle(order)
        return order

    def batch_at(self, epoch: int, index: int) -> ScratchBatch:
        picks = self._order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        drop = random.Random(self.seed * 104729 + epoch * 7907 + index)
        captions = [
            "" if drop.random() < self.caption_dropout_rate else self.captions[i] for i in picks
        ]
        latents = None if self.latents is None else self.latents[picks]
        return ScratchBatch(epoch, index, self.pixels[picks], latents, captions)

    def cache_latents(self, encode: Any, batch_size: int = 64) -> None:
        """Encode every picture once with `encode(pixels) -> latents` (unscaled)."""
        chunks = [
            encode(self.pixels[start : start + batch_size])
            for start in range(0, len(self.paths), batch_size)
        ]
        self.latents = torch.cat(chunks).float()

    def state_dict(self) -> dict[str, Any]:
        return {}  # the order is a function of (seed, epoch): nothing to keep

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
