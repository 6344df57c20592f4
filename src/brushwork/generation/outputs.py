"""Saving images as A1111 does: PNG with the ``parameters`` chunk, its folders and numbering.

* ``<out>/txt2img-images/YYYY-MM-DD/NNNNN-SEED.png`` (``img2img-images`` for img2img), grids in
  ``<out>/txt2img-grids/YYYY-MM-DD/grid-NNNN.png``;
* the number is one more than the highest number any file in that folder starts with (A1111's
  ``get_next_sequence_number``): 00000 in an empty folder, never reused after deletions of
  lower numbers;
* the infotext goes into a PNG text chunk named ``parameters`` (``tEXt`` when it is Latin-1,
  else ``iTXt``, as Pillow chooses), so A1111's PNG Info reads it.

Files are written atomically and never overwritten: a name that appeared meanwhile moves the
number on. The PNG bytes depend only on the pixels and the text (no time stamps), so the same
image and infotext give the same file.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.fsutil import atomic_write_bytes

PARAMETERS_KEY = "parameters"
MAX_NAME_TRIES = 500


def png_bytes(image: Image.Image, infotext: str | None) -> bytes:
    """The image as PNG bytes with the infotext in the ``parameters`` text chunk."""
    info = PngInfo()
    if infotext:
        info.add_text(PARAMETERS_KEY, infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def images_folder(out: Path, mode: str, *, grid: bool = False, day: dt.date | None = None) -> Path:
    """``<out>/<mode>-images/<date>`` (or ``-grids``), A1111's default layout."""
    if mode not in ("txt2img", "img2img"):
        raise ConfigError(f"unknown output mode {mode!r}; valid modes: txt2img, img2img")
    kind = "grids" if grid else "images"
    return Path(out) / f"{mode}-{kind}" / (day or dt.date.today()).isoformat()


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """One more than the highest leading number of the folder's files (0 when there is none).

    With a ``basename`` only files named ``<basename>-N...`` count, as for grids.
    """
    prefix = f"{basename}-" if basename else ""
    highest = -1
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        name = path.name
        if not name.startswith(prefix):
            continue
        head = name[len(prefix) :].rsplit(".", 1)[0].split("-")[0]
        if head.isdigit():
            highest = max(highest, int(head))
    return highest + 1


def _write_new(folder: Path, names: Sequence[str], data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        if path.exists():
            continue
        try:
            atomic_write_bytes(path, data, overwrite=False)
        except BrushworkError:  # the name was taken meanwhile
            continue
        return path
    raise ConfigError(f"no free file name in {folder} after {len(names)} tries")


def save_image(image: Image.Image, folder: Path, *, seed: int, infotext: str | None) -> Path:
    """Save as ``NNNNN-SEED.png`` with the next free number; returns the path."""
    start = next_sequence_number(folder)
    names = [f"{start + i:05}-{seed}.png" for i in range(MAX_NAME_TRIES)]
    return _write_new(folder, names, png_bytes(image, infotext))


def save_grid(grid: Image.Image, folder: Path, *, infotext: str | None) -> Path:
    """Save as ``grid-NNNN.png`` with the next free number; returns the path."""
    start = next_sequence_number(folder, "grid")
    names = [f"grid-{start + i:04}.png" for i in range(MAX_NAME_TRIES)]
    return _write_new(folder, names, png_bytes(grid, infotext))


def image_grid(images: Sequence[Image.Image], rows: int | None = None) -> Image.Image:
    """The images side by side: ``rows`` rows (default: the rounded square root of the count,
    as A1111), filled row by row; cells take the first image's size."""
    if not images:
        raise ConfigError("a grid needs at least one image")
    if rows is None:
        rows = min(max(round(math.sqrt(len(images))), 1), len(images))
    columns = math.ceil(len(images) / rows)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), color="black")
    for index, image in enumerate(images):
        grid.paste(image, box=(index % columns * width, index // columns * height))
    return grid
