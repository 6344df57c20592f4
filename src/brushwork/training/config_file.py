"""sd-scripts' flat TOML config (`--config_file`) in, the resolved configuration out.

sd-scripts flattens one level of tables (section names are ignored) and matches keys to its
argument names; so does `read_config_toml`. Keys are sorted into:

* options of `LoraTrainingConfig` (or of the method's config class passed in) (applied);
* options that change nothing here (`xformers`, `sdpa`, data-loader workers, ...): noted;
* sd-scripts options not implemented here that would change the result (`full_fp16`,
  `multires_noise_iterations`, ...): warned about by name;
* anything else: warned as unknown, with the closest known name.
"""

from __future__ import annotations

import difflib
import json
import logging
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.training.config import LoraTrainingConfig, TrainingOptions

logger = logging.getLogger(__name__)

OptionsT = TypeVar("OptionsT", bound=TrainingOptions)

NO_EFFECT = frozenset(
    {
        "xformers",
        "sdpa",
        "mem_eff_attn",
        "max_data_loader_n_workers",
        "persistent_data_loader_workers",
        "lowram",
        "highvram",
        "vae_batch_size",
        "skip_cache_check",
        "log_tracker_name",
        "log_config",
        "console_log_level",
        "console_log_file",
        "wandb_run_name",
        "wandb_api_key",
        "ddp_timeout",
        "ddp_gradient_as_bucket_view",
        "ddp_static_graph",
        "save_n_epoch_ratio",
        "caption_separator",
        "torch_compile",
        "dynamo_backend",
        "network_train_unet_only_for_te",
    }
)
NOT_IMPLEMENTED = frozenset(
    {
        "full_fp16",
        "full_bf16",
        "fp8_base",
        "fp8_base_unet",
        "multires_noise_iterations",
        "multires_noise_discount",
        "ip_noise_gamma",
        "adaptive_noise_scale",
        "noise_offset_random_strength",
        "ip_noise_gamma_random_strength",
        "zero_terminal_snr",
        "debiased_estimation_loss",
        "scale_v_pred_loss_like_noise_pred",
        "v_pred_like_loss",
        "loss_type",
        "huber_schedule",
        "huber_c",
        "huber_scale",
        "weighted_captions",
        "color_aug",
        "random_crop",
        "face_crop_aug_range",
        "scale_weight_norms",
        "network_weights",
        "dim_from_weights",
        "masked_loss",
        "alpha_mask",
        "save_last_n_epochs",
        "save_last_n_steps",
        "save_last_n_epochs_state",
        "save_last_n_steps_state",
        "initial_epoch",
        "initial_step",
        "skip_until_initial_step",
        "token_warmup_min",
        "token_warmup_step",
        "in_json",
        "lr_scheduler_type",
        "lr_scheduler_args",
        "stop_text_encoder_training",
        "no_token_padding",
        "cache_text_encoder_outputs",
        "validation_split",
    }
)


@dataclass(frozen=True)
class ConfigSource:
    """Raw option values (sd-scripts names) and what was said about the keys."""

    values: dict[str, Any]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    origin: str = "command line"


@dataclass
class _Sorting:
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def known_options() -> tuple[str, ...]:
    return tuple(LoraTrainingConfig.model_fields)


def read_config_toml(path: Path | str, *, known: Collection[str] | None = None) -> ConfigSource:
    """A flat sd-scripts TOML (one level of tables is flattened, as sd-scripts does).
    `known`: the option names of another method's config (default: LoRA's)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return sort_options(flat, origin=str(path), known=known)


def sort_options(
    values: Mapping[str, Any],
    *,
    origin: str = "command line",
    known: Collection[str] | None = None,
) -> ConfigSource:
    """Keep the keys `LoraTrainingConfig` (or the `known` names) knows; note or warn about the
    others."""
    known = set(known_options() if known is None else known)
    sorting = _Sorting()
    for key, value in values.items():
        if key in known:
            sorting.values[key] = value
        elif key in NO_EFFECT:
            sorting.notes.append(f"{origin}: {key} has no effect here (ignored)")
        elif key in NOT_IMPLEMENTED:
            if value not in (None, False, 0, "", [], "l2"):
                sorting.warnings.append(
                    f"{origin}: {key} = {value!r} is an sd-scripts option brushwork does not "
                    "implement; it is ignored, so results will differ from sd-scripts"
                )
        else:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            sorting.warnings.append(f"{origin}: unknown option {key!r}{hint}; ignored")
    return ConfigSource(sorting.values, tuple(sorting.notes), tuple(sorting.warnings), origin)


def resolve_config(
    *sources: ConfigSource | Mapping[str, Any], seed: int | None = None
) -> tuple[LoraTrainingConfig, tuple[str, ...]]:
    """Later sources override earlier ones (the TOML, then CLI flags). Returns the validated
    config and the warnings to show. `seed` fills an unset seed (so the run is repeatable from
    the saved configuration)."""
    return resolve_config_as(LoraTrainingConfig, *sources, seed=seed)


def resolve_config_as(
    config_class: type[OptionsT],
    *sources: ConfigSource | Mapping[str, Any],
    seed: int | None = None,
) -> tuple[OptionsT, tuple[str, ...]]:
    """`resolve_config` for any method's options class (`TrainingOptions` or a subclass)."""
    known = tuple(config_class.model_fields)
    merged: dict[str, Any] = {}
    warnings: list[str] = []
    for source in sources:
        sorted_source = (
            source if isinstance(source, ConfigSource) else sort_options(source, known=known)
        )
        for note in sorted_source.notes:
            logger.info(note)
        warnings.extend(sorted_source.warnings)
        merged.update({k: v for k, v in sorted_source.values.items() if v is not None})
    if merged.get("seed") is None and seed is not None:
        merged["seed"] = seed
    if "pretrained_model_name_or_path" not in merged:
        raise ConfigError(
            "pretrained_model_name_or_path is not set",
            hint="pass --base MODEL or set it in the TOML",
        )
    try:
        config = config_class(**merged)
    except ValidationError as exc:
        raise _config_error(exc) from None
    return config, tuple(warnings)


def _config_error(exc: ValidationError) -> ConfigError:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if where:
            problems.append(f"{where}: {message} (got {error.get('input')!r})")
        else:
            problems.append(message)
    return ConfigError("invalid training options: " + "; ".join(problems))


def config_toml(config: BaseModel) -> str:
    """The resolved configuration as a flat sd-scripts TOML (unset options left out)."""
    lines = ["# resolved by brushwork; sd-scripts option names", ""]
    for key, value in config.model_dump().items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, tuple | list):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value) and len(value) == 2:
            return json.dumps(",".join(str(v) for v in value))  # resolution "512,512"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_resolved_config(config: BaseModel, path: Path) -> Path:
    atomic_write_bytes(path, config_toml(config).encode("utf-8"))
    return path
