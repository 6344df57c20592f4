"""Training a small Stable-Diffusion-family model from scratch, from a config of its components.

This is how the built-in demo model is made, and it works for any SD1-family size a config
describes (a `model_config` JSON: `{"family": "sd1", "unet": {...}, "vae": {...},
"text_encoder": {...}}` in diffusers/transformers config form; the CLIP tokenizer is the shipped
one). Two stages on the shared engine:

1. **VAE** (unless `vae` names a trained one): an AutoencoderKL learns to reconstruct the
   pictures (L1 + L2 in pixel space + a small KL term, as the LDM autoencoders without their
   perceptual/GAN terms, which a few thousand flat-coloured pictures do not need). Then its
   latent scale is folded into its weights so that `latents · scaling_factor` (the SD1 factor,
   0.18215, which A1111 and diffusers assume) has unit variance: the encoder's mean is scaled by
   k (`quant_conv` mean rows), its log-variance shifted by 2·ln k, and `post_quant_conv` divides
   by k, so the decoder sees the same thing and the file stays a standard SD1 checkpoint.
2. **Diffusion**: fresh UNet and text encoder, the trained VAE, written as an A1111 checkpoint
   (`<name>-init.safetensors`, the "created model"), loaded back through our loader and fully
   trained (`finetune.FullModelMethod`) on the cached latents with caption dropout (so
   classifier-free guidance works) and an EMA of the UNet, which is what gets saved.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from diffusers import AutoencoderKL, UNet2DConditionModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from transformers import CLIPTextConfig, CLIPTextModel

from brushwork.core.arch import family_facts
from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.architecture import architecture_from_configs
from brushwork.formats.checkpoint import components_to_checkpoint, write_checkpoint
from brushwork.formats.vae import read_vae, write_vae
from brushwork.loading import LoadedModel, load_model
from brushwork.training.engine import Hooks, LoopSettings, SaveInfo, Trainer, TrainingResult
from brushwork.training.finetune import FullModelMethod
from brushwork.training.objective import ObjectiveSettings
from brushwork.training.optim import SCHEDULERS, ParamGroup, build_scheduler, choose_optimizer
from brushwork.training.scratch_data import InMemoryImageSet
from brushwork.training.text import CaptionEncoder

logger = logging.getLogger(__name__)

_SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ScratchConfig(BaseModel):
    """A from-scratch run. Keys follow sd-scripts where it has the option."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_config_file: Path = Field(alias="model_config")
    train_data_dir: Path
    output_dir: Path
    output_name: str = "model"
    resolution: int = Field(64, ge=8)
    seed: int = 0
    caption_dropout_rate: float = Field(0.1, ge=0, lt=1)
    # continue a model made here (its UNet, text encoder and VAE) instead of starting fresh
    init_model: Path | None = None
    # stage 1: the VAE
    vae: Path | None = None
    vae_steps: int = Field(600, ge=1)
    vae_batch_size: int = Field(16, ge=1)
    vae_learning_rate: float = Field(1e-3, gt=0)
    vae_kl_weight: float = Field(1e-6, ge=0)
    # L1 between the decoded and the true pictures' neighbour differences: sharp edges
    vae_edge_weight: float = Field(0.0, ge=0)
    vae_lr_scheduler: str = "constant"
    vae_lr_warmup_steps: int = Field(0, ge=0)
    # stage 2: UNet + text encoder
    max_train_steps: int = Field(3000, ge=1)
    train_batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    learning_rate_te: float | None = Field(None, gt=0)
    train_text_encoder: bool = True
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = Field(200, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    # Min-SNR loss weighting (Hang et al. 2023; sd-scripts' `--min_snr_gamma`): None = plain MSE
    min_snr_gamma: float | None = Field(None, gt=0)
    ema_decay: float | None = Field(0.999, gt=0, lt=1)
    save_every_n_steps: int | None = Field(None, ge=1)
    save_precision: Literal["float", "fp16", "bf16"] = "fp16"

    @field_validator("lr_scheduler", "vae_lr_scheduler")
    @classmethod
    def _known_scheduler(cls, name: str) -> str:
        if name not in SCHEDULERS:
            raise ValueError(f"{name!r} is not a scheduler; use one of {', '.join(SCHEDULERS)}")
        return name

    @property
    def text_encoder_lr(self) -> float:
        return self.learning_rate_te or self.learning_rate


def read_scratch_config(path: Path, overrides: dict[str, Any] | None = None) -> ScratchConfig:
    """A `ScratchConfig` from a TOML file (tables flattened, as sd-scripts does); relative paths
    are taken from the file's folder."""
    import tomllib

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config {path}: {exc}") from exc
    flat: dict[str, Any] = {}
    for key, value in document.items():
        flat |= value if isinstance(value, dict) else {key: value}
    flat |= overrides or {}
    for key in ("model_config", "train_data_dir", "output_dir", "vae", "init_model"):
        if isinstance(flat.get(key), str) and not Path(flat[key]).is_absolute():
            flat[key] = str(path.parent / flat[key])
    return scratch_config(flat, source=path)


def scratch_config(values: dict[str, Any], *, source: Path | None = None) -> ScratchConfig:
    try:
        return ScratchConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(
            f"{source or 'config'}: {where}: {first['msg']}",
            hint="see `brushwork train scratch --help` for the keys",
        ) from exc


@dataclass(frozen=True)
class ModelConfigs:
    family: BaseFamily
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]


