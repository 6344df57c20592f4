"""Setting a LoRA run up: accelerator, dataset and step plan, base model, adapters' components,
optimiser choice, and the facts a resume must keep. `lora.train_lora` puts them together.

The helpers typed on `TrainingOptions` serve every kohya-style method (DreamBooth uses them too);
the ones typed on `LoraTrainingConfig` are LoRA's own."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedDataParallelKwargs

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.loading import LoadedModel, load_model
from brushwork.training.config import LoraTrainingConfig, TrainingOptions
from brushwork.training.data import (
    DatasetSpec,
    TrainingDataset,
    dreambooth_subsets,
    format_step_plan,
    load_dataset_config,
    step_plan,
)
from brushwork.training.engine import LoopSettings, SchedulerFactory
from brushwork.training.objective import ObjectiveSettings
from brushwork.training.optim import OptimizerChoice, build_scheduler, choose_optimizer
from brushwork.training.text import CaptionEncoder, check_token_length

logger = logging.getLogger(__name__)

_WEIGHT_PRECISION = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}


def make_accelerator(
    config: TrainingOptions, *, cpu: bool = False, find_unused_parameters: bool | None = None
) -> Accelerator:
    """An Accelerator for `config` (under `accelerate launch` it picks up the launch setup).
    Unused-parameter detection is on when some trained layers get no gradient (for a LoRA:
    clip_skip > 1 leaves the text encoder's last layers unused); a method may say so itself."""
    find_unused = find_unused_parameters
    if find_unused is None:
        trains_text = isinstance(config, LoraTrainingConfig) and config.train_text_encoder
        find_unused = trains_text and (config.clip_skip or 1) > 1
    # accelerate keeps its settings in process-wide singletons; a second run in one process
    # (a job server, tests) with another mixed precision must start from fresh ones. The
    # distributed set-up (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision=config.mixed_precision,
        cpu=cpu,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
    )


def dataset_spec(config: TrainingOptions) -> DatasetSpec | tuple[DatasetSpec, ...]:
    if config.dataset_config is not None:
        if config.train_data_dir is not None:
            logger.warning("dataset_config is set: train_data_dir/reg_data_dir are ignored")
        return tuple(load_dataset_config(config.dataset_config).datasets)
    assert config.train_data_dir is not None  # checked by the config
    subsets = dreambooth_subsets(
        config.train_data_dir,
        config.reg_data_dir,
        caption_extension=config.caption_extension,
        shuffle_caption=config.shuffle_caption,
        keep_tokens=config.keep_tokens,
        keep_tokens_separator=config.keep_tokens_separator,
        caption_dropout_rate=config.caption_dropout_rate,
        caption_tag_dropout_rate=config.caption_tag_dropout_rate,
        caption_dropout_every_n_epochs=config.caption_dropout_every_n_epochs,
        flip_aug=config.flip_aug,
        caption_prefix=config.caption_prefix,
        caption_suffix=config.caption_suffix,
    )
    return DatasetSpec(
        subsets,
        resolution=config.resolution,
        batch_size=config.train_batch_size,
        enable_bucket=config.enable_bucket,
        min_bucket_reso=config.min_bucket_reso,
        max_bucket_reso=config.max_bucket_reso,
        bucket_reso_steps=config.bucket_reso_steps,
        bucket_no_upscale=config.bucket_no_upscale,
        prior_loss_weight=config.prior_loss_weight,
    )


def divergence_hints(config: LoraTrainingConfig) -> tuple[str, ...]:
    hints = []
    if config.mixed_precision == "fp16":
        hints.append("use mixed_precision bf16 (fp16 overflows easily)")
    if config.train_unet:
        hints.append(f"lower unet_lr (now {config.effective_unet_lr:g})")
    if config.train_text_encoder:
        hints.append(
            f"lower text_encoder_lr (now {config.effective_text_encoder_lr:g}) or train the "
            "UNet only (network_train_unet_only)"
        )
    if config.max_grad_norm == 0:
        hints.append("set max_grad_norm to 1.0")
    if not config.no_half_vae and config.mixed_precision != "no":
        hints.append("set no_half_vae if the VAE produces NaNs")
    return tuple(hints)


