"""A1111 hypernetwork training: new (k, v) MLPs per context width in front of every attention
module's `to_k` / `to_v`, trained like textual inversion (templates, schedule string, cadence).

The MLPs come from `formats.hypernetwork.create_hypernetwork` (layer structure, activation,
layer norm, dropout, weight initialisation, context widths) and are put in with
`patching.hypernetwork.HypernetworkProjection` at multiplier 1 (A1111 ignores the multiplier in
training); the UNet's own weights stay frozen and the wrappers come out after the run. Saved as
A1111's `.pt` with `step`, `sd_checkpoint` and `sd_checkpoint_name`, plus `<name>-<step>.pt`
copies every `save_every_n_steps`. Continuing a hypernetwork (`weights`) goes on from its own
`step` up to `max_train_steps` (A1111; see `template_training`), and the saved steps are absolute.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from pydantic import field_validator, model_validator

from brushwork.core.errors import ConfigError
from brushwork.formats.hypernetwork import (
    Hypernetwork,
    create_hypernetwork,
    load_mlps,
    read_hypernetwork,
    write_hypernetwork,
)
from brushwork.loading import LoadedModel
from brushwork.patching.hypernetwork import HypernetworkProjection
from brushwork.training.engine import Hooks, SaveInfo, TrainingResult
from brushwork.training.objective import ObjectiveSettings, denoising_loss, noise_latents
from brushwork.training.optim import OptimizerChoice, ParamGroup
from brushwork.training.samples import Preview
from brushwork.training.template_training import (
    LatentSource,
    TemplateTrainingConfig,
    attach_previews,
    batch_prompts,
    check_inputs,
    checkpoint_facts,
    file_step,
    load_frozen_model,
    make_accelerator,
    prepare_run,
    run_method,
)
from brushwork.training.text import CaptionEncoder

logger = logging.getLogger(__name__)


class HypernetworkTrainingConfig(TemplateTrainingConfig):
    """A hypernetwork run: A1111's create options by their file/API names."""

    learning_rate: str = "0.00001"  # A1111's default for hypernetworks
    template_filename: str = "hypernetwork"
    layer_structure: tuple[float, ...] = (1.0, 2.0, 1.0)
    activation_func: str = "linear"
    weight_initialization: str = "Normal"
    is_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: tuple[float, ...] | None = None
    enable_sizes: tuple[int, ...] | None = None  # context widths; default: the model's

    @field_validator("layer_structure", "dropout_structure", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(float(p) for p in value.replace(" ", "").split(",") if p)
        return value

    @field_validator("enable_sizes", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(int(p) for p in value.replace(" ", "").split(",") if p)
        return value

    @model_validator(mode="after")
    def _structure(self) -> HypernetworkTrainingConfig:
        structure = self.layer_structure
        if len(structure) < 2 or structure[0] != 1 or structure[-1] != 1:
            raise ValueError(
                f"layer_structure {list(structure)} must start and end with 1 (A1111), "
                "e.g. '1, 2, 1'"
            )
        if self.dropout_structure is not None:
            if not self.use_dropout:
                raise ValueError("dropout_structure is set but use_dropout is false")
            if len(self.dropout_structure) != len(structure):
                raise ValueError("dropout_structure needs one value per layer_structure entry")
        return self


def attention_modules(unet: torch.nn.Module) -> list[torch.nn.Module]:
    return [
        module
        for module in unet.modules()
        if all(isinstance(getattr(module, p, None), torch.nn.Linear) for p in ("to_k", "to_v"))
    ]


def model_widths(unet: torch.nn.Module) -> tuple[int, ...]:
    """The context widths of the UNet's attention modules, cross-attention's first (SD1: 768,
    320, 640, 1280, A1111's default)."""
    found: list[int] = []
    for attn in attention_modules(unet):
        to_k = attn.get_submodule("to_k")
        assert isinstance(to_k, torch.nn.Linear)
        width = int(to_k.weight.shape[1])
        if width not in found:
            found.append(width)
    cross = int(getattr(getattr(unet, "config", None), "cross_attention_dim", 0) or 0)
    return tuple(sorted(found, key=lambda w: (w != cross, found.index(w))))


class HypernetworkMethod:
    """The `engine.TrainingMethod` of hypernetworks (see the module docstring)."""

    def __init__(
        self,
        model: LoadedModel,
        config: HypernetworkTrainingConfig,
        hypernetwork: Hypernetwork,
        templates: Sequence[str],
    ) -> None:
        self.model = model
        self.config = config
        self.hypernetwork = hypernetwork
        self.templates = tuple(templates)
        self.mlps: dict[int, tuple[torch.nn.Sequential, torch.nn.Sequential]] = {}
        self._wrapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
        self._wrap(model.unet)
        self._unet: torch.nn.Module = model.unet
        encoder = model.text_encoders["text_encoder"]
        self.captions = CaptionEncoder(
            model.tokenizers["text_encoder"],
            encoder,
            final_layer_norm=encoder.get_submodule("final_layer_norm"),
            clip_skip=config.clip_skip or 1,
        )
        self.objective = ObjectiveSettings(prediction_type=model.prediction_type)
        self.alphas_cumprod = model.alphas_cumprod.to(model.device)
        self.latents = LatentSource(model, config.latent_sampling_method, config.seed or 0)
        self.checkpoint: tuple[str, str] | None = None  # (short hash, name) stamped on saves
        self.last_prompt: str | None = None  # what A1111's preview draws without a prompt file

    def _wrap(self, unet: torch.nn.Module) -> None:
        for attn in attention_modules(unet):
            to_k = attn.get_submodule("to_k")
            assert isinstance(to_k, torch.nn.Linear)
            width = int(to_k.weight.shape[1])
            if width not in self.hypernetwork.layers:
                continue
            if width not in self.mlps:
                k, v = load_mlps(self.hypernetwork, width)
                for mlp in (k, v):
                    mlp.to(self.model.device, torch.float32).requires_grad_(True)
                self.mlps[width] = (k, v)
            k, v = self.mlps[width]
            for attr, mlp in (("to_k", k), ("to_v", v)):
                original = getattr(attn, attr)
                self._wrapped.append((attn, attr, original))
                setattr(attn, attr, HypernetworkProjection(original, [mlp], [1.0]))
        if not self.mlps:
            raise ConfigError(
                f"the hypernetwork's widths {list(self.hypernetwork.layers)} match no attention "
                "module of this model",
                hint="set enable_sizes to the model's widths (SD1: 768, 320, 640, 1280)",
            )

    def remove(self) -> None:
        """Put every original `to_k` / `to_v` back (the UNet is as it was loaded)."""
        for owner, attr, original in reversed(self._wrapped):
            setattr(owner, attr, original)
        self._wrapped.clear()

    def parameters(self) -> tuple[torch.nn.Parameter, ...]:
        return tuple(p for pair in self.mlps.values() for mlp in pair for p in mlp.parameters())

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet}

    def use_prepared(self, prepared: dict[str, torch.nn.Module]) -> None:
        self._unet = prepared["unet"]

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("hypernetwork", self.parameters(), 1.0)]  # x the schedule's rate

    def set_training(self, training: bool) -> None:
        for module in self.model.modules().values():
            module.eval()
        for pair in self.mlps.values():
            for mlp in pair:
                mlp.train(training)  # dropout only while training, as A1111

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        texts = batch_prompts(batch, self.templates, self.hypernetwork.name, generator)
        self.last_prompt = texts[0]
        latents = self.latents(batch, generator)
        with torch.no_grad():
            context = self.captions.encode(texts, self.model.device)
        noised = noise_latents(latents, self.alphas_cumprod, self.objective, generator)
        prediction = self._unet(
            noised.noisy, noised.timesteps, encoder_hidden_states=context
        ).sample
        return denoising_loss(prediction, noised, self.alphas_cumprod, self.objective)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {
            f"{width}.{which}.{key}": value.detach()
            for width, pair in self.mlps.items()
            for which, mlp in zip("kv", pair, strict=True)
            for key, value in mlp.state_dict().items()
        }

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for width, pair in self.mlps.items():
            for which, mlp in zip("kv", pair, strict=True):
                prefix = f"{width}.{which}."
                state = {
                    k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)
                }
                mlp.load_state_dict(state, strict=True)

    def trained(self, step: int | None, checkpoint: tuple[str, str] | None) -> Hypernetwork:
        layers = dict(self.hypernetwork.layers)
        for width, pair in self.mlps.items():
            k, v = (
                {f"linear.{key}": t.detach().cpu().clone() for key, t in mlp.state_dict().items()}
                for mlp in pair
            )
            layers[width] = (k, v)
        facts = checkpoint or (None, None)
        return dataclasses.replace(
            self.hypernetwork,
            layers=layers,
            step=step,
            sd_checkpoint=facts[0],
            sd_checkpoint_name=facts[1],
        )

    def save(self, path: Path, info: SaveInfo) -> None:
        write_hypernetwork(path, self.trained(info.step, self.checkpoint), overwrite=True)


