"""kohya `--dataset_config` files: TOML (or JSON) with `[general]`, `[[datasets]]` and
`[[datasets.subsets]]`. A value set at a lower level wins; unset values fall back to the level
above, then to kohya's defaults (`BlueprintGenerator.generate_params_by_fallbacks`).

Mistakes get a message with the exact place (`datasets[0].subsets[1].num_repeats`) and, for a
misspelt key, the nearest known name. kohya options brushwork does not implement are accepted
and listed in `DatasetConfig.ignored` so nothing is silently different.
"""

from __future__ import annotations

import difflib
import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brushwork.core.errors import ConfigError
from brushwork.training.data.spec import DatasetSpec, SubsetSpec, normalize_resolution

logger = logging.getLogger(__name__)

_DATASET_KEYS: dict[str, type | tuple[type, ...]] = {
    "batch_size": int,
    "enable_bucket": bool,
    "min_bucket_reso": int,
    "max_bucket_reso": int,
    "bucket_reso_steps": int,
    "bucket_no_upscale": bool,
    "resolution": (int, list, str),
}
_SUBSET_KEYS: dict[str, type | tuple[type, ...]] = {
    "num_repeats": int,
    "shuffle_caption": bool,
    "caption_separator": str,
    "keep_tokens": int,
    "keep_tokens_separator": str,
    "secondary_separator": str,
    "enable_wildcard": bool,
    "caption_prefix": str,
    "caption_suffix": str,
    "flip_aug": bool,
    "random_crop": bool,
    "caption_dropout_rate": (float, int),
    "caption_dropout_every_n_epochs": int,
    "caption_tag_dropout_rate": (float, int),
    "caption_extension": str,
    "class_tokens": str,
}
_SUBSET_ONLY_KEYS: dict[str, type | tuple[type, ...]] = {"image_dir": str, "is_reg": bool}
# kohya options that are valid there but have no effect here (yet)
_IGNORED_KEYS = frozenset(
    {
        "network_multiplier",
        "validation_seed",
        "validation_split",
        "resize_interpolation",
        "color_aug",
        "face_crop_aug_range",
        "token_warmup_min",
        "token_warmup_step",
        "cache_info",
        "alpha_mask",
        "custom_attributes",
    }
)
_UNSUPPORTED_KEYS = {
    "metadata_file": "fine-tuning datasets (metadata_file) are not supported; use image folders",
    "conditioning_data_dir": "ControlNet datasets (conditioning_data_dir) are not supported",
}


@dataclass(frozen=True)
class DatasetConfig:
    """Every dataset in a config file, plus the kohya options that were accepted but ignored."""

    path: Path
    datasets: tuple[DatasetSpec, ...]
    ignored: tuple[str, ...]


def load_dataset_config(path: Path) -> DatasetConfig:
    """Read a kohya dataset config (.toml or .json) with all its datasets."""
    path = Path(path)
    raw = _read_file(path)
    ignored: list[str] = []
    _check_keys(raw, {"general": dict, "datasets": list}, "", path, ignored)
    general = raw.get("general", {})
    _check_level(general, "general", path, ignored, subset_only=False)
    datasets = raw.get("datasets", [])
    if not datasets:
        raise ConfigError(f"{path}: no [[datasets]] table", hint="see kohya's config_README")
    specs = tuple(
        _dataset_spec(item, general, f"datasets[{i}]", path, ignored)
        for i, item in enumerate(datasets)
    )
    for entry in ignored:
        logger.warning("%s: %s", path, entry)
    return DatasetConfig(path, specs, tuple(ignored))


def load_dataset_toml(path: Path) -> DatasetSpec:
    """The one dataset of a kohya dataset config. A file with several [[datasets]] raises
    ConfigError; use `load_dataset_config` and hand all of them to TrainingDataset."""
    config = load_dataset_config(path)
    if len(config.datasets) != 1:
        raise ConfigError(
            f"{path}: has {len(config.datasets)} [[datasets]]; expected one here",
            hint="load it with load_dataset_config() to train on all of them",
        )
    return config.datasets[0]


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: dataset config file not found")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table")
    return data


