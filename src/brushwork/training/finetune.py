"""Full fine-tuning of a model's own weights: the method behind DreamBooth and training from scratch.

The UNet trains whole; the text encoder trains too when it has a learning rate, for the whole run
or only for the first `text_encoder_steps` optimiser steps (sd-scripts' `stop_text_encoder_training`,
the DreamBooth extension's "train text encoder for N steps"). An optional exponential moving
average of the UNet (`ema_decay`, as diffusers' `train_text_to_image --use_ema`) is what gets
saved when it is on: on a small dataset the averaged weights draw cleaner pictures than the last
step's.

Files are A1111 single-file checkpoints (`.safetensors`, or `.ckpt` as a pickle) of the current
weights, with the VAE the model was loaded with, so A1111, ComfyUI, diffusers' `from_single_file`
and our own loader read them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from brushwork.formats.checkpoint import components_to_checkpoint, write_checkpoint
from brushwork.loading import LoadedModel
from brushwork.training.batch_loss import denoising_batch_loss
from brushwork.training.engine import SaveInfo
from brushwork.training.objective import ObjectiveSettings
from brushwork.training.optim import ParamGroup
from brushwork.training.text import CaptionEncoder

logger = logging.getLogger(__name__)

_EMA_PREFIX = "ema."
_EMA_UPDATES = "__updates__"  # how many averages were taken (resume keeps the warm-up)


def _unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    """The module itself when accelerate/DDP wrapped it."""
    inner = getattr(module, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else module


def save_full_checkpoint(
    model: LoadedModel,
    path: Path,
    *,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
    unet_state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write `model` as an A1111 single-file checkpoint (format from the suffix), atomically.

    `unet_state` replaces the UNet's weights in the file (the EMA weights, when training keeps
    them). Tensors are copied to the CPU; the model is not changed.
    """
    unet = dict(unet_state) if unet_state is not None else model.unet.state_dict()
    encoders = {name: enc.state_dict() for name, enc in model.text_encoders.items()}
    checkpoint = components_to_checkpoint(
        {k: v.detach().cpu() for k, v in unet.items()},
        {k: v.detach().cpu() for k, v in model.vae.state_dict().items()},
        {n: {k: v.detach().cpu() for k, v in sd.items()} for n, sd in encoders.items()},
        model.architecture,
        metadata=metadata,
    )
    write_checkpoint(path, checkpoint, dtype=dtype, overwrite=True)
    return path