@dataclass(frozen=True)
class HypernetworkRunResult:
    result: TrainingResult
    config_file: Path
    warnings: tuple[str, ...]


def new_hypernetwork(config: HypernetworkTrainingConfig, model: LoadedModel) -> Hypernetwork:
    widths = config.enable_sizes or model_widths(model.unet)
    return create_hypernetwork(
        config.output_name,
        widths=widths,
        layer_structure=config.layer_structure,
        activation_func=config.activation_func,
        weight_initialization=config.weight_initialization,
        add_layer_norm=config.is_layer_norm,
        use_dropout=config.use_dropout,
        dropout_structure=config.dropout_structure,
        seed=config.seed,
    )


def train_hypernetwork(
    config: HypernetworkTrainingConfig,
    base_model: Path,
    *,
    model: LoadedModel | None = None,
    accelerator: Accelerator | None = None,
    preview_factory: Callable[[LoadedModel], Preview | None] | None = None,
    hooks: Hooks | None = None,
    initial: Hypernetwork | None = None,
) -> HypernetworkRunResult:
    """Train a hypernetwork as `config` says (a new one, or `initial` / the file
    `config.weights` continued from its own step up to `config.max_train_steps`, as A1111; one
    already there is refused before anything is written) on `base_model` (or the loaded
    `model`, left as it was)."""
    accelerator = accelerator or make_accelerator(config.mixed_precision)
    check_inputs(config, accelerator)
    what = f"hypernetwork {initial.name!r}" if initial is not None else ""
    if initial is None and config.weights is not None:
        initial = read_hypernetwork(config.weights)
        what = f"hypernetwork {config.weights}"
        logger.info("continuing %s: its own layer structure and options apply", config.weights)
    start_step = file_step(initial.step) if initial is not None else 0
    config, run = prepare_run(config, accelerator, start_step=start_step, what=what)
    model = model or load_frozen_model(config, base_model, accelerator.device)
    hypernetwork = initial or new_hypernetwork(config, model)
    method = HypernetworkMethod(model, config, hypernetwork, run.templates)
    method.checkpoint = checkpoint_facts(base_model)
    try:
        factory = preview_factory
        hooks, preview_warnings = attach_previews(
            hooks,
            config,
            lambda: method.last_prompt,
            None if factory is None else lambda: factory(model),
        )
        for message in preview_warnings:
            logger.warning("%s", message)
        result = run_method(
            run,
            method,
            accelerator,
            optimizer=OptimizerChoice("AdamW", {}),  # torch's defaults, as A1111
            suffix=".pt",
            fingerprint={"layer_structure": list(hypernetwork.layer_structure)},
            hooks=hooks,
        )
    finally:
        method.remove()
    return HypernetworkRunResult(
        result, run.config_file, (*run.dataset.warnings, *preview_warnings)
    )
