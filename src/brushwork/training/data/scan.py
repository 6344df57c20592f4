"""Turning a DatasetSpec into checked images with captions, repeats and buckets.

Mirrors kohya `DreamBoothDataset.__init__` and `BaseDataset.make_buckets`:
train images are registered first; reg images are then registered in order with their
repeats until they reach the train count, and if they fall short, their repeats grow by one
round-robin until the totals match. Buckets hold each registered image `repeats` times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from brushwork.training.data.buckets import BucketSelector, Size
from brushwork.training.data.captions import choose_caption_extension, read_caption
from brushwork.training.data.images import probe_image
from brushwork.training.data.spec import IMAGE_EXTENSIONS, DatasetSpec, SubsetSpec

logger = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """One usable image and everything decided about it before training."""

    path: Path
    subset: int  # index into DatasetPart.subsets
    caption: str  # the caption file's text, or the class tokens when there is none
    size: Size  # (width, height) with the EXIF orientation applied
    is_reg: bool
    repeats: int
    bucket: Size = (0, 0)
    resized: Size = (0, 0)
    ar_error: float = 0.0
    latents: torch.Tensor | None = None
    latents_flipped: torch.Tensor | None = None
    npz: Path | None = None  # latents on disk (read at each step, like kohya)


@dataclass
class DatasetPart:
    """One DatasetSpec after scanning."""

    spec: DatasetSpec
    subsets: list[SubsetSpec] = field(default_factory=list)
    subset_image_counts: list[int] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)  # registered (used) images
    unused_reg: list[ImageRecord] = field(default_factory=list)
    buckets: dict[Size, list[int]] = field(default_factory=dict)  # bucket -> image indices
    num_train_images: int = 0  # images x repeats
    num_reg_images: int = 0  # before balancing
    mean_ar_error: float = 0.0
    captions: dict[str, list[str]] = field(default_factory=dict)  # folder name -> raw captions

    @property
    def num_batches(self) -> int:
        size = self.spec.batch_size
        return sum(-(-len(members) // size) for members in self.buckets.values())


@dataclass
class ScanReport:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    """Images directly in `folder`, in name order (kohya globs the same extensions)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def scan_dataset(spec: DatasetSpec, report: ScanReport, *, verify_images: bool) -> DatasetPart:
    part = DatasetPart(spec)
    train: list[ImageRecord] = []
    reg: list[ImageRecord] = []
    seen: set[Path] = set()
    for subset in spec.subsets:
        if not _subset_usable(subset, seen, report):
            continue
        records = _scan_subset(subset, len(part.subsets), spec, report, verify_images)
        captions = part.captions.setdefault(subset.image_dir.name, [])
        captions.extend(r.caption for r in records)
        if not records:
            report.warnings.append(f"{subset.image_dir}: no usable images; folder ignored")
            continue
        seen.add(subset.image_dir.resolve())
        part.subsets.append(subset)
        part.subset_image_counts.append(len(records))
        if subset.is_reg:
            part.num_reg_images += subset.num_repeats * len(records)
            reg.extend(records)
        else:
            part.num_train_images += subset.num_repeats * len(records)
            train.extend(records)
    part.images = list(train)
    _balance_reg(part, reg, report)
    _assign_buckets(part)
    return part


def _subset_usable(subset: SubsetSpec, seen: set[Path], report: ScanReport) -> bool:
    if subset.num_repeats < 1:
        report.warnings.append(f"{subset.image_dir}: num_repeats < 1; folder ignored")
        return False
    if not subset.image_dir.is_dir():
        report.warnings.append(f"{subset.image_dir}: folder not found; ignored")
        return False
    if subset.image_dir.resolve() in seen:
        report.warnings.append(f"{subset.image_dir}: listed twice; the first entry is used")
        return False
    return True