def read_model_configs(path: Path) -> ModelConfigs:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        family = BaseFamily(document.get("family", "sd1"))
        return ModelConfigs(family, document["unet"], document["vae"], document["text_encoder"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"cannot read the model config {path}: {exc}",
            hint='it is JSON with "family", "unet", "vae" and "text_encoder" objects',
        ) from exc


def _accelerator() -> Accelerator:
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision="no")


def _run(
    method: Any,
    data: InMemoryImageSet,
    settings: LoopSettings,
    learning_rate: float,
    warmup: int,
    scheduler: str,
    hooks: Hooks | None,
) -> TrainingResult:
    def scheduler_factory(optimizer: torch.optim.Optimizer, total: int) -> Any:
        return build_scheduler(scheduler, optimizer, total_steps=total, warmup=warmup)

    choice = choose_optimizer("AdamW", ["weight_decay=0.0"])
    trainer = Trainer(method, data, settings, _accelerator(), choice, scheduler_factory, hooks)
    return trainer.run()


# ---- stage 1: the VAE ----------------------------------------------------------------------


class VaeMethod:
    """Trains an AutoencoderKL to reconstruct pictures (an `engine.TrainingMethod`)."""

    def __init__(
        self, vae: AutoencoderKL, learning_rate: float, kl_weight: float, edge_weight: float = 0.0
    ) -> None:
        self.vae = vae
        self._vae: torch.nn.Module = vae
        self.learning_rate = learning_rate
        self.kl_weight = kl_weight
        self.edge_weight = edge_weight

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae}

    def use_prepared(self, prepared: dict[str, torch.nn.Module]) -> None:
        self._vae = prepared["vae"]

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("vae", tuple(self.vae.parameters()), self.learning_rate)]

    def set_training(self, training: bool) -> None:
        self.vae.train(training)

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        pixels = batch.images
        posterior = self.vae.encode(pixels).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        latents = posterior.mean + posterior.std * noise
        decoded = self.vae.decode(latents).sample
        reconstruction: torch.Tensor = (decoded - pixels).abs().mean() + (decoded - pixels).pow(
            2
        ).mean()
        kl: torch.Tensor = posterior.kl().mean() / pixels[0].numel()
        loss = reconstruction + self.kl_weight * kl
        if self.edge_weight:
            loss = loss + self.edge_weight * edge_loss(decoded, pixels)
        return loss

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return dict(self.vae.state_dict())

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.vae.load_state_dict(tensors)

    def save(self, path: Path, info: SaveInfo) -> None:
        write_vae(path, self.vae.state_dict(), dict(self.vae.config), overwrite=True)


