"""DreamBooth (sd-scripts' `train_db.py`): a full fine-tune of a checkpoint on instance images
with a rare token, with prior preservation from class images, saved as A1111 checkpoints.

Setup order (every check before heavy work): options and environment -> class images (generated
with the base model when `num_class_images` asks for more than `reg_data_dir` has) -> dataset
and step plan -> base model (its UNet and text encoder in fp32, since they train; the VAE frozen)
-> `finetune.FullModelMethod` -> the engine. Files: `<output_name>.safetensors` (or `.ckpt`),
`<output_name>-<epoch>` every `save_every_n_epochs`, `<output_name>-step<step>` every
`save_every_n_steps`, in `save_precision`, each with modelspec and `ss_*` metadata; they load
in A1111, diffusers' `from_single_file` and `brushwork.loading.load_model`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from brushwork.core import hashing
from brushwork.core.arch import family_facts
from brushwork.core.kinds import BaseFamily
from brushwork.loading import LoadedModel
from brushwork.training.config import check_environment
from brushwork.training.config_file import write_resolved_config
from brushwork.training.dreambooth_config import DreamBoothTrainingConfig
from brushwork.training.dreambooth_data import (
    ClassImageProgress,
    MakeClassImages,
    ensure_class_images,
)
from brushwork.training.engine import Hooks, SaveInfo, Trainer, TrainingResult
from brushwork.training.finetune import FullModelMethod
from brushwork.training.lora_setup import (
    PreparedData,
    cache_latents,
    caption_encoder,
    load_base_model,
    loop_settings,
    make_accelerator,
    objective_settings,
    optimizer_choice,
    prepare_data,
    scheduler_factory,
)
from brushwork.training.optim import warmup_steps
from brushwork.training.samples import Preview, read_prompt_file

logger = logging.getLogger(__name__)

_SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DreamBoothRunResult:
    result: TrainingResult
    config_file: Path
    plan_text: str
    class_images: tuple[Path, ...]  # generated before training
    warnings: tuple[str, ...]


def dreambooth_accelerator(config: DreamBoothTrainingConfig) -> Accelerator:
    """An Accelerator for a DreamBooth run: unused-parameter detection when the text encoder's
    last layers are skipped (clip skip) or it stops training part-way."""
    partly_unused = config.trains_text_encoder and (
        (config.clip_skip or 1) > 1 or config.text_encoder_steps is not None
    )
    return make_accelerator(config, find_unused_parameters=partly_unused)


def train_dreambooth(
    config: DreamBoothTrainingConfig,
    base_model: Path,
    *,
    accelerator: Accelerator | None = None,
    make_class_images: MakeClassImages | None = None,
    class_image_progress: ClassImageProgress | None = None,
    preview_factory: Callable[[LoadedModel], Preview | None] | None = None,
    hooks: Hooks | None = None,
    warnings: tuple[str, ...] = (),
) -> DreamBoothRunResult:
    """Fine-tune the checkpoint `base_model` as `config` says. `make_class_images(prompt,
    count, size, seed)` generates missing class images first (see `dreambooth_data`)."""
    accelerator = accelerator or dreambooth_accelerator(config)
    check_environment(
        config,
        accelerator.device.type,
        made_by_the_run=("reg_data_dir",) if config.num_class_images else (),
    )
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    config = config.model_copy(update={"seed": seed})
    prompts = None
    if config.sample_prompts is not None:
        prompts = read_prompt_file(config.sample_prompts, sampler=config.sample_sampler)
    generated: list[Path] = []
    if accelerator.is_main_process:
        generated = ensure_class_images(config, make_class_images, progress=class_image_progress)
    accelerator.wait_for_everyone()
    set_seed(seed)
    data = prepare_data(config, accelerator, seed)
    config_file = config.output_dir / f"{config.output_name}-config.toml"
    if accelerator.is_main_process:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        write_resolved_config(config, config_file)
        logger.info("%s", data.plan_text)
    if data.facts["num_reg_images"] == 0 and config.reg_data_dir is not None:
        logger.warning(
            "reg_data_dir %s holds no class images: no prior preservation", config.reg_data_dir
        )
    model = load_base_model(config, base_model, accelerator.device, trained_weights=True)
    if config.cache_latents or config.cache_latents_to_disk:
        with accelerator.main_process_first():
            cache_latents(config, data, model, seed)
    hooks = hooks or Hooks()
    trainer = _trainer(config, data, model, base_model, accelerator, hooks)
    if prompts is not None:
        hooks.preview_requests = prompts.requests
        if hooks.preview is None and preview_factory is not None:
            hooks.preview = preview_factory(model)
        warnings += prompts.warnings
    for message in warnings:
        logger.warning("%s", message)
    result = trainer.run()
    return DreamBoothRunResult(
        result,
        config_file,
        data.plan_text,
        tuple(generated),
        warnings + tuple(data.dataset.warnings),
    )


def _trainer(
    config: DreamBoothTrainingConfig,
    data: PreparedData,
    model: LoadedModel,
    base_model: Path,
    accelerator: Accelerator,
    hooks: Hooks,
) -> Trainer:
    rates = {"unet": config.learning_rate}
    if config.trains_text_encoder:
        rates["text_encoder"] = config.effective_text_encoder_lr
    choice, scheduler_name = optimizer_choice(config)
    run_metadata = run_facts_metadata(config, data, model, base_model) | {
        "ss_optimizer": choice.description
    }
    method = FullModelMethod(
        model,
        caption_encoder(model, config),
        objective_settings(config, model),
        learning_rates=rates,
        text_encoder_steps=config.text_encoder_steps,
        save_dtype=_SAVE_DTYPES.get(config.save_precision or ""),
        gradient_checkpointing=config.gradient_checkpointing,
        metadata=lambda info: save_metadata(run_metadata, info, no_metadata=config.no_metadata),
    )
    warmup = warmup_steps(config.lr_warmup_steps, data.total_steps)
    processes = accelerator.num_processes
    schedule = scheduler_factory(config, scheduler_name, warmup, processes)
    settings = loop_settings(
        config,
        data,
        fingerprint=resume_fingerprint(config, data.total_steps, processes),
        hints=divergence_hints(config),
    )
    return Trainer(method, data.dataset, settings, accelerator, choice, schedule, hooks)


def resume_fingerprint(
    config: DreamBoothTrainingConfig, total_steps: int, processes: int
) -> dict[str, Any]:
    """What a resumed run must share with the run that saved the state."""
    return {
        "method": "dreambooth",
        "seed": config.seed,
        "train_batch_size": config.train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_processes": processes,
        "max_train_steps": total_steps,
        "train_text_encoder": config.trains_text_encoder,
        "text_encoder_steps": config.text_encoder_steps,
        "optimizer_type": config.optimizer_type.lower(),
        "lr_scheduler": config.lr_scheduler,
    }


def divergence_hints(config: DreamBoothTrainingConfig) -> tuple[str, ...]:
    hints = []
    if config.mixed_precision == "fp16":
        hints.append("use mixed_precision bf16 (fp16 overflows easily)")
    hints.append(f"lower learning_rate (now {config.learning_rate:g})")
    if config.trains_text_encoder:
        hints.append(
            f"lower learning_rate_te (now {config.effective_text_encoder_lr:g}) or train the "
            "text encoder for fewer steps (stop_text_encoder_training)"
        )
    if config.max_grad_norm == 0:
        hints.append("set max_grad_norm to 1.0")
    return tuple(hints)


# ---- metadata ----------------------------------------------------------------------------------


def run_facts_metadata(
    config: DreamBoothTrainingConfig, data: PreparedData, model: LoadedModel, base_model: Path
) -> dict[str, str]:
    """The metadata fixed for the whole run: modelspec (as sd-scripts writes into a checkpoint)
    and the `ss_*` facts of a DreamBooth run."""
    width, height = config.resolution
    facts = family_facts(model.family)
    v_prediction = objective_settings(config, model).prediction_type == "v_prediction"
    architecture = facts.modelspec_architecture
    if v_prediction and model.family is BaseFamily.SD2:
        architecture = "stable-diffusion-v2-768-v"
    values: dict[str, Any] = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture,
        "modelspec.implementation": "diffusers",
        "modelspec.title": config.metadata_title or config.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
        "modelspec.author": config.metadata_author,
        "modelspec.description": config.metadata_description,
        "modelspec.license": config.metadata_license,
        "modelspec.tags": config.metadata_tags,
        "ss_training_method": "dreambooth",
        "ss_output_name": config.output_name,
        "ss_learning_rate": config.learning_rate,
        "ss_text_encoder_lr": config.effective_text_encoder_lr
        if config.trains_text_encoder
        else None,
        "ss_stop_text_encoder_training": config.stop_text_encoder_training,
        "ss_num_train_images": data.facts["num_train_images"],
        "ss_num_reg_images": data.facts["num_reg_images"],
        "ss_prior_loss_weight": config.prior_loss_weight,
        "ss_max_train_steps": data.total_steps,
        "ss_num_epochs": data.epochs,
        "ss_resolution": f"({width}, {height})",
        "ss_mixed_precision": config.mixed_precision,
        "ss_seed": config.seed,
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_training_comment": config.training_comment,
    }
    if base_model.is_file():
        values["ss_sd_model_name"] = base_model.name
        values["ss_new_sd_model_hash"] = hashing.sha256_file(base_model)
    return {k: str(v) for k, v in values.items() if v is not None}


def save_metadata(run: dict[str, str], info: SaveInfo, *, no_metadata: bool) -> dict[str, str]:
    """One save's metadata: the run's, its epoch and step, and the date."""
    date = datetime.now().replace(microsecond=0).isoformat()
    spec = {k: v for k, v in run.items() if k.startswith("modelspec.")} | {"modelspec.date": date}
    if no_metadata:
        return spec
    return run | spec | {"ss_epoch": str(info.epoch), "ss_steps": str(info.step)}
