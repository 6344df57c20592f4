"""Training folders of shapes-world pictures in kohya-ss's layout.

`write_dataset(out, shapes, count, seed=...)` writes `OUT/<repeats>_<name>/0000.png` with a
caption beside each image in `0000.txt`, which is what kohya's sd-scripts (and brushwork's
trainers) read as a DreamBooth-style folder with captions. The same arguments write the same
bytes. A `trigger` word replaces the shape's name in every caption, so a held-out shape can be
taught under a new token (`a red sks on a white background`).
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.demo.shapes import COLOR_NAMES, ShapeSpec, caption, render, sample_specs


@dataclass(frozen=True)
class DatasetItem:
    """One written picture: the image file, its caption file, the caption and what was drawn."""

    image: Path
    caption_file: Path
    caption: str
    spec: ShapeSpec


@dataclass(frozen=True)
class Dataset:
    """A written training folder (`<repeats>_<name>` inside the output folder)."""

    folder: Path
    repeats: int
    name: str
    items: tuple[DatasetItem, ...]


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG bytes; the same pixels always give the same bytes (no timestamps)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_dataset(
    out: Path | str,
    shapes: Sequence[str],
    count: int,
    *,
    seed: int = 0,
    size: int = 64,
    repeats: int = 10,
    name: str | None = None,
    trigger: str | None = None,
    colors: Sequence[str] = COLOR_NAMES,
    backgrounds: Sequence[str] = COLOR_NAMES,
    sizes: Sequence[str] = ("large",),
    fills: Sequence[str] = ("solid",),
    overwrite: bool = False,
) -> Dataset:
    """Draw `count` pictures of `shapes` (seeded) and write them with captions into
    `out/<repeats>_<name>/`. `name` defaults to the trigger word, else `shapes`.

    Refuses to write into a folder that already holds files unless `overwrite` is set.
    """
    if count < 1:
        raise ConfigError(f"count must be at least 1, not {count}")
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, not {repeats}")
    if trigger is not None and not trigger.strip():
        raise ConfigError(
            "the trigger word is empty", hint="give a word such as sks, or leave it out"
        )
    folder_name = _folder_name(
        repeats, name if name is not None else (trigger.strip() if trigger else "shapes")
    )
    folder = Path(out) / folder_name
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ConfigError(f"{folder} already holds files", hint="pick another folder or overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    specs = sample_specs(
        random.Random(seed),
        shapes,
        count,
        colors=colors,
        backgrounds=backgrounds,
        sizes=sizes,
        fills=fills,
    )
    width = max(4, len(str(count - 1)))
    items = []
    for index, spec in enumerate(specs):
        stem = f"{index:0{width}d}"
        text = caption(spec, noun=trigger.strip() if trigger is not None else None)
        image_path, caption_path = folder / f"{stem}.png", folder / f"{stem}.txt"
        atomic_write_bytes(image_path, png_bytes(render(spec, size)))
        atomic_write_bytes(caption_path, text.encode("utf-8"))
        items.append(DatasetItem(image_path, caption_path, text, spec))
    return Dataset(folder, repeats, folder_name.split("_", 1)[1], tuple(items))


def _folder_name(repeats: int, name: str) -> str:
    name = name.strip()
    if not name or any(ch in name for ch in "/\\") or name in {".", ".."}:
        raise ConfigError(f"{name!r} cannot name a dataset folder", hint="use a plain word")
    return f"{repeats}_{name}"
