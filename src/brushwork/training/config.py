"""Training options, by kohya sd-scripts' argument names and with their meanings.

`TrainingOptions` holds what every kohya-style method shares (model, data, output, optimiser,
samples, logs); `LoraTrainingConfig` adds the network options, and
`dreambooth_config.DreamBoothTrainingConfig` the full fine-tune's. Each is the one validated,
frozen description of a run. It is built from a flat
sd-scripts TOML (`config_file.read_config_toml`, like `--config_file`) and/or CLI flags
(`resolve_config`); invalid or conflicting values fail here, before any work, naming the option.

Defaults are sd-scripts' except where noted:
* `learning_rate` 1e-4 (sd-scripts: 2e-6, a full fine-tune value that barely moves a LoRA);
* `caption_extension` unset = detect `.txt` or `.caption` per folder (sd-scripts: `.caption`);
* `max_token_length` 75 (same), `clip_skip` 1 (same), `network_dim` 4 and `network_alpha` 1 (same).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from brushwork.core.errors import ConfigError
from brushwork.training.optim import SCHEDULERS, choose_optimizer, parse_optimizer_args
from brushwork.training.text import check_token_length

MIXED_PRECISIONS = ("no", "fp16", "bf16")
SAVE_FORMATS = ("safetensors", "pt", "ckpt")
SAVE_PRECISIONS = ("float", "fp16", "bf16")
NETWORK_MODULE = "networks.lora"
# network_args keys sd-scripts' networks.lora takes that are applied here
NETWORK_ARGS = ("conv_dim", "conv_alpha")


class TrainingOptions(BaseModel):
    """The options every kohya-style method shares (model, data, output, optimisation,
    samples, logging); `LoraTrainingConfig` and DreamBooth's config add their own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # model
    pretrained_model_name_or_path: str
    vae: str | None = None
    v2: bool = False
    v_parameterization: bool = False
    no_half_vae: bool = False
    # data (dreambooth-style folders, or a kohya dataset TOML)
    train_data_dir: Path | None = None
    reg_data_dir: Path | None = None
    dataset_config: Path | None = None
    resolution: tuple[int, int] = (512, 512)
    train_batch_size: int = Field(1, ge=1)
    caption_extension: str | None = None
    shuffle_caption: bool = False
    keep_tokens: int = Field(0, ge=0)
    keep_tokens_separator: str = ""
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    caption_dropout_rate: float = Field(0.0, ge=0, le=1)
    caption_tag_dropout_rate: float = Field(0.0, ge=0, le=1)
    caption_dropout_every_n_epochs: int = Field(0, ge=0)
    flip_aug: bool = False
    enable_bucket: bool = False
    min_bucket_reso: int = Field(256, ge=64)
    max_bucket_reso: int = Field(1024, ge=64)
    bucket_reso_steps: int = Field(64, ge=8)
    bucket_no_upscale: bool = False
    prior_loss_weight: float = Field(1.0, ge=0)
    cache_latents: bool = False
    cache_latents_to_disk: bool = False
    max_token_length: int | None = None
    clip_skip: int | None = Field(None, ge=1)
    # output
    output_dir: Path = Path("output")
    output_name: str = "last"
    save_model_as: Literal["safetensors", "pt", "ckpt"] = "safetensors"
    save_precision: Literal["float", "fp16", "bf16"] | None = None
    save_every_n_epochs: int | None = Field(None, ge=1)
    save_every_n_steps: int | None = Field(None, ge=1)
    save_state: bool = False
    save_state_on_train_end: bool = False
    resume: Path | None = None
    no_metadata: bool = False
    training_comment: str | None = None
    metadata_title: str | None = None
    metadata_author: str | None = None
    metadata_description: str | None = None
    metadata_license: str | None = None
    metadata_tags: str | None = None
    # optimisation
    learning_rate: float = Field(1e-4, ge=0)
    optimizer_type: str = "AdamW"
    optimizer_args: tuple[str, ...] = ()
    lr_scheduler: str = "constant"
    lr_warmup_steps: float = Field(0, ge=0)
    lr_scheduler_num_cycles: int = Field(1, ge=1)
    lr_scheduler_power: float = Field(1.0, gt=0)
    max_grad_norm: float = Field(1.0, ge=0)
    max_train_steps: int | None = 1600
    max_train_epochs: int | None = None
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int | None = Field(None, ge=0)
    noise_offset: float | None = Field(None, ge=0)
    min_snr_gamma: float | None = Field(None, gt=0)
    min_timestep: int = Field(0, ge=0, le=999)
    max_timestep: int = Field(1000, ge=1, le=1000)
    # samples during training
    sample_prompts: Path | None = None
    sample_every_n_epochs: int | None = Field(None, ge=1)
    sample_every_n_steps: int | None = Field(None, ge=1)
    sample_sampler: str = "ddim"
    sample_at_first: bool = False
    # logging
    logging_dir: Path | None = None
    log_with: Literal["tensorboard", "all", "none"] | None = None
    log_prefix: str | None = None

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: Any) -> tuple[int, int]:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, int | float):
            parts = [str(int(value))]
        else:
            parts = [str(v) for v in value]
        if len(parts) == 1:
            parts *= 2
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{value!r} is not one size or 'width,height'")
        width, height = int(parts[0]), int(parts[1])
        if min(width, height) < 64 or width % 8 or height % 8:
            raise ValueError(f"{value!r}: each side must be >= 64 and a multiple of 8")
        return width, height

    @field_validator("optimizer_args", mode="before")
    @classmethod
    def _optimizer_args(cls, value: Any) -> tuple[str, ...]:
        return string_list(value)

    @field_validator("output_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in {".", ".."}:
            raise ValueError(f"{value!r} must be a file name without folders")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainingOptions:
        check_common_options(self)
        return self

    @property
    def file_suffix(self) -> str:
        return "." + self.save_model_as


class LoraTrainingConfig(TrainingOptions):
    """Every option of a LoRA run (sd-scripts names). See the module docstring for defaults."""

    # network
    network_module: str = NETWORK_MODULE
    network_dim: int = Field(4, ge=1)
    network_alpha: float = Field(1.0, ge=0)
    network_dropout: float | None = Field(None, ge=0, lt=1)
    network_args: tuple[str, ...] = ()
    conv_dim: int | None = Field(None, ge=1)
    conv_alpha: float | None = Field(None, ge=0)
    network_train_unet_only: bool = False
    network_train_text_encoder_only: bool = False
    unet_lr: float | None = Field(None, ge=0)
    text_encoder_lr: float | None = Field(None, ge=0)

    @field_validator("network_args", mode="before")
    @classmethod
    def _network_args(cls, value: Any) -> tuple[str, ...]:
        return string_list(value)

    @model_validator(mode="after")
    def _lora_consistent(self) -> LoraTrainingConfig:
        check_consistency(self)
        return self

    # -- derived values -------------------------------------------------------------------

    @property
    def conv_settings(self) -> tuple[int | None, float | None]:
        """conv_dim / conv_alpha from the flat options or sd-scripts' `network_args`."""
        args = parse_optimizer_args(self.network_args)
        conv_dim = self.conv_dim if self.conv_dim is not None else args.get("conv_dim")
        conv_alpha = self.conv_alpha if self.conv_alpha is not None else args.get("conv_alpha")
        return (
            None if conv_dim is None else int(conv_dim),
            None if conv_alpha is None else float(conv_alpha),
        )

    @property
    def train_unet(self) -> bool:
        return not self.network_train_text_encoder_only

    @property
    def train_text_encoder(self) -> bool:
        return not self.network_train_unet_only

    @property
    def effective_unet_lr(self) -> float:
        return self.learning_rate if self.unet_lr is None else self.unet_lr

    @property
    def effective_text_encoder_lr(self) -> float:
        return self.learning_rate if self.text_encoder_lr is None else self.text_encoder_lr


def check_common_options(config: TrainingOptions) -> None:
    """Conflicts between the shared options (each message names them)."""
    if not (config.max_train_steps or 0) > 0 and not (config.max_train_epochs or 0) > 0:
        raise ValueError("set max_train_steps or max_train_epochs to a number above 0")
    if config.train_data_dir is None and config.dataset_config is None:
        raise ValueError("no training images: set train_data_dir (or dataset_config)")
    if config.lr_scheduler not in SCHEDULERS:
        raise ValueError(
            f"lr_scheduler {config.lr_scheduler!r}: use one of {', '.join(SCHEDULERS)}"
        )
    if config.lr_scheduler == "constant" and config.lr_warmup_steps:
        raise ValueError("lr_warmup_steps needs a scheduler with warmup (constant_with_warmup)")
    if config.min_timestep >= config.max_timestep:
        raise ValueError("min_timestep must be below max_timestep")
    if (config.sample_every_n_epochs or config.sample_every_n_steps or config.sample_at_first) and (
        config.sample_prompts is None
    ):
        raise ValueError("sample_every_n_epochs/steps need sample_prompts (a prompts file)")
    if config.min_bucket_reso > config.max_bucket_reso:
        raise ValueError("min_bucket_reso is larger than max_bucket_reso")
    check_token_length(config.max_token_length)


def check_consistency(config: LoraTrainingConfig) -> None:
    """Conflicts between the LoRA options (each message names them)."""
    if config.network_train_unet_only and config.network_train_text_encoder_only:
        raise ValueError("network_train_unet_only and network_train_text_encoder_only both set")
    if config.network_module != NETWORK_MODULE:
        raise ValueError(
            f"network_module {config.network_module!r} is not supported; use {NETWORK_MODULE}"
        )
    if (
        config.conv_alpha is not None
        and config.conv_dim is None
        and "conv_dim" not in " ".join(config.network_args)
    ):
        raise ValueError("conv_alpha is set but conv_dim is not")
    unknown = [a.partition("=")[0] for a in config.network_args]
    for key in unknown:
        if key not in NETWORK_ARGS:
            raise ValueError(
                f"network_args {key!r} is not supported (only {', '.join(NETWORK_ARGS)})"
            )


def string_list(value: Any) -> tuple[str, ...]:
    """sd-scripts list options: a TOML list, or one string split on spaces."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    return tuple(str(v) for v in value)


def check_environment(
    config: TrainingOptions, device_type: str, *, made_by_the_run: Collection[str] = ()
) -> None:
    """Checks that need to know the machine: packages, fp16 on a CPU, and that the folders
    and files exist (except the options named in `made_by_the_run`)."""
    choose_optimizer(config.optimizer_type, config.optimizer_args)
    if config.mixed_precision == "fp16" and device_type == "cpu":
        raise ConfigError(
            "mixed_precision fp16 needs a GPU; this run is on the CPU",
            hint="use mixed_precision bf16 or no",
        )
    if (
        config.log_with in ("tensorboard", "all")
        and importlib.util.find_spec("tensorboard") is None
    ):
        raise ConfigError(
            f"log_with {config.log_with} needs the tensorboard package",
            hint="pip install tensorboard, or leave log_with unset (CSV logs are always written)",
        )
    for name in ("train_data_dir", "reg_data_dir", "dataset_config", "sample_prompts", "resume"):
        path = getattr(config, name)
        if path is not None and name not in made_by_the_run and not Path(path).exists():
            raise ConfigError(f"{name}: {path} does not exist")
