"""Reading training images with Pillow, safely.

Every image is checked once before training (`probe_image`): it must open and decode fully,
stay under a pixel budget (decompression bombs are refused before decoding), and have a mode
we can turn into RGB. Odd modes are converted the careful way: 16-bit greyscale is scaled to
8 bits (Pillow's plain `convert("RGB")` clips it to white), transparency is flattened on white,
CMYK and palette images are converted, and the EXIF orientation is applied.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from brushwork.training.data.buckets import Size

_EIGHT_BIT_MODES = frozenset({"RGB", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "1"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "RGBa", "La", "PA"})
_HIGH_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass(frozen=True)
class ImageProbe:
    """The outcome of checking one image file before training."""

    path: Path
    size: Size | None  # (width, height) after the EXIF orientation; None when unusable
    problem: str | None  # why the file is skipped
    note: str | None  # a conversion that will happen (CMYK, 16-bit, transparency...)


class ImageLoadError(Exception):
    """An image could not be used; the message names the file and says why."""


def probe_image(path: Path, *, max_pixels: int, max_side: int, decode: bool = True) -> ImageProbe:
    """Open, size-check and (with `decode`) fully decode `path` once. Never raises for a bad
    file: the problem is returned, naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                budget = _budget_problem(width, height, max_pixels, max_side)
                if budget is not None:
                    return ImageProbe(path, None, f"{path}: {budget}", None)
                if decode:
                    image.load()
                mode = image.mode
                oriented = _oriented_size(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageProbe(path, None, f"{path}: refused as a decompression bomb ({exc})", None)
    except UnidentifiedImageError:
        return ImageProbe(
            path, None, f"{path}: not a readable image (unknown or corrupt data)", None
        )
    except (OSError, ValueError, SyntaxError) as exc:
        return ImageProbe(path, None, f"{path}: cannot be decoded ({exc})", None)
    if mode not in _EIGHT_BIT_MODES | _ALPHA_MODES | _HIGH_BIT_MODES:
        return ImageProbe(path, None, f"{path}: unsupported image mode {mode}", None)
    return ImageProbe(path, oriented, None, _conversion_note(path, mode))


def _budget_problem(width: int, height: int, max_pixels: int, max_side: int) -> str | None:
    if width < 1 or height < 1:
        return "image has no pixels"
    if max(width, height) > max_side:
        return f"{width}x{height} has a side over {max_side} pixels; scale it down first"
    if width * height > max_pixels:
        megapixels = width * height / 1e6
        return (
            f"{width}x{height} ({megapixels:.0f} MP) is over the {max_pixels / 1e6:.0f} MP limit;"
            " scale it down first (or raise max_image_pixels)"
        )
    return None


def _oriented_size(image: Image.Image) -> Size:
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _conversion_note(path: Path, mode: str) -> str | None:
    if mode in _HIGH_BIT_MODES:
        return f"{path}: {mode} (high bit depth) image scaled to 8-bit RGB"
    if mode in _ALPHA_MODES:
        return f"{path}: transparency flattened on white"
    if mode == "CMYK":
        return f"{path}: CMYK image converted to RGB"
    return None


def load_rgb(path: Path) -> Image.Image:
    """The image as 8-bit RGB, EXIF orientation applied. Raises ImageLoadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened)
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{path}: refused as a decompression bomb ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"{path}: cannot be decoded ({exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any supported mode to RGB without clipping or black transparent areas."""
    mode = image.mode
    if mode in _HIGH_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = _full_scale(mode, float(values.max(initial=0.0)))
        grey = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _full_scale(mode: str, peak: float) -> float:
    """The value that means white: 65535 for 16-bit modes; for 32-bit int or float images,
    guessed from the data (floats in 0..1, 8-bit or 16-bit ranges)."""
    if mode.startswith("I;16"):
        return 65535.0
    if mode == "F" and peak <= 1.0:
        return 1.0
    return 65535.0 if peak > 255.0 else 255.0


def resize_and_crop(
    image: Image.Image, resized: Size, bucket: Size, rng: random.Random | None = None
) -> Image.Image:
    """Scale to `resized` (covering `bucket`), then crop to the bucket: centred, or at a
    random offset when `rng` is given (kohya `random_crop`). Area-like filter when shrinking,
    Lanczos when growing (kohya's defaults)."""
    if image.size != resized:
        shrinking = resized[0] < image.size[0]
        method = Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS
        image = image.resize(resized, method)
    extra_w, extra_h = image.size[0] - bucket[0], image.size[1] - bucket[1]
    if extra_w < 0 or extra_h < 0:
        raise ImageLoadError(f"internal: resized {image.size} does not cover bucket {bucket}")
    left = rng.randint(0, extra_w) if rng is not None else extra_w // 2
    top = rng.randint(0, extra_h) if rng is not None else extra_h // 2
    if extra_w or extra_h:
        image = image.crop((left, top, left + bucket[0], top + bucket[1]))
    return image


def to_tensor(image: Image.Image, *, flip: bool = False) -> torch.Tensor:
    """RGB image -> float32 [3, H, W] in [-1, 1] (kohya: ToTensor + Normalize(0.5, 0.5))."""
    array = np.array(image, dtype=np.uint8)
    if flip:
        array = array[:, ::-1, :]
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()
    return tensor / 127.5 - 1.0
