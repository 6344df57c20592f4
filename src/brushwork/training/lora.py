"""LoRA training, the first method of the shared engine: the method object (what is trained,
the loss of a batch, how a file is written) and `train_lora`, which sets a run up.

Setup order (all checks before any heavy work): options and environment -> dataset and step plan
-> base model -> adapters -> engine. The base model is loaded in the mixed-precision dtype (its
weights are frozen); the adapters train in fp32.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from brushwork.formats.lora import write_lora
from brushwork.loading import LoadedModel
from brushwork.training.batch_loss import denoising_batch_loss
from brushwork.training.config import LoraTrainingConfig, check_environment
from brushwork.training.config_file import write_resolved_config
from brushwork.training.engine import Hooks, SaveInfo, Trainer, TrainingResult
from brushwork.training.lora_network import LoraAdapters, NetworkShape
from brushwork.training.lora_setup import (
    PreparedData,
    cache_latents,
    caption_encoder,
    divergence_hints,
    load_base_model,
    loop_settings,
    make_accelerator,
    objective_settings,
    optimizer_choice,
    prepare_data,
    resume_fingerprint,
    scheduler_factory,
    trained_components,
)
from brushwork.training.metadata import RunFacts, save_metadata, training_metadata
from brushwork.training.objective import ObjectiveSettings
from brushwork.training.optim import ParamGroup, warmup_steps
from brushwork.training.samples import Preview, PromptFile, read_prompt_file
from brushwork.training.text import CaptionEncoder, check_token_length

logger = logging.getLogger(__name__)

_SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class LoraMethod:
    """LoRA on the UNet and/or text encoder of a loaded model (see `engine.TrainingMethod`)."""

    def __init__(
        self,
        model: LoadedModel,
        adapters: LoraAdapters,
        shape: NetworkShape,
        captions: CaptionEncoder,
        objective: ObjectiveSettings,
        *,
        learning_rates: dict[str, float],
        save_dtype: torch.dtype | None,
        metadata: Callable[[SaveInfo], dict[str, str]],
    ) -> None:
        self.model = model
        self.adapters = adapters
        self.shape = shape
        self.captions = captions
        self.objective = objective
        self.learning_rates = learning_rates
        self.save_dtype = save_dtype
        self.metadata = metadata
        self._unet: torch.nn.Module = model.unet
        self.alphas_cumprod = model.alphas_cumprod.to(model.device)

    @property
    def trains_text_encoder(self) -> bool:
        return "text_encoder" in self.adapters.components

    def modules(self) -> dict[str, torch.nn.Module]:
        return dict(self.adapters.components)

    def use_prepared(self, prepared: dict[str, torch.nn.Module]) -> None:
        self._unet = prepared.get("unet", self.model.unet)
        if "text_encoder" in prepared:
            self.captions.encoder = prepared["text_encoder"]

    def param_groups(self) -> list[ParamGroup]:
        names = {"unet": "unet", "text_encoder": "textencoder"}
        return [
            ParamGroup(names[c], self.adapters.parameters(c), self.learning_rates[c])
            for c in ("text_encoder", "unet")
            if c in self.adapters.components
        ]

    def set_training(self, training: bool) -> None:
        for name, module in self.model.modules().items():
            module.train(training and name in self.adapters.components)

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        return denoising_batch_loss(
            self._unet,
            self.model,
            self.captions,
            self.objective,
            self.alphas_cumprod,
            batch,
            generator,
            text_grad=self.trains_text_encoder,
        )

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.adapters.state_tensors()

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.adapters.load_state_tensors(tensors)

    def save(self, path: Path, info: SaveInfo) -> None:
        network = self.adapters.to_network(self.shape, self.model.family)
        write_lora(
            path,
            network,
            family=self.model.family,
            metadata=self.metadata(info),
            dtype=self.save_dtype,
            overwrite=True,
            v_prediction=self.objective.prediction_type == "v_prediction",
        )


@dataclass(frozen=True)
class LoraRunResult:
    result: TrainingResult
    config_file: Path
    plan_text: str
    warnings: tuple[str, ...]


def train_lora(
    config: LoraTrainingConfig,
    base_model: Path,
    *,
    accelerator: Accelerator | None = None,
    preview_factory: Callable[[LoadedModel], Preview | None] | None = None,
    hooks: Hooks | None = None,
    warnings: tuple[str, ...] = (),
) -> LoraRunResult:
    """Train a LoRA as `config` says, on the checkpoint file `base_model` (setup, then the
    engine's loop). Every option is checked before the dataset or the model is read."""
    accelerator = accelerator or make_accelerator(config)
    check_environment(config, accelerator.device.type)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    config = config.model_copy(update={"seed": seed})
    prompts = None
    if config.sample_prompts is not None:
        prompts = read_prompt_file(config.sample_prompts, sampler=config.sample_sampler)
    set_seed(seed)
    data = prepare_data(config, accelerator, seed)
    config_file = config.output_dir / f"{config.output_name}-config.toml"
    if accelerator.is_main_process:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        write_resolved_config(config, config_file)
        logger.info("%s", data.plan_text)
    model = load_base_model(config, base_model, accelerator.device)
    if config.cache_latents or config.cache_latents_to_disk:
        with accelerator.main_process_first():
            cache_latents(config, data, model, seed)
    hooks = hooks or Hooks()
    trainer = _trainer(config, data, model, base_model, accelerator, hooks)
    _with_previews(hooks, prompts, preview_factory, model)  # after the adapters are in
    warnings += prompts.warnings if prompts is not None else ()
    for message in warnings:
        logger.warning("%s", message)
    result = trainer.run()
    return LoraRunResult(
        result, config_file, data.plan_text, warnings + tuple(data.dataset.warnings)
    )


def _with_previews(
    hooks: Hooks,
    prompts: PromptFile | None,
    factory: Callable[[LoadedModel], Preview | None] | None,
    model: LoadedModel,
) -> None:
    if prompts is not None:
        hooks.preview_requests = prompts.requests
        if hooks.preview is None and factory is not None:
            hooks.preview = factory(model)


def _trainer(
    config: LoraTrainingConfig,
    data: PreparedData,
    model: LoadedModel,
    base_model: Path,
    accelerator: Accelerator,
    hooks: Hooks,
) -> Trainer:
    conv_dim, conv_alpha = config.conv_settings
    shape = NetworkShape(
        config.network_dim, config.network_alpha, conv_dim, conv_alpha, config.network_dropout
    )
    set_seed(config.seed or 0)  # adapter init is the same whatever ran before
    adapters = LoraAdapters.inject(trained_components(model, config), shape)
    choice, scheduler_name = optimizer_choice(config)
    warmup = warmup_steps(config.lr_warmup_steps, data.total_steps)
    facts = RunFacts(
        **data.facts,
        warmup_steps=warmup,
        optimizer=choice.description,
        num_processes=accelerator.num_processes,
        clip_skip=config.clip_skip or 1,
        max_token_length=check_token_length(config.max_token_length),
        base_model=base_model,
    )
    run_metadata = training_metadata(config, facts) if accelerator.is_main_process else {}
    method = LoraMethod(
        model,
        adapters,
        shape,
        caption_encoder(model, config),
        objective_settings(config, model),
        learning_rates={
            "unet": config.effective_unet_lr,
            "text_encoder": config.effective_text_encoder_lr,
        },
        save_dtype=_SAVE_DTYPES.get(config.save_precision or ""),
        metadata=lambda info: save_metadata(
            run_metadata, epoch=info.epoch, step=info.step, no_metadata=config.no_metadata
        ),
    )
    processes = accelerator.num_processes
    schedule = scheduler_factory(config, scheduler_name, warmup, processes)
    settings = loop_settings(
        config,
        data,
        fingerprint=resume_fingerprint(config, data.total_steps, processes),
        hints=divergence_hints(config),
    )
    return Trainer(method, data.dataset, settings, accelerator, choice, schedule, hooks)
