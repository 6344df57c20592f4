"""Pictures for the dataset tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image


def solid(size: tuple[int, int], colour: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
