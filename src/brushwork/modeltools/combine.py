"""LoRA combining: one LoRA equal to the weighted sum of several (kohya `svd_merge_lora.py`).

Per layer, ΔW = Σ wᵢ · ΔWᵢ (each ΔWᵢ with its own alpha / rank scale). Two ways to store it:

* without a rank: the plain LoRA modules are concatenated along the rank,
  ``up = [w₁s₁·up₁ | w₂s₂·up₂ | …]``, ``down = [down₁; down₂; …]``, alpha = the summed rank. That
  is ΔW exactly (kohya `merge_lora.py --concat`), at the summed rank;
* with `rank`: ΔW is factorised again at that rank (or a dynamic one), the best approximation
  in the Frobenius norm. Plain LoRA modules are factorised through their concatenation without
  forming ΔW; LoHa / LoKr / full modules through ΔW itself.

DoRA modules cannot be summed (their ΔW depends on the model's weights) and are refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError, IncompatibleModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.lora import LoraModule, LoraNetwork, read_lora, write_lora
from brushwork.modeltools.common import ModelInput, ProgressCallback, precision_dtype, report
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
from brushwork.modeltools.resize import (
    is_v_prediction,
    layer_shape,
    network_dtype,
    network_family,
)


@dataclass(frozen=True)
class CombineRequest:
    loras: tuple[tuple[ModelInput, float], ...]  # each LoRA with its weight
    output: Path
    rank: RankChoice | None = None  # None: concatenate the ranks (exact)
    conv_rank: RankChoice | None = None  # 3x3 convolutions; None: the same as `rank`
    family: BaseFamily | None = None
    precision: str | None = None
    overwrite: bool = False
    sidecar: bool = True


@dataclass(frozen=True)
class CombineResult:
    path: Path
    family: BaseFamily
    modules: int
    ranks: dict[str, int]
    fro_retained: dict[str, float]  # with a rank: the share of each summed ΔW kept
    recipe: dict[str, Any]
    sidecar: Path | None = None


Contribution = tuple[LoraModule, float]


def _plain(module: LoraModule) -> bool:
    return module.kind == "lora" and "mid" not in module.parts


def _concatenated(contributions: Sequence[Contribution]) -> tuple[torch.Tensor, torch.Tensor]:
    """[Σ rᵢ] factors whose product is Σ wᵢ sᵢ upᵢ @ downᵢ (flattened to 2-D)."""
    ups = [m.parts["up"].float().flatten(1) * (w * m.scale) for m, w in contributions]
    downs = [m.parts["down"].float().flatten(1) for m, _ in contributions]
    return torch.cat(ups, 1), torch.cat(downs, 0)


def _summed_delta(contributions: Sequence[Contribution], shape: tuple[int, ...]) -> torch.Tensor:
    total = torch.zeros(shape[0], int(torch.Size(shape[1:]).numel()))
    for module, weight in contributions:
        delta = module.delta_weight()
        if delta.numel() != total.numel():
            raise IncompatibleModelError(
                f"{module.target}: the LoRAs patch it with different shapes "
                f"({list(delta.shape)} and {list(shape)})"
            )
        total += weight * delta.reshape(total.shape)
    return total


def _combine_layer(
    target: str, contributions: Sequence[Contribution], request: CombineRequest
) -> tuple[LoraModule, Factors | None]:
    if any(m.dora_scale is not None for m, _ in contributions):
        raise ConfigError(f"{target}: a DoRA module cannot be combined with others")
    shape = layer_shape(contributions[0][0])
    plain = all(_plain(m) for m, _ in contributions)
    if request.rank is None:
        if not plain:
            raise ConfigError(
                f"{target}: LoHa, LoKr and full modules cannot be concatenated",
                hint="give --dim to combine by SVD",
            )
        up, down = _concatenated(contributions)
        factors = Factors(up, down, torch.empty(0))
        return lora_module(target, factors, shape, float(factors.rank)), None
    choice = request.rank
    if is_conv_kernel(shape) and request.conv_rank is not None:
        choice = request.conv_rank
    if plain:
        factors = factorize_product(*_concatenated(contributions), choice)
    else:
        factors = factorize(_summed_delta(contributions, shape), choice)
    return lora_module(target, factors, shape, float(factors.rank)), factors


def _by_layer(networks: Sequence[tuple[LoraNetwork, float]]) -> dict[str, list[Contribution]]:
    layers: dict[str, list[Contribution]] = {}
    for network, weight in networks:
        for target, module in network.modules.items():
            layers.setdefault(target, []).append((module, weight))
    return layers


def _recipe(request: CombineRequest) -> dict[str, Any]:
    return {
        "type": "lora-combine",
        "inputs": [model.identity() | {"weight": weight} for model, weight in request.loras],
        "dim": request.rank.dim if request.rank is not None else None,
        "dynamic": request.rank.dynamic if request.rank is not None else None,
        "dynamic_value": request.rank.dynamic_value if request.rank is not None else None,
        "conv_dim": request.conv_rank.dim if request.conv_rank is not None else None,
        "method": "concatenate" if request.rank is None else "svd",
        "precision": request.precision,
    }


def describe_combination(request: CombineRequest) -> str:
    parts = " + ".join(f"{weight:g}·{model.stem}" for model, weight in request.loras)
    how = "ranks concatenated" if request.rank is None else f"SVD to dim {request.rank.label}"
    return f"LoRA {parts} ({how})"


def combine_loras(
    request: CombineRequest, progress: ProgressCallback | None = None
) -> CombineResult:
    """Combine LoRA files into one (see the module docstring)."""
    if not request.loras:
        raise ConfigError("no LoRA to combine", hint="give one or more LoRA[:WEIGHT]")
    check_output(request.output, [m for m, _ in request.loras], overwrite=request.overwrite)
    loras = tuple((model.hashed(progress), weight) for model, weight in request.loras)
    request = replace(request, loras=loras)
    networks = [(read_lora(model.path), weight) for model, weight in request.loras]
    family = network_family([n for n, _ in networks], request.family)
    modules: dict[str, LoraModule] = {}
    retained: dict[str, float] = {}
    layers = _by_layer(networks)
    for done, (target, contributions) in enumerate(layers.items(), start=1):
        modules[target], factors = _combine_layer(target, contributions, request)
        if factors is not None:
            retained[target] = factors.fro_retained
        report(progress, "combining", done, len(layers))
    recipe = _recipe(request)
    metadata = {
        "ss_training_comment": f"combined by brushwork: {describe_combination(request)}",
        RECIPE_KEY: json.dumps(recipe),
    }
    first = networks[0][0]
    write_lora(
        request.output,
        LoraNetwork(modules, family=family),
        family=family,
        metadata=metadata,
        dtype=precision_dtype(request.precision) or network_dtype(first),
        overwrite=request.overwrite,
        v_prediction=is_v_prediction(first),
    )
    ranks = {target: module.rank or 0 for target, module in modules.items()}
    result = CombineResult(request.output, family, len(modules), ranks, retained, recipe)
    if not request.sidecar:
        return result
    sidecar = write_sidecar(
        request.output, description=describe_combination(request), recipe=recipe, family=family
    )
    return replace(result, sidecar=sidecar)