def _scan_subset(
    subset: SubsetSpec, index: int, spec: DatasetSpec, report: ScanReport, verify: bool
) -> list[ImageRecord]:
    paths = list_images(subset.image_dir)
    choice = choose_caption_extension(subset, paths)
    _report_caption_choice(subset, choice.extension, choice.matched, choice.other, report, paths)
    records: list[ImageRecord] = []
    missing: list[Path] = []
    for path in paths:
        size = _checked_size(path, spec, report, verify)
        if size is None:
            continue
        text, problem = read_caption(path, choice.extension, enable_wildcard=subset.enable_wildcard)
        if problem is not None:
            report.warnings.append(problem)
        if text is None:
            missing.append(path)
            text = subset.class_tokens or ""
        records.append(ImageRecord(path, index, text, size, subset.is_reg, subset.num_repeats))
    if missing:
        _report_missing_captions(subset, choice.extension, missing, report)
    return records


def _checked_size(path: Path, spec: DatasetSpec, report: ScanReport, verify: bool) -> Size | None:
    probe = probe_image(
        path, max_pixels=spec.max_image_pixels, max_side=spec.max_image_side, decode=verify
    )
    if probe.problem is not None or probe.size is None:
        report.warnings.append(f"skipped {probe.problem}")
        return None
    step = spec.bucket_reso_steps
    if spec.enable_bucket and spec.bucket_no_upscale and min(probe.size) < step:
        report.warnings.append(
            f"skipped {path}: {probe.size[0]}x{probe.size[1]} is smaller than one bucket step"
            f" ({step} px) and bucket_no_upscale never enlarges"
        )
        return None
    if probe.note is not None:
        report.notes.append(probe.note)
    return probe.size


def _report_caption_choice(
    subset: SubsetSpec,
    extension: str,
    matched: int,
    other: dict[str, int],
    report: ScanReport,
    paths: list[Path],
) -> None:
    how = "detected" if subset.caption_extension is None else "as configured"
    report.notes.append(
        f"{subset.image_dir}: captions from {extension} files ({how}; {matched} of {len(paths)} images)"
    )
    for ext, count in other.items():
        report.warnings.append(
            f"{subset.image_dir}: {count} {ext} caption files are not used (using {extension});"
            f" set caption_extension = '{ext}' to use them"
        )


def _report_missing_captions(
    subset: SubsetSpec, extension: str, missing: list[Path], report: ScanReport
) -> None:
    fallback = (
        f"class tokens {subset.class_tokens!r}" if subset.class_tokens else "an empty caption"
    )
    shown = ", ".join(p.name for p in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    report.warnings.append(
        f"{subset.image_dir}: {len(missing)} images have no {extension} caption; "
        f"they use {fallback} ({shown}{more})"
    )


def _balance_reg(part: DatasetPart, reg: list[ImageRecord], report: ScanReport) -> None:
    """kohya: reg images are registered until their repeats reach the train count."""
    if not reg:
        return
    target = part.num_train_images
    if part.num_reg_images > target:
        report.warnings.append(
            f"{part.num_reg_images} reg images (with repeats) for {target} train images: "
            "some reg images are not used (kohya balances reg to the train count)"
        )
    registered = 0
    total = 0
    first_round = True
    while total < target:
        for record in reg:
            if first_round:
                part.images.append(record)
                registered += 1
                total += record.repeats
            else:
                record.repeats += 1
                total += 1
            if total >= target:
                break
        first_round = False
    part.unused_reg = reg[registered:]


def _assign_buckets(part: DatasetPart) -> None:
    spec = part.spec
    selector = BucketSelector(
        spec.resolution,
        enable_bucket=spec.enable_bucket,
        min_size=spec.min_bucket_reso,
        max_size=spec.max_bucket_reso,
        step=spec.bucket_reso_steps,
        no_upscale=spec.bucket_no_upscale,
    )
    errors: list[float] = []
    buckets: dict[Size, list[int]] = {}
    for index, record in enumerate(part.images):
        choice = selector.select(*record.size)
        record.bucket, record.resized, record.ar_error = (
            choice.bucket,
            choice.resized,
            choice.ar_error,
        )
        errors.append(abs(choice.ar_error))
        buckets.setdefault(choice.bucket, []).extend([index] * record.repeats)
    part.buckets = {bucket: buckets[bucket] for bucket in sorted(buckets)}
    part.mean_ar_error = sum(errors) / len(errors) if errors else 0.0