class UnetEma:
    """Exponential moving average of the UNet's floating-point weights (kept in fp32, on the
    model's device): `ema = decay_t · ema + (1 - decay_t) · weights` after each optimiser step,
    with diffusers' warm-up `decay_t = min(decay, (1 + t) / (10 + t))` so early steps count."""

    def __init__(self, unet: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay is {decay}; it must be between 0 and 1")
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: tensor.detach().float().clone()
            for name, tensor in unet.state_dict().items()
            if tensor.is_floating_point()
        }

    @torch.no_grad()
    def update(self, unet: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, tensor in unet.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(tensor.float(), 1.0 - decay)

    def state_for(self, unet: torch.nn.Module) -> dict[str, torch.Tensor]:
        """A UNet state dict with the averaged weights, in the UNet's dtypes."""
        out = {}
        for name, tensor in unet.state_dict().items():
            average = self.shadow.get(name)
            out[name] = tensor if average is None else average.to(tensor.dtype)
        return out


class FullModelMethod:
    """Full fine-tune of a loaded model's UNet (and text encoder): an `engine.TrainingMethod`.

    Batches are `training.data` batches (or anything with `latents` (unscaled, or None),
    `images`, `captions` and `loss_weights`): prior preservation is the per-sample
    `loss_weights` of regularisation images.
    """

    def __init__(
        self,
        model: LoadedModel,
        captions: CaptionEncoder,
        objective: ObjectiveSettings,
        *,
        learning_rates: dict[str, float],
        text_encoder_steps: int | None = None,
        save_dtype: torch.dtype | None = None,
        gradient_checkpointing: bool = False,
        metadata: Callable[[SaveInfo], dict[str, str]] | None = None,
        ema_decay: float | None = None,
    ) -> None:
        if "unet" not in learning_rates:
            raise ValueError("a full fine-tune needs a UNet learning rate")
        self.model = model
        self.captions = captions
        self.objective = objective
        self.learning_rates = learning_rates
        self.text_encoder_steps = text_encoder_steps
        self.save_dtype = save_dtype
        self.metadata = metadata
        self.alphas_cumprod = model.alphas_cumprod.to(model.device)
        self._unet: torch.nn.Module = model.unet
        self._text_encoder_active = self.trains_text_encoder
        self._prepare_modules(gradient_checkpointing)
        self.ema = UnetEma(model.unet, ema_decay) if ema_decay else None

    @property
    def trains_text_encoder(self) -> bool:
        return "text_encoder" in self.learning_rates and self.text_encoder_steps != 0

    def _prepare_modules(self, gradient_checkpointing: bool) -> None:
        for module in self.model.modules().values():
            module.requires_grad_(False)
        self.model.unet.requires_grad_(True)
        encoder = self.model.text_encoders["text_encoder"]
        if self.trains_text_encoder:
            encoder.requires_grad_(True)
        if gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
            if self.trains_text_encoder:
                encoder.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )

    # ---- engine.TrainingMethod -----------------------------------------------------------
    def modules(self) -> dict[str, torch.nn.Module]:
        out: dict[str, torch.nn.Module] = {"unet": self.model.unet}
        if self.trains_text_encoder:
            out["text_encoder"] = self.model.text_encoders["text_encoder"]
        return out

    def use_prepared(self, prepared: dict[str, torch.nn.Module]) -> None:
        self._unet = prepared["unet"]
        if "text_encoder" in prepared:
            self.captions.encoder = prepared["text_encoder"]

    def param_groups(self) -> list[ParamGroup]:
        groups = []
        if self.trains_text_encoder:
            encoder = self.model.text_encoders["text_encoder"]
            groups.append(
                ParamGroup(
                    "textencoder",
                    tuple(p for p in encoder.parameters() if p.requires_grad),
                    self.learning_rates["text_encoder"],
                )
            )
        unet_params = tuple(p for p in self.model.unet.parameters() if p.requires_grad)
        groups.append(ParamGroup("unet", unet_params, self.learning_rates["unet"]))
        return groups

    def set_training(self, training: bool) -> None:
        self.model.unet.train(training)
        self.model.text_encoders["text_encoder"].train(training and self._text_encoder_active)
        self.model.vae.eval()

    def begin_step(self, step: int) -> None:
        """Called by the engine before optimiser step `step` (0-based): stops the text encoder
        once its steps are done (its parameters then get no gradient, so the optimiser leaves them)."""
        limit = self.text_encoder_steps
        if self._text_encoder_active and limit is not None and step >= limit:
            logger.info("step %d: the text encoder stops training", step)
            encoder = self.model.text_encoders["text_encoder"]
            encoder.requires_grad_(False)
            encoder.eval()
            self._text_encoder_active = False

    def end_step(self, step: int) -> None:
        """Called by the engine after each optimiser step: updates the UNet average."""
        if self.ema is not None:
            self.ema.update(self.model.unet)

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        return denoising_batch_loss(
            self._unet,
            self.model,
            self.captions,
            self.objective,
            self.alphas_cumprod,
            batch,
            generator,
            text_grad=self._text_encoder_active,
        )

    def trainable_state(self) -> dict[str, torch.Tensor]:
        out = {f"unet.{k}": v for k, v in self.model.unet.state_dict().items()}
        if self.trains_text_encoder:
            encoder = self.model.text_encoders["text_encoder"]
            out |= {f"text_encoder.{k}": v for k, v in encoder.state_dict().items()}
        if self.ema is not None:
            out |= {f"{_EMA_PREFIX}{k}": v for k, v in self.ema.shadow.items()}
            out[f"{_EMA_PREFIX}{_EMA_UPDATES}"] = torch.tensor(float(self.ema.updates))
        return out

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}, "ema": {}}
        for key, value in tensors.items():
            head, _, rest = key.partition(".")
            parts[head][rest] = value
        self.model.unet.load_state_dict(parts["unet"])
        if parts["text_encoder"]:
            self.model.text_encoders["text_encoder"].load_state_dict(parts["text_encoder"])
        if self.ema is not None and parts["ema"]:
            self.ema.updates = int(parts["ema"].pop(_EMA_UPDATES, torch.tensor(0.0)).item())
            for name, value in parts["ema"].items():
                self.ema.shadow[name].copy_(value)

    def save(self, path: Path, info: SaveInfo) -> None:
        metadata = self.metadata(info) if self.metadata is not None else {}
        unet = _unwrapped(self._unet)
        state = self.ema.state_for(unet) if self.ema is not None else None
        save_full_checkpoint(
            self.model, path, dtype=self.save_dtype, metadata=metadata, unet_state=state
        )