def load_base_model(
    config: TrainingOptions, base: Path, device: torch.device, *, trained_weights: bool = False
) -> LoadedModel:
    """The base model, frozen. Its weights are in the mixed-precision dtype (an adapter's base
    is never trained), or in fp32 when `trained_weights` (a full fine-tune trains them; the
    mixed precision is then autocast's)."""
    vae_precision = "fp32" if config.no_half_vae or config.mixed_precision == "no" else "auto"
    model = load_model(
        base,
        device=device,
        precision="fp32" if trained_weights else _WEIGHT_PRECISION[config.mixed_precision],
        vae=config.vae or "none",
        vae_precision=vae_precision,
    )
    if model.family is BaseFamily.SDXL:
        raise ConfigError(f"{base.name} is an SDXL model; SDXL training is not supported yet")
    if config.v2 != (model.family is BaseFamily.SD2):
        logger.warning(
            "v2 is %s but %s is %s; the file decides", config.v2, base.name, model.family
        )
    for module in model.modules().values():
        module.requires_grad_(False)
    return model


def caption_encoder(model: LoadedModel, config: TrainingOptions) -> CaptionEncoder:
    encoder = model.text_encoders["text_encoder"]
    return CaptionEncoder(
        model.tokenizers["text_encoder"],
        encoder,
        final_layer_norm=encoder.get_submodule("final_layer_norm"),
        clip_skip=config.clip_skip or 1,
        max_token_length=config.max_token_length,
    )


def trained_components(
    model: LoadedModel, config: LoraTrainingConfig
) -> dict[str, torch.nn.Module]:
    components: dict[str, torch.nn.Module] = {}
    if config.train_unet:
        components["unet"] = model.unet
        if config.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
    if config.train_text_encoder:
        encoder = model.text_encoders["text_encoder"]
        components["text_encoder"] = encoder
        if config.gradient_checkpointing:
            encoder.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    return components


def optimizer_choice(config: TrainingOptions) -> tuple[OptimizerChoice, str]:
    choice = choose_optimizer(config.optimizer_type, config.optimizer_args)
    scheduler = config.lr_scheduler
    if choice.relative_step and scheduler != "adafactor":
        logger.warning("Adafactor with relative_step sets its own lr: lr_scheduler is adafactor")
        scheduler = "adafactor"
    return choice, scheduler


@dataclass(frozen=True)
class PreparedData:
    dataset: TrainingDataset
    plan_text: str
    total_steps: int
    epochs: int
    facts: dict[str, Any]


def prepare_data(config: TrainingOptions, accelerator: Accelerator, seed: int) -> PreparedData:
    length = check_token_length(config.max_token_length)
    dataset = TrainingDataset(dataset_spec(config), seed=seed, tokenizer_max_length=length)
    plan = step_plan(
        dataset,
        max_train_epochs=config.max_train_epochs,
        max_train_steps=config.max_train_steps,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_processes=accelerator.num_processes,
    )
    facts = {
        "num_train_images": plan.num_train_images,
        "num_reg_images": plan.num_reg_images,
        "batches_per_epoch": plan.batches_per_epoch,
        "epochs": plan.epochs,
        "total_steps": plan.total_steps,
        "dataset_dirs": dataset.dataset_dirs(),
        "reg_dataset_dirs": dataset.reg_dataset_dirs(),
        "tag_frequency": dataset.tag_frequency(),
        "bucket_info": dataset.bucket_info() if config.enable_bucket else None,
    }
    return PreparedData(dataset, format_step_plan(plan), plan.total_steps, plan.epochs, facts)


