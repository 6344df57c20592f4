"""Opening dataset images: every file either becomes an 8-bit RGB picture or a reason why not.

EXIF orientation is applied (a phone photo stored sideways comes out upright); CMYK, palette,
16-bit and 32-bit greyscale are converted without clipping, and transparency (RGBA, LA, palette
with a transparent colour) is flattened on white, the way training reads them
(`training.data.images.to_rgb`). Broken and truncated files, decompression bombs and unknown
modes raise `ImageLoadError` with a message naming the file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from brushwork.training.data.images import ImageLoadError, to_rgb
from brushwork.training.data.spec import IMAGE_EXTENSIONS

# Anything Pillow reads that people keep source pictures in; outputs are always PNG.
SOURCE_EXTENSIONS = frozenset(IMAGE_EXTENSIONS | {".tif", ".tiff", ".gif"})
_HIGH_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA = {"RGBA", "LA", "RGBa", "La", "PA"}
_KNOWN_MODES = {"RGB", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "1"} | _HIGH_BIT | _ALPHA
_ORIENTATION_TAG = 0x0112

__all__ = ["SOURCE_EXTENSIONS", "ImageLoadError", "LoadedImage", "load_image"]


@dataclass(frozen=True)
class LoadedImage:
    """An image as upright 8-bit RGB, its stored size, and the conversions made."""

    image: Image.Image
    stored_size: tuple[int, int]
    notes: tuple[str, ...]


def _notes(mode: str, orientation: int, has_transparency: bool) -> list[str]:
    notes = []
    if orientation not in (0, 1):
        notes.append(f"EXIF orientation {orientation} applied")
    if mode in _HIGH_BIT:
        notes.append(f"{mode} (high bit depth) scaled to 8-bit RGB")
    elif mode in _ALPHA or has_transparency:
        notes.append("transparency flattened on white")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode == "P":
        notes.append("palette image converted to RGB")
    return notes


def load_image(path: Path) -> LoadedImage:
    """Decode `path` fully as upright RGB; ImageLoadError says why a file cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                mode, stored = opened.mode, opened.size
                orientation = int(opened.getexif().get(_ORIENTATION_TAG, 1) or 1)
                transparent = mode == "P" and "transparency" in opened.info
                if mode not in _KNOWN_MODES:
                    raise ImageLoadError(f"{path}: unsupported image mode {mode}")
                upright = ImageOps.exif_transpose(opened)
                rgb = to_rgb(upright)
                if rgb is opened:  # closed when the `with` ends
                    rgb = rgb.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{path}: refused as a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(f"{path}: cannot be decoded ({exc})") from exc
    if min(stored) < 1:
        raise ImageLoadError(f"{path}: image has no pixels")
    return LoadedImage(rgb, stored, tuple(_notes(mode, orientation, transparent)))
