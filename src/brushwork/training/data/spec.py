"""What a training dataset is made of: folders ("subsets") and per-dataset options.

The names and defaults follow kohya-ss sd-scripts (`DreamBoothSubsetParams`,
`DreamBoothDatasetParams`), so a kohya user finds the options they already know.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from brushwork.core.errors import ConfigError

logger = logging.getLogger(__name__)

# kohya's IMAGE_EXTENSIONS (matched case-insensitively here)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
CAPTION_EXTENSIONS = (".txt", ".caption")


@dataclass(frozen=True)
class SubsetSpec:
    """One image folder (a kohya "subset").

    `caption_extension=None` means: look at the folder and use `.txt` or `.caption`, whichever
    the images have (the choice is reported in `TrainingDataset.notes`). kohya's own default is
    `.caption`, which silently ignores the `.txt` files most taggers write.
    """

    image_dir: Path
    num_repeats: int = 1
    is_reg: bool = False
    class_tokens: str | None = None
    caption_extension: str | None = None
    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    flip_aug: bool = False
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    # additions beyond the shared contract (kohya names)
    caption_separator: str = ","
    secondary_separator: str | None = None
    enable_wildcard: bool = False
    random_crop: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_dir", Path(self.image_dir))
        _check_subset(self)


@dataclass(frozen=True)
class DatasetSpec:
    """One kohya dataset: subsets that share resolution, batch size and bucketing."""

    subsets: tuple[SubsetSpec, ...]
    resolution: tuple[int, int] = (512, 512)
    batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    # additions beyond the shared contract
    prior_loss_weight: float = 1.0
    max_image_pixels: int = 40_000_000
    max_image_side: int = 16_384

    def __post_init__(self) -> None:
        object.__setattr__(self, "subsets", tuple(self.subsets))
        object.__setattr__(self, "resolution", normalize_resolution(self.resolution))
        _check_dataset(self)


def normalize_resolution(value: Any) -> tuple[int, int]:
    """kohya accepts `512`, `"512"`, `"512,768"`, `[512, 768]` (width, height)."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"resolution {value!r} is not a number or 'width,height'") from None
    elif isinstance(value, int):
        numbers = [value]
    else:
        numbers = [int(v) for v in value]
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or min(numbers) < 64:
        raise ConfigError(f"resolution {value!r} must be one size or 'width,height', each >= 64")
    return numbers[0], numbers[1]


def _check_subset(subset: SubsetSpec) -> None:
    where = f"subset {subset.image_dir}"
    for name in ("caption_dropout_rate", "caption_tag_dropout_rate"):
        rate = getattr(subset, name)
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"{where}: {name} is {rate}; it must be between 0 and 1")
    if subset.keep_tokens < 0 or subset.caption_dropout_every_n_epochs < 0:
        raise ConfigError(f"{where}: keep_tokens and caption_dropout_every_n_epochs must be >= 0")
    ext = subset.caption_extension
    if ext is not None and not ext.startswith("."):
        object.__setattr__(subset, "caption_extension", "." + ext)


def _check_dataset(spec: DatasetSpec) -> None:
    if spec.batch_size < 1:
        raise ConfigError(f"batch_size is {spec.batch_size}; it must be at least 1")
    if spec.bucket_reso_steps < 8 or spec.bucket_reso_steps % 8:
        raise ConfigError(
            f"bucket_reso_steps is {spec.bucket_reso_steps}; it must be a multiple of 8",
            hint="kohya uses 64; the VAE needs multiples of 8",
        )
    if spec.enable_bucket and not spec.bucket_no_upscale:
        low, high = min(spec.resolution), max(spec.resolution)
        if low < spec.min_bucket_reso or high > spec.max_bucket_reso:
            raise ConfigError(
                f"resolution {spec.resolution} is outside min_bucket_reso/max_bucket_reso "
                f"({spec.min_bucket_reso}..{spec.max_bucket_reso})",
                hint="lower min_bucket_reso or raise max_bucket_reso",
            )


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """`10_sks dog` -> (10, "sks dog"); None when the prefix is not a whole number (kohya)."""
    head, _, rest = name.partition("_")
    try:
        repeats = int(head)
    except ValueError:
        return None
    return repeats, rest


def dreambooth_subsets(
    train_data_dir: Path, reg_data_dir: Path | None = None, **caption_options: Any
) -> tuple[SubsetSpec, ...]:
    """Subsets from kohya's folder layout: `<repeats>_<instance> <class>` under each parent.

    Folders are taken in name order. A folder whose prefix is not a number is skipped with a
    warning (logged, like kohya); folders with repeats < 1 are skipped too.
    `caption_options` are any other `SubsetSpec` fields, applied to every subset.
    """
    subsets = _subsets_in(Path(train_data_dir), is_reg=False, options=caption_options)
    if not subsets:
        raise ConfigError(
            f"{train_data_dir}: no '<repeats>_<name>' folders with images were found",
            hint="put images in a sub-folder such as '10_sks dog' (10 repeats, class 'sks dog')",
        )
    if reg_data_dir is not None:
        subsets += _subsets_in(Path(reg_data_dir), is_reg=True, options=caption_options)
    return tuple(subsets)


def _subsets_in(parent: Path, *, is_reg: bool, options: dict[str, Any]) -> list[SubsetSpec]:
    if not parent.is_dir():
        raise ConfigError(f"{parent}: not a folder", hint="check the train/reg data path")
    found: list[SubsetSpec] = []
    for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
        parsed = parse_folder_name(folder.name)
        if parsed is None:
            logger.warning(
                "ignoring folder without a repeat count: %s (name it like '10_%s')",
                folder,
                folder.name,
            )
            continue
        repeats, class_tokens = parsed
        if repeats < 1:
            logger.warning("ignoring folder with repeats < 1: %s", folder)
            continue
        base = SubsetSpec(
            image_dir=folder, num_repeats=repeats, is_reg=is_reg, class_tokens=class_tokens
        )
        found.append(replace(base, **options) if options else base)
    return found


def skipped_folders(parent: Path) -> list[Path]:
    """Sub-folders `dreambooth_subsets` ignores because their name has no repeat count."""
    if not Path(parent).is_dir():
        return []
    return sorted(
        p for p in Path(parent).iterdir() if p.is_dir() and parse_folder_name(p.name) is None
    )