def cache_latents(
    config: TrainingOptions, data: PreparedData, model: LoadedModel, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pixels = images.to(model.device, model.vae_dtype)
            sampled: torch.Tensor = model.vae.encode(pixels).latent_dist.sample(generator=generator)
        return sampled.float().cpu()  # unscaled, as kohya caches them

    data.dataset.cache_latents(
        encode,
        to_disk=config.cache_latents_to_disk,
        encoder_name=model.vae_source,
        downscale=vae_downscale(model),
    )


def vae_downscale(model: LoadedModel) -> int:
    """How many times smaller the VAE's latents are than the pictures (8 for every SD VAE)."""
    return int(2 ** (len(model.vae.config.block_out_channels) - 1))


def resume_fingerprint(
    config: LoraTrainingConfig, total_steps: int, processes: int
) -> dict[str, Any]:
    conv_dim, conv_alpha = config.conv_settings
    return {
        "seed": config.seed,
        "train_batch_size": config.train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_processes": processes,
        "max_train_steps": total_steps,
        "network_dim": config.network_dim,
        "network_alpha": config.network_alpha,
        "conv_dim": conv_dim,
        "conv_alpha": conv_alpha,
        "train_unet": config.train_unet,
        "train_text_encoder": config.train_text_encoder,
        "optimizer_type": config.optimizer_type.lower(),
        "lr_scheduler": config.lr_scheduler,
    }


def tensorboard_dir(config: TrainingOptions) -> Path | None:
    """Where TensorBoard logs go: with `log_with` tensorboard/all, or unset when the package
    is installed (CSV logs are always written); None for `log_with = "none"`."""
    wanted = config.log_with in ("tensorboard", "all")
    if config.log_with == "none" or not (wanted or importlib.util.find_spec("tensorboard")):
        return None
    return (config.logging_dir or config.output_dir / "logs") / config.output_name


def objective_settings(config: TrainingOptions, model: LoadedModel) -> ObjectiveSettings:
    """The denoising objective of a run: v-prediction when asked or when the model is one."""
    v_prediction = config.v_parameterization or model.prediction_type == "v_prediction"
    return ObjectiveSettings(
        prediction_type="v_prediction" if v_prediction else "epsilon",
        noise_offset=config.noise_offset or 0.0,
        min_snr_gamma=config.min_snr_gamma,
        min_timestep=config.min_timestep,
        max_timestep=config.max_timestep,
    )


def scheduler_factory(
    config: TrainingOptions, scheduler_name: str, warmup: int, processes: int
) -> SchedulerFactory:
    """The engine's lr-schedule factory (warmup counted per process, as accelerate steps it)."""

    def factory(optimizer: torch.optim.Optimizer, total: int) -> Any:
        return build_scheduler(
            scheduler_name,
            optimizer,
            total_steps=total,
            warmup=warmup * processes,
            num_cycles=config.lr_scheduler_num_cycles,
            power=config.lr_scheduler_power,
            initial_lr=config.learning_rate,
        )

    return factory


def loop_settings(
    config: TrainingOptions,
    data: PreparedData,
    *,
    fingerprint: dict[str, Any],
    hints: tuple[str, ...],
) -> LoopSettings:
    """The engine's settings of a kohya-style run (saves, samples, resume, logs)."""
    return LoopSettings(
        output_dir=config.output_dir,
        output_name=config.output_name,
        file_suffix=config.file_suffix,
        total_steps=data.total_steps,
        total_epochs=data.epochs,
        seed=config.seed or 0,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm,
        save_every_n_epochs=config.save_every_n_epochs,
        save_every_n_steps=config.save_every_n_steps,
        save_state=config.save_state,
        save_state_on_train_end=config.save_state_on_train_end,
        sample_every_n_epochs=config.sample_every_n_epochs,
        sample_every_n_steps=config.sample_every_n_steps,
        sample_at_first=config.sample_at_first,
        resume=config.resume,
        tensorboard_dir=tensorboard_dir(config),
        fingerprint=fingerprint,
        divergence_hints=hints,
    )