def _dataset_spec(
    item: Any, general: dict[str, Any], where: str, path: Path, ignored: list[str]
) -> DatasetSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    _check_level(item, where, path, ignored, subset_only=False, allow_subsets=True)
    subsets_raw = item.get("subsets", [])
    if not subsets_raw:
        raise ConfigError(f"{path}: {where} has no [[datasets.subsets]]")
    subsets = []
    for j, subset in enumerate(subsets_raw):
        subset_where = f"{where}.subsets[{j}]"
        if not isinstance(subset, dict):
            raise ConfigError(f"{path}: {subset_where} must be a table")
        _check_level(subset, subset_where, path, ignored, subset_only=True)
        subsets.append(_subset_spec(subset, [subset, item, general], subset_where, path))
    options = _inherit(_DATASET_KEYS, [item, general])
    try:
        if "resolution" in options:
            options["resolution"] = normalize_resolution(options["resolution"])
        return DatasetSpec(subsets=tuple(subsets), **options)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {where}: {exc.message}", hint=exc.hint) from exc


def _subset_spec(
    subset: dict[str, Any], levels: list[dict[str, Any]], where: str, path: Path
) -> SubsetSpec:
    if "image_dir" not in subset:
        raise ConfigError(f"{path}: {where} needs image_dir (the folder of images)")
    options = _inherit(_SUBSET_KEYS, levels)
    image_dir = _resolve_dir(Path(subset["image_dir"]), path)
    try:
        return SubsetSpec(image_dir=image_dir, is_reg=subset.get("is_reg", False), **options)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {where}: {exc.message}", hint=exc.hint) from exc


def _resolve_dir(image_dir: Path, config: Path) -> Path:
    """kohya resolves relative folders from the working directory; when that folder does not
    exist but one beside the config file does, that one is used."""
    if image_dir.is_absolute() or image_dir.is_dir():
        return image_dir
    beside = config.parent / image_dir
    return beside if beside.is_dir() else image_dir


def _inherit(keys: dict[str, Any], levels: list[dict[str, Any]]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in keys:
        for level in levels:
            if key in level and level[key] is not None:
                options[key] = level[key]
                break
    return options


def _check_level(
    table: dict[str, Any],
    where: str,
    path: Path,
    ignored: list[str],
    *,
    subset_only: bool,
    allow_subsets: bool = False,
) -> None:
    allowed: dict[str, Any] = dict(_SUBSET_KEYS)
    if subset_only:
        allowed.update(_SUBSET_ONLY_KEYS)
    else:
        allowed.update(_DATASET_KEYS)
    if allow_subsets:
        allowed["subsets"] = list
    _check_keys(table, allowed, where, path, ignored)


def _check_keys(
    table: dict[str, Any], allowed: dict[str, Any], where: str, path: Path, ignored: list[str]
) -> None:
    for key, value in table.items():
        place = f"{where}.{key}" if where else key
        if key in _UNSUPPORTED_KEYS:
            raise ConfigError(f"{path}: {place}: {_UNSUPPORTED_KEYS[key]}")
        if key in _IGNORED_KEYS:
            ignored.append(f"{place} is a kohya option brushwork does not use; it was ignored")
            continue
        if key not in allowed:
            near = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean {near[0]!r}?" if near else "see kohya's config_README"
            raise ConfigError(f"{path}: unknown option {place}", hint=hint)
        _check_type(value, allowed[key], place, path)


def _check_type(value: Any, expected: type | tuple[type, ...], place: str, path: Path) -> None:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    bool_mistaken_for_number = isinstance(value, bool) and bool not in kinds
    if bool_mistaken_for_number or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{path}: {place} is {value!r}; expected {names}")
