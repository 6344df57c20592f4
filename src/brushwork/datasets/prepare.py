"""Preprocessing a folder of pictures into a training set (A1111's old preprocess tab, kohya-ready).

`prepare_dataset(source, output, options)` walks `source` (subfolders such as kohya's
`10_name/` are mirrored), and for each picture writes `<stem>.png` sized to multiples of 64,
copying its caption files (`<stem>.txt`, `<stem>.caption`) beside it; with `flip` also a
mirrored `<stem>-flipped.png` with the same captions. The source files are never written.

Sizes: a fixed `size` (each side snapped to the nearest multiple of 64), or with `buckets`
kohya's aspect-ratio buckets for the area of `size` (`training.data.buckets`; bucket sides from
`min_bucket_reso` to `max_bucket_reso`, by default half and twice the side of the square, which
is kohya's 256..1024 at 512x512), so each picture keeps its aspect ratio.

Crops: `center` scales the picture to cover the target and cuts the overflow evenly; `focal`
centres the cut on the picture's focal point (`datasets.focal`: edges and entropy); `none`
keeps every pixel and scales to the target (A1111's "just resize": the aspect ratio changes by
the difference between the picture and the target; with buckets, by the bucket's small error).

Skipped, each with a message and never an exception: files that do not decode (broken,
truncated, unknown modes, decompression bombs), pictures whose shorter side is below
`min_size`, exact duplicates (same pixels) and near duplicates (`datasets.fingerprint`). Of a
group of duplicates the largest picture (then the first by path) is kept.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.datasets.captions import walk_files
from brushwork.datasets.fingerprint import (
    HASH_BITS,
    Fingerprint,
    fingerprint,
    near_duplicate_distance,
)
from brushwork.datasets.focal import crop_box, focal_point
from brushwork.datasets.images import SOURCE_EXTENSIONS, ImageLoadError, load_image
from brushwork.training.data.buckets import BucketSelector, Size, cover_size

logger = logging.getLogger(__name__)

STEP = 64
SOURCE_CAPTION_EXTENSIONS = (".txt", ".caption")
FLIPPED_SUFFIX = "-flipped"
Progress = Callable[[int, int], None]


class CropMode(StrEnum):
    CENTER = "center"
    FOCAL = "focal"
    NONE = "none"


class SkipReason(StrEnum):
    BROKEN = "broken"
    TOO_SMALL = "too_small"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"


def snap(value: int) -> int:
    """The nearest multiple of 64 (at least 64)."""
    return max(STEP, int(value / STEP + 0.5) * STEP)


def parse_size(text: str) -> Size:
    """`512x768` or `512` -> (width, height), not yet snapped."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers) < 1:
        raise ConfigError(f"size {text!r} is not WIDTHxHEIGHT", hint="e.g. 512x512 or 768x512")
    return (numbers[0], numbers[-1])


