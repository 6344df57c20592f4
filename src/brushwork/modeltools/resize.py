"""LoRA resizing: a lower rank by the SVD of each module's ΔW (kohya `resize_lora.py`).

Each module's ΔW is factorised again at the new rank (`lowrank`): the best approximation in the
Frobenius norm, so no resize can keep more of ΔW's norm. A plain LoRA module keeps its
``alpha / rank`` ratio (kohya: ``new_alpha = old_alpha / old_rank · new_rank``), its product
``up @ down`` being factorised without ever forming ΔW; LoHa, LoKr and full-difference modules
become plain LoRA modules of scale 1. A module whose rank is already at most the new one is kept
as it is; DoRA modules (their ΔW depends on the model's weights) are kept as they are too.
Every module's retained share of the Frobenius norm is reported, as kohya's `--verbose` does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.lora import LoraModule, LoraNetwork, read_lora, write_lora
from brushwork.modeltools.common import (
    ModelInput,
    ProgressCallback,
    dtype_label,
    precision_dtype,
    report,
)
from brushwork.modeltools.lowrank import (
    Factors,
    RankChoice,
    factorize,
    factorize_product,
    is_conv_kernel,
    lora_module,
)
from brushwork.modeltools.outputs import check_output
from brushwork.modeltools.recipe import RECIPE_KEY, write_sidecar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResizeRequest:
    lora: ModelInput
    output: Path
    rank: RankChoice
    conv_rank: RankChoice | None = None  # 3x3 convolutions; None: the same as `rank`
    family: BaseFamily | None = None  # when the file does not say
    precision: str | None = None  # None: the input's dtype
    overwrite: bool = False
    sidecar: bool = True


@dataclass(frozen=True)
class LayerRetention:
    """What resizing did to one module."""

    target: str
    old_rank: int | None
    new_rank: int | None
    fro_retained: float  # share of ΔW's Frobenius norm kept (1.0: unchanged)
    sum_retained: float  # share of the sum of singular values kept


@dataclass(frozen=True)
class ResizeResult:
    path: Path
    family: BaseFamily
    layers: tuple[LayerRetention, ...]
    recipe: dict[str, Any]
    sidecar: Path | None = None

    @property
    def mean_fro_retained(self) -> float:
        values = [layer.fro_retained for layer in self.layers]
        return sum(values) / len(values) if values else 1.0


def network_family(networks: list[LoraNetwork], given: BaseFamily | None) -> BaseFamily:
    """The one family of these LoRAs: `given`, else what their files say."""
    found = {n.family for n in networks if n.family is not None}
    if given is not None:
        found.discard(given)
        if found:
            raise ConfigError(f"a LoRA here is for {found.pop()}, not {given}")
        return given
    if len(found) > 1:
        raise ConfigError(
            f"these LoRAs are for different families ({', '.join(sorted(map(str, found)))})",
            hint="combine LoRAs of one family",
        )
    if not found:
        raise ConfigError(
            "the LoRA does not say which base family it is for", hint="give --family sd1|sd2|sdxl"
        )
    return found.pop()


def network_dtype(network: LoraNetwork) -> torch.dtype:
    for module in network.modules.values():
        for tensor in module.parts.values():
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def is_v_prediction(network: LoraNetwork) -> bool:
    """Whether a LoRA's metadata says it is for a v-prediction model."""
    meta = network.metadata
    version = meta.get("ss_base_model_version", "")
    return meta.get("modelspec.prediction_type") == "v" or version.endswith("_v")


def layer_shape(module: LoraModule, delta: torch.Tensor | None = None) -> tuple[int, ...]:
    """The shape of the weight a module patches, as far as its parts tell."""
    if module.kind == "lora":
        down, up = module.parts["down"], module.parts["up"]
        return (int(up.shape[0]), *(int(d) for d in down.shape[1:]))
    raw = delta if delta is not None else module.delta_weight()
    return tuple(int(d) for d in raw.shape)


def refactor(module: LoraModule, choice: RankChoice) -> tuple[LoraModule, Factors]:
    """`module` at the rank `choice` gives it, and the factors (with all singular values)."""
    if module.kind == "lora" and "mid" not in module.parts:
        parts = module.parts
        factors = factorize_product(parts["up"].flatten(1), parts["down"].flatten(1), choice)
        alpha = module.scale * factors.rank
        return lora_module(module.target, factors, layer_shape(module), alpha), factors
    delta = module.delta_weight()
    shape = layer_shape(module, delta)
    factors = factorize(delta.reshape(shape[0], -1), choice)
    return lora_module(module.target, factors, shape, float(factors.rank)), factors


def _resize_module(module: LoraModule, request: ResizeRequest) -> tuple[LoraModule, LayerRetention]:
    conv = is_conv_kernel(layer_shape(module)) and request.conv_rank is not None
    choice = request.conv_rank if conv and request.conv_rank is not None else request.rank
    old = module.rank
    unchanged = module.dora_scale is not None or (
        old is not None and old <= choice.dim and choice.dynamic is None
    )
    if unchanged:
        if module.dora_scale is not None:
            logger.info("%s: a DoRA module is kept as it is", module.target)
        return module, LayerRetention(module.target, old, old, 1.0, 1.0)
    new, factors = refactor(module, choice)
    retention = LayerRetention(
        module.target, old, factors.rank, factors.fro_retained, factors.sum_retained
    )
    return new, retention


def _recipe(request: ResizeRequest, network: LoraNetwork) -> dict[str, Any]:
    conv = request.conv_rank
    return {
        "type": "lora-resize",
        "input": request.lora.identity() | {"addnet_hash": network.metadata.get("sshs_model_hash")},
        "dim": request.rank.dim,
        "dynamic": request.rank.dynamic,
        "dynamic_value": request.rank.dynamic_value,
        "conv_dim": conv.dim if conv is not None else None,
        "precision": request.precision,
    }


def resize_lora(request: ResizeRequest, progress: ProgressCallback | None = None) -> ResizeResult:
    """Resize a LoRA file (see the module docstring); the input is never overwritten."""
    check_output(request.output, [request.lora], overwrite=request.overwrite)
    request = replace(request, lora=request.lora.hashed(progress))
    network = read_lora(request.lora.path)
    family = network_family([network], request.family)
    modules: dict[str, LoraModule] = {}
    layers: list[LayerRetention] = []
    for done, (target, module) in enumerate(network.modules.items(), start=1):
        modules[target], retention = _resize_module(module, request)
        layers.append(retention)
        report(progress, "resizing", done, len(network.modules))
    recipe = _recipe(request, network)
    comment = network.metadata.get("ss_training_comment", "")
    metadata = {
        "ss_training_comment": f"resized by brushwork to dim {request.rank.label}; {comment}",
        RECIPE_KEY: json.dumps(recipe),
    }
    dtype = precision_dtype(request.precision) or network_dtype(network)
    resized = LoraNetwork(modules, dict(network.metadata), family=family)
    write_lora(
        request.output,
        resized,
        family=family,
        metadata=metadata,
        dtype=dtype,
        overwrite=request.overwrite,
        v_prediction=is_v_prediction(network),
    )
    result = ResizeResult(
        request.output, family, tuple(layers), recipe | {"dtype": dtype_label(dtype)}
    )
    if not request.sidecar:
        return result
    description = f"{request.lora.name} resized to dim {request.rank.label}"
    sidecar = write_sidecar(request.output, description=description, recipe=recipe, family=family)
    return replace(result, sidecar=sidecar)
