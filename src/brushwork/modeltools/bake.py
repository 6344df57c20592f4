"""Baking LoRAs into a checkpoint with the very code generation merges them with.

The checkpoint's UNet and text encoders are built (on the `meta` device, then given the file's
weights in float32, as `loading` does), the LoRAs are merged into them by `patching.apply_loras`
(every key family `formats.lora` reads: kohya, diffusers, PEFT, LoCon, LoHa, LoKr, DoRA), and
the patched weights are written back in the LDM layout with everything else the file held (VAE,
DDPM buffers, EMA) unchanged. So the baked file, loaded, has exactly the weights the model had
with the LoRAs applied at generation, rounded once to the output precision.

Memory: one model in float32 (plus `apply_loras`' backup of the layers it touched). The output
is written tensor by tensor (`streamwrite`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import IncompatibleModelError
from brushwork.core.kinds import BaseFamily, FileFormat
from brushwork.formats.checkpoint import (
    Checkpoint,
    checkpoint_to_ldm,
    file_format_for,
    read_checkpoint,
    write_model_tensors,
)
from brushwork.loading.modules import (
    TextEncoder,
    assign_weights,
    build_meta_text_encoder,
    build_meta_unet,
)
from brushwork.modeltools.common import ModelInput, ProgressCallback, precision_dtype, report
from brushwork.modeltools.merge import WEIGHT_PREFIXES
from brushwork.modeltools.outputs import check_output, copy_config
from brushwork.modeltools.recipe import (
    MERGE_MODELS_KEY,
    MERGE_RECIPE_KEY,
    merge_models_entry,
    write_sidecar,
)
from brushwork.modeltools.streamwrite import TensorSpec, write_safetensors_streamed
from brushwork.patching import LoraApplication, Unmatched, apply_loras, load_lora_application

logger = logging.getLogger(__name__)

CPU = torch.device("cpu")


@dataclass(frozen=True)
class BakeRequest:
    model: ModelInput
    loras: tuple[tuple[ModelInput, float], ...]  # each LoRA with its multiplier
    output: Path
    precision: str | None = None  # None: the dtype of the checkpoint's UNet
    overwrite: bool = False
    sidecar: bool = True


@dataclass(frozen=True)
class BakeResult:
    path: Path
    family: BaseFamily
    applied: Mapping[str, Mapping[str, int]]  # LoRA name -> component -> modules merged
    unmatched: tuple[Unmatched, ...]
    recipe: dict[str, Any]
    sidecar: Path | None = None
    config: Path | None = None


def _unet_dtype(checkpoint: Checkpoint) -> torch.dtype:
    return next((t.dtype for t in checkpoint.unet.values() if t.is_floating_point()), torch.float32)


def _build(checkpoint: Checkpoint, source: Path) -> tuple[torch.nn.Module, dict[str, TextEncoder]]:
    """The UNet and text encoders with the checkpoint's weights in float32 (its dicts emptied)."""
    arch = checkpoint.architecture
    unet = build_meta_unet(arch.unet)
    assign_weights(
        unet, checkpoint.unet, dtype=torch.float32, device=CPU, what="UNet", source=source
    )
    encoders: dict[str, TextEncoder] = {}
    for name, config in arch.text_encoders.items():
        encoder = build_meta_text_encoder(config)
        weights = checkpoint.text_encoders.get(name, {})
        assign_weights(encoder, weights, dtype=torch.float32, device=CPU, what=name, source=source)
        encoders[name] = encoder
    return unet, encoders


def _applications(request: BakeRequest, unet_config: dict[str, Any]) -> list[LoraApplication]:
    return [
        load_lora_application(
            lora.path, name=lora.stem, te_multiplier=weight, unet_config=unet_config
        )
        for lora, weight in request.loras
    ]


def _output_dtype(name: str, tensor: torch.Tensor, wanted: torch.dtype) -> torch.dtype:
    if tensor.is_floating_point() and name.startswith(WEIGHT_PREFIXES):
        return wanted
    return tensor.dtype