@dataclass(frozen=True)
class PrepareOptions:
    """How `prepare_dataset` sizes, crops and filters. `size` is snapped to multiples of 64."""

    size: Size = (512, 512)
    buckets: bool = False
    crop: CropMode = CropMode.CENTER
    flip: bool = False
    min_size: int = 64
    min_bucket_reso: int | None = None
    max_bucket_reso: int | None = None
    dedupe: bool = True
    near_distance: int = 24  # hash bits (of 512) two near duplicates may differ in

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", (snap(self.size[0]), snap(self.size[1])))
        if self.min_size < 0:
            raise ConfigError(f"--min-size {self.min_size} is negative")
        if not 0 <= self.near_distance <= HASH_BITS // 4:
            raise ConfigError(
                f"near-duplicate distance {self.near_distance} is outside 0..{HASH_BITS // 4}"
            )
        low, high = self.bucket_range
        if self.buckets and not STEP <= low <= high:
            raise ConfigError(f"bucket sides {low}..{high} are not an increasing range from 64")

    @property
    def bucket_range(self) -> tuple[int, int]:
        side = int((self.size[0] * self.size[1]) ** 0.5)
        low = self.min_bucket_reso or max(STEP, side // 2 // STEP * STEP)
        high = self.max_bucket_reso or max(low, side * 2 // STEP * STEP)
        return low, high


@dataclass(frozen=True)
class PreparedImage:
    source: Path
    outputs: tuple[Path, ...]  # the picture, then its flipped copy
    size: Size
    original_size: Size  # upright, before resizing
    captions: tuple[Path, ...]  # caption files written (for every output)
    notes: tuple[str, ...]


@dataclass(frozen=True)
class SkippedImage:
    source: Path
    reason: SkipReason
    message: str
    duplicate_of: Path | None = None


@dataclass(frozen=True)
class PrepareReport:
    source: Path
    output: Path
    options: PrepareOptions
    kept: tuple[PreparedImage, ...]
    skipped: tuple[SkippedImage, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "size": list(self.options.size),
            "buckets": self.options.buckets,
            "crop": self.options.crop.value,
            "kept": [
                {
                    "source": str(item.source),
                    "outputs": [str(p) for p in item.outputs],
                    "size": list(item.size),
                    "original_size": list(item.original_size),
                    "captions": [str(p) for p in item.captions],
                    "notes": list(item.notes),
                }
                for item in self.kept
            ],
            "skipped": [
                {
                    "source": str(item.source),
                    "reason": item.reason.value,
                    "message": item.message,
                    "duplicate_of": None if item.duplicate_of is None else str(item.duplicate_of),
                }
                for item in self.skipped
            ],
            "counts": {
                "kept": len(self.kept),
                "written": sum(len(item.outputs) for item in self.kept),
                "skipped": len(self.skipped),
            },
        }


def _check_folders(source: Path, output: Path) -> None:
    if not source.is_dir():
        raise ConfigError(f"{source} is not a folder", hint="give the folder of source pictures")
    if output.resolve() == source.resolve():
        raise ConfigError(
            f"the output folder is the source folder ({source})",
            hint="originals are never overwritten: choose another output folder",
        )
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a folder")


def _sources(source: Path, output: Path) -> list[Path]:
    out = output.resolve()
    return [
        path for path in walk_files(source, SOURCE_EXTENSIONS) if out not in path.resolve().parents
    ]


def _survey(
    paths: list[Path], options: PrepareOptions, skipped: list[SkippedImage]
) -> dict[Path, Fingerprint]:
    """Decode every picture once: skip broken and tiny ones, fingerprint the rest."""
    prints: dict[Path, Fingerprint] = {}
    for path in paths:
        try:
            loaded = load_image(path)
        except ImageLoadError as exc:
            skipped.append(SkippedImage(path, SkipReason.BROKEN, str(exc)))
            continue
        width, height = loaded.image.size
        if min(width, height) < options.min_size:
            message = f"{path}: {width}x{height} is below the minimum size {options.min_size}"
            skipped.append(SkippedImage(path, SkipReason.TOO_SMALL, message))
            continue
        prints[path] = fingerprint(loaded.image)
    return prints


def _drop_duplicates(
    prints: dict[Path, Fingerprint], options: PrepareOptions, skipped: list[SkippedImage]
) -> list[Path]:
    """Keep the largest of each group of (near) duplicates; the kept paths in path order."""
    kept: list[Path] = []
    by_hash: dict[str, Path] = {}
    for path in sorted(prints, key=lambda p: (-prints[p].pixels, p)):
        current = prints[path]
        if not options.dedupe:
            kept.append(path)
            continue
        twin = by_hash.get(current.sha256)
        if twin is not None:
            message = f"{path}: same pixels as {twin}"
            skipped.append(SkippedImage(path, SkipReason.DUPLICATE, message, twin))
            continue
        near = _nearest(current, kept, prints, options.near_distance)
        if near is not None:
            message = f"{path}: near duplicate of {near[0]} (perceptual hash distance {near[1]} of {HASH_BITS} bits)"
            skipped.append(SkippedImage(path, SkipReason.NEAR_DUPLICATE, message, near[0]))
            continue
        by_hash[current.sha256] = path
        kept.append(path)
    return sorted(kept)


def _nearest(
    current: Fingerprint, kept: list[Path], prints: dict[Path, Fingerprint], max_distance: int
) -> tuple[Path, int] | None:
    best: tuple[Path, int] | None = None
    for other in kept:
        distance = near_duplicate_distance(current, prints[other], max_distance)
        if distance is not None and (best is None or distance < best[1]):
            best = (other, distance)
    return best


def target_size(image_size: Size, options: PrepareOptions) -> Size:
    """The output size of a picture: the fixed size, or its kohya bucket."""
    if not options.buckets:
        return options.size
    low, high = options.bucket_range
    selector = BucketSelector(
        options.size, enable_bucket=True, min_size=low, max_size=high, step=STEP
    )
    return selector.select(*image_size).bucket


def resize_to(image: Image.Image, target: Size, crop: CropMode) -> Image.Image:
    """`image` at exactly `target`, cut as `crop` says."""
    if image.size == target:
        return image
    if crop is CropMode.NONE:
        return image.resize(target, Image.Resampling.LANCZOS)
    covered = cover_size(image.size, target)
    covered = (max(covered[0], target[0]), max(covered[1], target[1]))
    scaled = image.resize(covered, Image.Resampling.LANCZOS)
    if crop is CropMode.FOCAL:
        box = crop_box(covered, target, focal_point(scaled, target))
    else:
        left, top = (covered[0] - target[0]) // 2, (covered[1] - target[1]) // 2
        box = (left, top, left + target[0], top + target[1])
    return scaled.crop(box)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _output_stem(path: Path, source: Path, output: Path, used: set[Path]) -> Path:
    """OUT/<relative folder>/<stem>, made unique when two sources share a stem (a.jpg, a.png)."""
    folder = output / path.parent.relative_to(source)
    stem = folder / path.stem
    if stem in used:
        stem = folder / f"{path.stem}-{path.suffix.lstrip('.').lower()}"
    used.add(stem)
    return stem


def _write_one(path: Path, stem: Path, options: PrepareOptions) -> PreparedImage | SkippedImage:
    try:
        loaded = load_image(path)
    except ImageLoadError as exc:  # changed since the survey
        return SkippedImage(path, SkipReason.BROKEN, str(exc))
    picture = resize_to(loaded.image, target_size(loaded.image.size, options), options.crop)
    versions = [(stem, picture)]
    if options.flip:
        flipped = ImageOps.mirror(picture)
        versions.append((stem.with_name(stem.name + FLIPPED_SUFFIX), flipped))
    outputs, captions = [], []
    for out_stem, image in versions:
        target = out_stem.with_name(out_stem.name + ".png")
        atomic_write_bytes(target, _png_bytes(image))
        outputs.append(target)
        for extension in SOURCE_CAPTION_EXTENSIONS:
            caption = path.with_name(path.stem + extension)
            if caption.is_file():
                copy = out_stem.with_name(out_stem.name + extension)
                atomic_write_bytes(copy, caption.read_bytes())
                captions.append(copy)
    return PreparedImage(
        path, tuple(outputs), picture.size, loaded.image.size, tuple(captions), loaded.notes
    )


def prepare_dataset(
    source: Path,
    output: Path,
    options: PrepareOptions | None = None,
    *,
    progress: Progress | None = None,
) -> PrepareReport:
    """Write the prepared pictures of `source` into `output` (see the module doc)."""
    options = options or PrepareOptions()
    _check_folders(source, output)
    paths = _sources(source, output)
    skipped: list[SkippedImage] = []
    prints = _survey(paths, options, skipped)
    chosen = _drop_duplicates(prints, options, skipped)
    kept: list[PreparedImage] = []
    used: set[Path] = set()
    for index, path in enumerate(chosen):
        result = _write_one(path, _output_stem(path, source, output, used), options)
        if isinstance(result, SkippedImage):
            skipped.append(result)
        else:
            kept.append(result)
        if progress is not None:
            progress(index + 1, len(chosen))
    for item in skipped:
        logger.info("skipped %s", item.message)
    order = {path: index for index, path in enumerate(paths)}
    skipped.sort(key=lambda item: order.get(item.source, len(order)))
    return PrepareReport(source, output, options, tuple(kept), tuple(skipped))
