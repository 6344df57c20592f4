"""LoRA extraction: the SVD of a fine-tune's weight differences from its base (training.md 5.1).

For every layer kohya's LoRA would patch (`targets`), ΔW = W_tuned − W_base (float32) is
factorised at rank `dim` (3x3 convolutions at `conv_dim`, only when given), or per layer by a
dynamic method (`lowrank`). Each module's alpha is its rank, so its scale is 1 and
``up @ down`` is ΔW's best low-rank approximation as it is. A text encoder whose largest
difference is below `min_diff` (kohya: 0.01) is the base's: it is left out, and the result says so.
Layers whose difference is exactly zero are left out too. kohya's outlier clamp
(`clamp_quantile`, 0.99 in sd-scripts) is off unless asked for: it trades exactness for range.

The UNet is streamed: each layer's two weights are read from the files, differenced, factorised
and dropped, so memory holds the LoRA and two layers (the text encoders are read whole: they
are small). The output is a kohya LoRA with `ss_*` metadata naming the base model and the tuned
one (their sha256), and a `brushwork_recipe`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import IncompatibleModelError
from brushwork.core.kinds import BaseFamily, FileFormat
from brushwork.formats.architecture import ModelArchitecture
from brushwork.formats.checkpoint import checkpoint_from_ldm, read_checkpoint_architecture
from brushwork.formats.lora import LoraModule, LoraNetwork, write_lora
from brushwork.modeltools.common import ModelInput, ProgressCallback, precision_dtype, report
from brushwork.modeltools.lowrank import RankChoice, factorize, is_conv_kernel, lora_module
from brushwork.modeltools.merge import TEXT_ENCODER_PREFIXES
from brushwork.modeltools.outputs import check_output
from brushwork.modeltools.recipe import RECIPE_KEY, write_sidecar
from brushwork.modeltools.targets import LoraTarget, text_encoder_targets, unet_targets
from brushwork.modeltools.tensorsource import TensorSource

logger = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
DEFAULT_MIN_DIFF = 0.01


@dataclass(frozen=True)
class ExtractRequest:
    tuned: ModelInput
    base: ModelInput
    output: Path
    rank: RankChoice
    conv_rank: RankChoice | None = None  # None: no 3x3 convolutions (kohya's default)
    clamp_quantile: float | None = None
    min_diff: float = DEFAULT_MIN_DIFF
    precision: str = "fp16"
    overwrite: bool = False
    sidecar: bool = True


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    family: BaseFamily
    modules: dict[str, int]  # per component
    ranks: dict[str, int]  # per target
    fro_retained: dict[str, float]  # per target
    skipped_text_encoders: dict[str, float]  # name -> its largest difference
    unchanged_layers: tuple[str, ...]  # exactly zero difference
    recipe: dict[str, Any] = field(default_factory=dict)
    sidecar: Path | None = None


@dataclass
class _Extraction:
    modules: dict[str, LoraModule] = field(default_factory=dict)
    fro: dict[str, float] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, float] = field(default_factory=dict)


def _architecture(source: TensorSource, model: ModelInput) -> ModelArchitecture:
    shapes = source.shapes() if source.format is FileFormat.PICKLE else None
    return read_checkpoint_architecture(model.path, shapes)


def _check_same(tuned: ModelArchitecture, base: ModelArchitecture, request: ExtractRequest) -> None:
    if tuned.family is not base.family:
        raise IncompatibleModelError(
            f"{request.tuned.name} is {tuned.family.value.upper()} and {request.base.name} is "
            f"{base.family.value.upper()}: a LoRA can only be extracted against its own base",
            hint="give the model the fine-tune was trained from as BASE",
        )
    if tuned.unet != base.unet or tuned.text_encoders != base.text_encoders:
        raise IncompatibleModelError(
            f"{request.tuned.name} and {request.base.name} have different architectures",
            hint="give the model the fine-tune was trained from as BASE",
        )


def unet_ldm_names(source: TensorSource, architecture: ModelArchitecture) -> dict[str, str]:
    """diffusers UNet key -> the checkpoint's LDM key, from the file's names alone.

    `checkpoint_from_ldm` renames UNet keys without touching the tensors, so splitting
    placeholder tensors on the `meta` device and matching them by identity gives the map.
    """
    placeholders = {
        name: torch.empty(source.shape(name), device="meta")
        for name in source.names
        if name.startswith(UNET_PREFIX)
    }
    split = checkpoint_from_ldm(placeholders, architecture, source=source.path)
    by_identity = {id(tensor): name for name, tensor in placeholders.items()}
    return {key: by_identity[id(tensor)] for key, tensor in split.unet.items()}


def _text_encoders(
    source: TensorSource, architecture: ModelArchitecture
) -> dict[str, dict[str, torch.Tensor]]:
    names = [n for n in source.names if n.startswith(TEXT_ENCODER_PREFIXES)]
    tensors = {name: source.read(name) for name in names}
    return checkpoint_from_ldm(tensors, architecture, source=source.path).text_encoders


def _factor_layer(
    target: LoraTarget, delta: torch.Tensor, request: ExtractRequest, out: _Extraction
) -> None:
    if not bool(delta.any()):
        out.unchanged.append(target.target)
        return
    choice = request.conv_rank if is_conv_kernel(target.weight_shape) else request.rank
    assert choice is not None  # 3x3 convolutions are targets only with a conv rank
    factors = factorize(
        delta.reshape(delta.shape[0], -1), choice, clamp_quantile=request.clamp_quantile
    )
    module = lora_module(target.target, factors, target.weight_shape, float(factors.rank))
    out.modules[target.target] = module
    out.fro[target.target] = factors.fro_retained


def _extract_text_encoders(
    request: ExtractRequest,
    sources: tuple[TensorSource, TensorSource],
    architecture: ModelArchitecture,
    out: _Extraction,
) -> None:
    tuned, base = (_text_encoders(source, architecture) for source in sources)
    for name, targets in text_encoder_targets(architecture).items():
        deltas = {
            t.target: tuned[name][t.weight_key].float() - base[name][t.weight_key].float()
            for t in targets
        }
        largest = max((float(d.abs().max()) for d in deltas.values()), default=0.0)
        if largest <= request.min_diff:
            logger.info(
                "%s is the base's (largest difference %.3g <= %g): extracting without it",
                name,
                largest,
                request.min_diff,
            )
            out.skipped[name] = largest
            continue
        for target in targets:
            _factor_layer(target, deltas.pop(target.target), request, out)


def _extract_unet(
    request: ExtractRequest,
    sources: tuple[TensorSource, TensorSource],
    architecture: ModelArchitecture,
    out: _Extraction,
    progress: ProgressCallback | None,
) -> None:
    tuned, base = sources
    names = unet_ldm_names(tuned, architecture)
    targets = unet_targets(architecture, with_convs=request.conv_rank is not None)
    for done, target in enumerate(targets, start=1):
        name = names[target.weight_key]
        delta = tuned.read(name, torch.float32) - base.read(name, torch.float32)
        _factor_layer(target, delta, request, out)
        report(progress, "extracting", done, len(targets))


def _metadata(request: ExtractRequest, recipe: Mapping[str, Any]) -> dict[str, str]:
    base, tuned = request.base.identity(), request.tuned.identity()
    comment = (
        f"extracted by brushwork from {tuned['name']} (sha256 {tuned['sha256']}) minus "
        f"{base['name']} (sha256 {base['sha256']}), dim {request.rank.label}"
    )
    return {
        "ss_sd_model_name": str(base["name"]),
        "ss_sd_model_hash": str(base["legacy_hash"]),
        "ss_new_sd_model_hash": str(base["sha256"]),
        "ss_training_comment": comment,
        RECIPE_KEY: json.dumps(dict(recipe)),
    }


def _recipe(request: ExtractRequest, out: _Extraction) -> dict[str, Any]:
    conv = request.conv_rank
    return {
        "type": "lora-extract",
        "tuned": request.tuned.identity(),
        "base": request.base.identity(),
        "dim": request.rank.dim,
        "conv_dim": conv.dim if conv is not None else None,
        "dynamic": request.rank.dynamic,
        "dynamic_value": request.rank.dynamic_value,
        "clamp_quantile": request.clamp_quantile,
        "min_diff": request.min_diff,
        "precision": request.precision,
        "skipped_text_encoders": dict(out.skipped),
    }


def extract_lora(
    request: ExtractRequest, progress: ProgressCallback | None = None
) -> ExtractResult:
    """Extract a LoRA (see the module docstring) and write it to `request.output`."""
    check_output(request.output, [request.tuned, request.base], overwrite=request.overwrite)
    request = replace(
        request, tuned=request.tuned.hashed(progress), base=request.base.hashed(progress)
    )
    sources = (TensorSource.open(request.tuned.path), TensorSource.open(request.base.path))
    architecture = _architecture(sources[0], request.tuned)
    _check_same(architecture, _architecture(sources[1], request.base), request)
    out = _Extraction()
    _extract_text_encoders(request, sources, architecture, out)
    _extract_unet(request, sources, architecture, out, progress)
    if not out.modules:
        raise IncompatibleModelError(
            f"{request.tuned.name} and {request.base.name} have the same weights: "
            "there is nothing to extract"
        )
    recipe = _recipe(request, out)
    write_lora(
        request.output,
        LoraNetwork(dict(out.modules), family=architecture.family),
        family=architecture.family,
        metadata=_metadata(request, recipe),
        dtype=precision_dtype(request.precision),
        overwrite=request.overwrite,
        unet_config=architecture.unet,
        v_prediction=architecture.prediction_type == "v_prediction",
    )
    result = _result(request, architecture.family, out, recipe)
    if not request.sidecar:
        return result
    description = (
        f"LoRA extracted from {request.tuned.name} against {request.base.name}, "
        f"dim {request.rank.label}"
    )
    sidecar = write_sidecar(
        request.output, description=description, recipe=recipe, family=architecture.family
    )
    return replace(result, sidecar=sidecar)


def _result(
    request: ExtractRequest, family: BaseFamily, out: _Extraction, recipe: dict[str, Any]
) -> ExtractResult:
    per_component: dict[str, int] = {}
    for module in out.modules.values():
        per_component[module.component] = per_component.get(module.component, 0) + 1
    return ExtractResult(
        path=request.output,
        family=family,
        modules=per_component,
        ranks={target: module.rank or 0 for target, module in out.modules.items()},
        fro_retained=dict(out.fro),
        skipped_text_encoders=dict(out.skipped),
        unchanged_layers=tuple(out.unchanged),
        recipe=recipe,
    )