def write_state_dict(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    dtype: torch.dtype,
    *,
    overwrite: bool,
    progress: ProgressCallback | None = None,
) -> None:
    """Write an LDM state dict, model weights cast to `dtype`, one tensor at a time."""
    specs = [
        TensorSpec(name, _output_dtype(name, t, dtype), tuple(t.shape))
        for name, t in tensors.items()
    ]

    def cast() -> Iterator[tuple[str, torch.Tensor]]:
        for done, spec in enumerate(specs, start=1):
            yield spec.name, tensors[spec.name].to(spec.dtype)
            report(progress, "writing", done, len(specs))

    if file_format_for(path) is FileFormat.SAFETENSORS:
        write_safetensors_streamed(path, specs, cast(), metadata, overwrite=overwrite)
    else:
        write_model_tensors(path, dict(cast()), metadata, overwrite=overwrite)


def _metadata(
    request: BakeRequest, checkpoint_metadata: Mapping[str, str], recipe: dict[str, Any]
) -> dict[str, str]:
    models = merge_models_entry(request.model.identity(), checkpoint_metadata)
    kept = {k: v for k, v in checkpoint_metadata.items() if k not in (MERGE_RECIPE_KEY,)}
    return kept | {
        "format": "pt",
        MERGE_RECIPE_KEY: json.dumps(recipe),
        MERGE_MODELS_KEY: json.dumps(models),
    }


def _recipe(request: BakeRequest, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "type": "brushwork-lora-bake",
        "primary_model_hash": request.model.sha256,
        "loras": [lora.identity() | {"weight": weight} for lora, weight in request.loras],
        "precision": request.precision or str(dtype).removeprefix("torch."),
    }


def describe_bake(request: BakeRequest) -> str:
    loras = ", ".join(f"{lora.stem}:{weight:g}" for lora, weight in request.loras)
    return f"{request.model.stem} with LoRA {loras} baked in"


def _hashed(request: BakeRequest, progress: ProgressCallback | None) -> BakeRequest:
    loras = tuple((lora.hashed(progress), weight) for lora, weight in request.loras)
    return replace(request, model=request.model.hashed(progress), loras=loras)


def bake_loras(request: BakeRequest, progress: ProgressCallback | None = None) -> BakeResult:
    """Write `request.model` with its LoRAs merged in (see the module docstring)."""
    inputs: Sequence[ModelInput] = [request.model, *(lora for lora, _ in request.loras)]
    check_output(request.output, inputs, overwrite=request.overwrite)
    request = _hashed(request, progress)
    checkpoint = read_checkpoint(request.model.path)
    dtype = precision_dtype(request.precision) or _unet_dtype(checkpoint)
    unet, encoders = _build(checkpoint, request.model.path)
    applications = _applications(request, checkpoint.architecture.unet)
    recipe = _recipe(request, dtype)
    with apply_loras(unet=unet, text_encoders=encoders, applications=applications) as applied:
        if applied.modules_applied == 0:
            raise IncompatibleModelError(
                f"no module of the LoRA(s) fits {request.model.name}: nothing to bake",
                hint="use LoRAs made for this model's family",
            )
        checkpoint.unet = unet.state_dict()
        checkpoint.text_encoders = {name: e.state_dict() for name, e in encoders.items()}
        tensors = checkpoint_to_ldm(checkpoint)
        metadata = _metadata(request, checkpoint.metadata, recipe)
        write_state_dict(
            request.output, tensors, metadata, dtype, overwrite=request.overwrite, progress=progress
        )
    result = BakeResult(
        path=request.output,
        family=checkpoint.architecture.family,
        applied=applied.applied,
        unmatched=applied.unmatched,
        recipe=recipe,
        config=copy_config(request.model.path, request.output),
    )
    if not request.sidecar:
        return result
    sidecar = write_sidecar(
        request.output,
        description=describe_bake(request),
        recipe=recipe | {"model": request.model.identity()},
        family=result.family,
    )
    return replace(result, sidecar=sidecar)