def edge_loss(decoded: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical neighbour differences of two picture
    batches: zero when every edge is where and as steep as in `pixels`, large for a blur."""
    loss: torch.Tensor = (decoded.diff(dim=-1) - pixels.diff(dim=-1)).abs().mean() + (
        decoded.diff(dim=-2) - pixels.diff(dim=-2)
    ).abs().mean()
    return loss


@torch.no_grad()
def latent_std(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 64) -> float:
    """The standard deviation of the encoder's mean latents over `pixels`."""
    means = [
        vae.encode(pixels[i : i + batch_size]).latent_dist.mean
        for i in range(0, len(pixels), batch_size)
    ]
    return float(torch.cat(means).float().std())


@torch.no_grad()
def fold_latent_scale(vae: AutoencoderKL, factor: float) -> None:
    """Make the VAE's latents `factor` times larger without changing what it decodes."""
    if factor <= 0 or not math.isfinite(factor):
        raise ValueError(f"latent scale factor {factor} must be a positive number")
    channels = int(vae.config.latent_channels)
    quant, post = vae.quant_conv, vae.post_quant_conv
    if quant is None or post is None:
        raise ConfigError("this VAE has no quant_conv/post_quant_conv to fold its scale into")
    quant.weight[:channels] *= factor
    quant.bias[:channels] *= factor
    quant.bias[channels:] += 2.0 * math.log(factor)
    post.weight[:, :channels] /= factor


def train_vae(
    config: ScratchConfig, configs: ModelConfigs, data: InMemoryImageSet, hooks: Hooks | None
) -> AutoencoderKL:
    torch.manual_seed(config.seed)
    vae = AutoencoderKL.from_config(configs.vae)
    settings = LoopSettings(
        output_dir=config.output_dir,
        output_name=f"{config.output_name}-vae",
        file_suffix=".safetensors",
        total_steps=config.vae_steps,
        total_epochs=10**9,
        seed=config.seed,
        max_grad_norm=config.max_grad_norm,
    )
    method = VaeMethod(vae, config.vae_learning_rate, config.vae_kl_weight, config.vae_edge_weight)
    _run(
        method,
        data,
        settings,
        config.vae_learning_rate,
        config.vae_lr_warmup_steps,
        config.vae_lr_scheduler,
        hooks,
    )
    vae.eval()
    scale = family_facts(configs.family).vae_scaling_factor
    fold_latent_scale(vae, 1.0 / (scale * latent_std(vae, data.pixels)))
    logger.info("VAE trained; latent std after folding: %.3f", latent_std(vae, data.pixels))
    # the file on disk is the VAE the model uses (scale folded), so `vae = ...` can reuse it
    write_vae(
        config.output_dir / f"{settings.output_name}.safetensors",
        vae.state_dict(),
        dict(vae.config),
        overwrite=True,
    )
    return vae


# ---- stage 2: UNet + text encoder ----------------------------------------------------------


def create_model_file(configs: ModelConfigs, vae: AutoencoderKL, path: Path, *, seed: int) -> Path:
    """Fresh UNet and text encoder (seeded) with `vae`, written as an A1111 checkpoint."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(configs.unet)
    text_config = {k: v for k, v in configs.text_encoder.items() if k != "architectures"}
    encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    architecture = architecture_from_configs(
        configs.family, unet.config, vae.config, {"text_encoder": encoder.config}
    )
    checkpoint = components_to_checkpoint(
        unet.state_dict(),
        vae.state_dict(),
        {"text_encoder": encoder.state_dict()},
        architecture,
        metadata={"brushwork.created": "from scratch"},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(path, checkpoint, overwrite=True)
    return path


def _caption_encoder(model: LoadedModel) -> CaptionEncoder:
    encoder = model.text_encoders["text_encoder"]
    return CaptionEncoder(
        model.tokenizers["text_encoder"],
        encoder,
        final_layer_norm=encoder.get_submodule("final_layer_norm"),
    )


def train_diffusion(
    config: ScratchConfig, model_file: Path, data: InMemoryImageSet, hooks: Hooks | None
) -> TrainingResult:
    model = load_model(model_file, device="cpu", precision="fp32", vae="none")
    data.batch_size = config.train_batch_size
    data.cache_latents(lambda pixels: model.vae.encode(pixels).latent_dist.mean.detach())
    rates = {"unet": config.learning_rate}
    if config.train_text_encoder:
        rates["text_encoder"] = config.text_encoder_lr
    run_facts = {"brushwork.training": training_record(config)}
    method = FullModelMethod(
        model,
        _caption_encoder(model),
        ObjectiveSettings(min_snr_gamma=config.min_snr_gamma),
        learning_rates=rates,
        save_dtype=_SAVE_DTYPES[config.save_precision],
        metadata=lambda info: run_facts | {"brushwork.step": str(info.step)},
        ema_decay=config.ema_decay,
    )
    settings = LoopSettings(
        output_dir=config.output_dir,
        output_name=config.output_name,
        file_suffix=".safetensors",
        total_steps=config.max_train_steps,
        total_epochs=10**9,
        seed=config.seed,
        max_grad_norm=config.max_grad_norm,
        save_every_n_steps=config.save_every_n_steps,
    )
    return _run(
        method,
        data,
        settings,
        config.learning_rate,
        config.lr_warmup_steps,
        config.lr_scheduler,
        hooks,
    )


def training_record(config: ScratchConfig, **extra: Any) -> str:
    """What the model file says about how it was made (JSON): the config, with paths reduced
    to their names so that no machine's folders end up in a shared file."""
    values = config.model_dump(mode="json", by_alias=True)
    for key in ("model_config", "train_data_dir", "output_dir", "vae", "init_model"):
        if values.get(key):
            values[key] = Path(values[key]).name
    return json.dumps({"method": "from scratch", "config": values} | extra)


@dataclass(frozen=True)
class ScratchResult:
    model_file: Path
    init_file: Path
    vae_steps: int
    steps: int
    images: int
    result: TrainingResult


def train_from_scratch(
    config: ScratchConfig,
    *,
    vae_hooks: Hooks | None = None,
    hooks: Hooks | None = None,
) -> ScratchResult:
    """Both stages; returns the trained checkpoint's path (`<output_dir>/<output_name>.safetensors`)."""
    configs = read_model_configs(config.model_config_file)
    if configs.family is not BaseFamily.SD1:
        raise ConfigError(
            f"training from scratch supports SD1-family configs, not {configs.family}"
        )
    data = InMemoryImageSet(
        config.train_data_dir,
        config.resolution,
        config.vae_batch_size,
        seed=config.seed,
        caption_dropout_rate=0.0,
    )
    logger.info("%d pictures from %s", len(data), config.train_data_dir)
    data.caption_dropout_rate = config.caption_dropout_rate
    if config.init_model is not None:  # continue: no VAE stage, no fresh modules
        result = train_diffusion(config, config.init_model, data, hooks)
        return ScratchResult(
            result.final_file, config.init_model, 0, result.steps, len(data), result
        )
    if config.vae is not None:
        vae = load_model_vae(config.vae, configs)
        vae_steps = 0
    else:
        vae = train_vae(config, configs, data, vae_hooks)
        vae_steps = config.vae_steps
    init_file = config.output_dir / f"{config.output_name}-init.safetensors"
    create_model_file(configs, vae, init_file, seed=config.seed)
    result = train_diffusion(config, init_file, data, hooks)
    return ScratchResult(result.final_file, init_file, vae_steps, result.steps, len(data), result)


def load_model_vae(path: Path, configs: ModelConfigs) -> AutoencoderKL:
    """A trained VAE file (A1111 standalone layout) for stage 2; it must fit the config."""
    vae = AutoencoderKL.from_config(configs.vae)
    try:
        vae.load_state_dict(read_vae(path, family=configs.family).state_dict)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: this VAE does not fit the model config: {exc}") from exc
    return vae.eval()
