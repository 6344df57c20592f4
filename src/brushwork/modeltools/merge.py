"""Checkpoint merging with A1111's semantics, streamed tensor by tensor.

* weighted sum: ``A·(1−M) + B·M``; add difference: ``A + (B − C)·M`` (a1111.md 7.1);
* optional per-block M (`blocks`), a VAE baked in, the text encoder taken from A, B or merged,
  EMA and training-only keys pruned, the output cast to fp16 / bf16 / fp32.

As in A1111, only floating tensors whose key contains ``model`` are merged (CLIP's
``position_ids`` never); everything else (the DDPM buffers) is copied from A. Keys only in A are
kept from A; keys only in B are left out; a key B has and C lacks gets no difference (A's value).
Both lists are reported. An inpainting (9-channel) or InstructPix2Pix (8-channel) A merges its
first 4 input channels with a normal B. Checkpoints of different families are refused.

Each output tensor is computed in float32 from its inputs and rounded once to its output dtype:
A's dtype, or the precision asked for. Every output dtype and shape is known from the inputs'
headers, so a `.safetensors` output is written as it is computed (`streamwrite`): memory holds a
few tensors, whatever the model size. A `.ckpt` input is read whole (a pickle cannot be read in
parts); a `.ckpt` output is gathered, then written. Writes are atomic: a failure leaves nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError, IncompatibleModelError
from brushwork.core.kinds import BaseFamily, FileFormat
from brushwork.formats.checkpoint import (
    file_format_for,
    read_checkpoint_architecture,
    write_model_tensors,
)
from brushwork.formats.vae import read_vae, vae_to_ldm_state_dict
from brushwork.modeltools.blocks import BlockWeights, block_labels
from brushwork.modeltools.common import ModelInput, ProgressCallback, precision_dtype, report
from brushwork.modeltools.outputs import check_output, copy_config
from brushwork.modeltools.recipe import (
    MERGE_MODELS_KEY,
    MERGE_RECIPE_KEY,
    merge_models_entry,
    write_sidecar,
)
from brushwork.modeltools.streamwrite import TensorSpec, write_safetensors_streamed
from brushwork.modeltools.tensorsource import TensorSource

logger = logging.getLogger(__name__)

VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIXES = ("cond_stage_model.", "conditioner.embedders.")
WEIGHT_PREFIXES = ("model.diffusion_model.", VAE_PREFIX, *TEXT_ENCODER_PREFIXES, "model_ema.")
PRUNED = re.compile(r"^(model_ema\.|(first_stage_model\.)?loss\.|optimizer)")
INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"


class MergeMethod(StrEnum):
    WEIGHTED_SUM = "weighted-sum"
    ADD_DIFFERENCE = "add-difference"

    @property
    def a1111_name(self) -> str:
        return "Weighted sum" if self is MergeMethod.WEIGHTED_SUM else "Add difference"


class TextEncoderSource(StrEnum):
    A = "A"
    B = "B"
    MERGE = "merge"


@dataclass(frozen=True)
class MergeRequest:
    """One checkpoint merge. `output` is the file to write (see `locate` for names)."""

    primary: ModelInput  # A
    secondary: ModelInput  # B
    output: Path
    tertiary: ModelInput | None = None  # C, for add difference
    method: MergeMethod = MergeMethod.WEIGHTED_SUM
    alpha: float = 0.3  # M; A1111's default
    block_weights: tuple[float, ...] | None = None
    vae: ModelInput | None = None
    precision: str | None = None  # fp16 / bf16 / fp32; None keeps A's dtypes
    prune: bool = False
    text_encoder_from: TextEncoderSource = TextEncoderSource.MERGE
    overwrite: bool = False
    sidecar: bool = True


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote, and which keys did not take part."""

    path: Path
    family: BaseFamily
    merged: int  # tensors computed from two or three inputs
    copied: int  # tensors copied from A (not mergeable, or A only)
    from_secondary: int  # text-encoder tensors taken from B
    vae_baked: int
    only_in_primary: tuple[str, ...]
    only_in_secondary: tuple[str, ...]
    missing_in_tertiary: tuple[str, ...]
    pruned: tuple[str, ...]
    recipe: dict[str, Any]
    sidecar: Path | None = None
    config: Path | None = None  # the `<stem>.yaml` copied from A


@dataclass
class _KeyPlan:
    name: str
    action: str  # "merge", "a", "b", "vae"
    alpha: float
    spec: TensorSpec


@dataclass
class _Plan:
    keys: list[_KeyPlan] = field(default_factory=list)
    only_in_primary: list[str] = field(default_factory=list)
    missing_in_tertiary: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


@dataclass
class _Sources:
    a: TensorSource
    b: TensorSource
    c: TensorSource | None
    vae: dict[str, torch.Tensor]
    family: BaseFamily


# ---------------------------------------------------------------------------------------------
# checks and planning


def _family(source: TensorSource, model: ModelInput) -> BaseFamily:
    shapes = source.shapes() if source.format is FileFormat.PICKLE else None
    return read_checkpoint_architecture(model.path, shapes).family


def open_sources(request: MergeRequest) -> _Sources:
    """Open every input and refuse checkpoints of different families."""
    if request.method is MergeMethod.ADD_DIFFERENCE and request.tertiary is None:
        raise ConfigError("add difference needs a third model C", hint="give A B C")
    inputs = [request.primary, request.secondary]
    if request.method is MergeMethod.ADD_DIFFERENCE and request.tertiary is not None:
        inputs.append(request.tertiary)
    sources = [TensorSource.open(model.path) for model in inputs]
    families = [_family(source, model) for source, model in zip(sources, inputs, strict=True)]
    for model, family in zip(inputs[1:], families[1:], strict=True):
        if family is not families[0]:
            raise IncompatibleModelError(
                f"{inputs[0].name} is an {families[0].value.upper()} model and {model.name} is "
                f"an {family.value.upper()} model: checkpoints of different families cannot be "
                "merged",
                hint="merge models of the same base family (SD1 with SD1, SDXL with SDXL)",
            )
    vae = _vae_tensors(request.vae, families[0]) if request.vae is not None else {}
    third = sources[2] if len(sources) > 2 else None
    return _Sources(sources[0], sources[1], third, vae, families[0])


def _vae_tensors(vae: ModelInput, family: BaseFamily) -> dict[str, torch.Tensor]:
    vae_file = read_vae(vae.path, family=family)
    ldm = vae_to_ldm_state_dict(vae_file.state_dict, vae_file.config)
    return {VAE_PREFIX + k: v for k, v in ldm.items()}


def _mergeable(source: TensorSource, name: str) -> bool:
    return "model" in name and "position_ids" not in name and source.is_floating(name)


def _out_dtype(name: str, dtype: torch.dtype, wanted: torch.dtype | None) -> torch.dtype:
    if wanted is None or not dtype.is_floating_point or not name.startswith(WEIGHT_PREFIXES):
        return dtype
    return wanted


def _shape_problem(name: str, shape_a: tuple[int, ...], other: tuple[int, ...], who: str) -> None:
    if shape_a == other:
        return
    if name == INPUT_CONV and len(shape_a) == len(other) == 4:
        if shape_a[1] > other[1]:
            return  # an inpainting / instruct A with a normal B: the first channels merge
        raise IncompatibleModelError(
            f"{who} has {other[1]} UNet input channels and A has {shape_a[1]}",
            hint="put the inpainting (or InstructPix2Pix) model first, as A",
        )
    raise IncompatibleModelError(
        f"{name} is {list(shape_a)} in A and {list(other)} in {who}: the models have different "
        "architectures",
        hint="merge models of the same architecture",
    )


def _action(request: MergeRequest, sources: _Sources, name: str, plan: _Plan) -> str:
    a, b, c = sources.a, sources.b, sources.c
    if name in sources.vae:
        _shape_problem(name, a.shape(name), tuple(sources.vae[name].shape), "the VAE")
        return "vae"
    if name.startswith(TEXT_ENCODER_PREFIXES) and request.text_encoder_from is not (
        TextEncoderSource.MERGE
    ):
        if request.text_encoder_from is TextEncoderSource.B and name in b:
            _shape_problem(name, a.shape(name), b.shape(name), "B")
            return "b"
        return "a"
    if not _mergeable(a, name):
        return "a"
    if name not in b or not b.is_floating(name):
        plan.only_in_primary.append(name)
        return "a"
    _shape_problem(name, a.shape(name), b.shape(name), "B")
    if c is not None:
        if name not in c:
            plan.missing_in_tertiary.append(name)
            return "a"
        _shape_problem(name, a.shape(name), c.shape(name), "C")
    return "merge"


def plan_merge(request: MergeRequest, sources: _Sources, weights: BlockWeights) -> _Plan:
    """What happens to every key of A (and the VAE's keys A lacks)."""
    plan = _Plan()
    wanted = precision_dtype(request.precision)
    for name in sources.a.names:
        if request.prune and PRUNED.match(name):
            plan.pruned.append(name)
            continue
        action = _action(request, sources, name, plan)
        dtype = _out_dtype(name, sources.a.dtype(name), wanted)
        spec = TensorSpec(name, dtype, sources.a.shape(name))
        plan.keys.append(_KeyPlan(name, action, weights.alpha_for(name), spec))
    for name, tensor in sources.vae.items():
        if name not in sources.a:
            dtype = _out_dtype(name, tensor.dtype, wanted)
            spec = TensorSpec(name, dtype, tuple(tensor.shape))
            plan.keys.append(_KeyPlan(name, "vae", weights.base, spec))
    return plan


# ---------------------------------------------------------------------------------------------
# computing


def _combine(
    method: MergeMethod, alpha: float, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None
) -> torch.Tensor:
    """The merge formula in float32, in A1111's order of operations (inputs left untouched)."""
    a32 = a.to(torch.float32, copy=True)
    if method is MergeMethod.WEIGHTED_SUM:
        return a32.mul_(1.0 - alpha).add_(b.to(torch.float32, copy=True).mul_(alpha))
    assert c is not None
    difference = b.to(torch.float32, copy=True).sub_(c.to(torch.float32))
    return a32.add_(difference.mul_(alpha))


def _merged(request: MergeRequest, sources: _Sources, key: _KeyPlan) -> torch.Tensor:
    a = sources.a.read(key.name)
    b = sources.b.read(key.name)
    c = sources.c.read(key.name) if sources.c is not None else None
    if a.shape == b.shape:
        return _combine(request.method, key.alpha, a, b, c)
    channels = b.shape[1]  # inpainting A, normal B (checked by the plan)
    out = a.to(torch.float32)
    c_part = None if c is None else c[:, :channels]
    out[:, :channels] = _combine(request.method, key.alpha, a[:, :channels], b, c_part)
    return out


def _tensor(request: MergeRequest, sources: _Sources, key: _KeyPlan) -> torch.Tensor:
    if key.action == "merge":
        return _merged(request, sources, key)
    if key.action == "b":
        return sources.b.read(key.name)
    if key.action == "vae":
        return sources.vae[key.name]
    return sources.a.read(key.name)


def _stream(
    request: MergeRequest, sources: _Sources, plan: _Plan, progress: ProgressCallback | None
) -> Iterator[tuple[str, torch.Tensor]]:
    total = len(plan.keys)
    for done, key in enumerate(plan.keys, start=1):
        tensor = _tensor(request, sources, key).to(key.spec.dtype)
        for source in (sources.a, sources.b, sources.c):
            if source is not None:
                source.release(key.name)
        yield key.name, tensor
        report(progress, "merging", done, total)


# ---------------------------------------------------------------------------------------------
# recipe and the whole merge


def merge_recipe(
    request: MergeRequest, weights: BlockWeights | None, inpainting: int
) -> dict[str, Any]:
    """A1111's `sd_merge_recipe` fields, with brushwork's extras."""
    third = request.tertiary if request.method is MergeMethod.ADD_DIFFERENCE else None
    return {
        "type": "brushwork",
        "primary_model_hash": request.primary.sha256,
        "secondary_model_hash": request.secondary.sha256,
        "tertiary_model_hash": third.sha256 if third is not None else None,
        "interp_method": request.method.a1111_name,
        "multiplier": request.alpha,
        "block_weights": weights.as_list() if weights is not None else None,
        "save_as_half": request.precision == "fp16",
        "precision": request.precision,
        "custom_name": request.output.stem,
        "bake_in_vae": request.vae.name if request.vae is not None else None,
        "bake_in_vae_hash": request.vae.sha256 if request.vae is not None else None,
        "discard_weights": PRUNED.pattern if request.prune else "",
        "text_encoder_from": str(request.text_encoder_from),
        "is_inpainting": inpainting == 9,
        "is_instruct_pix2pix": inpainting == 8,
    }


def _metadata(request: MergeRequest, sources: _Sources, recipe: dict[str, Any]) -> dict[str, str]:
    models: dict[str, Any] = {}
    pairs = [(request.primary, sources.a), (request.secondary, sources.b)]
    if sources.c is not None and request.tertiary is not None:
        pairs.append((request.tertiary, sources.c))
    for model, source in pairs:
        models.update(merge_models_entry(model.identity(), source.metadata))
    return {
        "format": "pt",
        MERGE_RECIPE_KEY: json.dumps(recipe),
        MERGE_MODELS_KEY: json.dumps(models),
    }


def _hashed(request: MergeRequest, progress: ProgressCallback | None) -> MergeRequest:
    """The request with every input's SHA-256 (the recipe records them)."""
    third = request.tertiary if request.method is MergeMethod.ADD_DIFFERENCE else None
    return replace(
        request,
        primary=request.primary.hashed(progress),
        secondary=request.secondary.hashed(progress),
        tertiary=third.hashed(progress) if third is not None else None,
        vae=request.vae.hashed(progress) if request.vae is not None else None,
    )


def _block_weights(request: MergeRequest, sources: _Sources) -> BlockWeights | None:
    if request.block_weights is None:
        return None
    labels = block_labels(sources.a.names)
    return BlockWeights.from_values(request.block_weights, labels, request.alpha)


def _write(
    request: MergeRequest,
    sources: _Sources,
    plan: _Plan,
    metadata: dict[str, str],
    progress: ProgressCallback | None,
) -> None:
    specs = [key.spec for key in plan.keys]
    stream = _stream(request, sources, plan, progress)
    if file_format_for(request.output) is FileFormat.SAFETENSORS:
        write_safetensors_streamed(
            request.output, specs, stream, metadata, overwrite=request.overwrite
        )
    else:
        write_model_tensors(request.output, dict(stream), metadata, overwrite=request.overwrite)


def merge_checkpoints(
    request: MergeRequest, progress: ProgressCallback | None = None
) -> MergeResult:
    """Merge two or three checkpoints into `request.output` (see the module docstring)."""
    inputs = [request.primary, request.secondary, request.tertiary, request.vae]
    check_output(request.output, inputs, overwrite=request.overwrite)
    request = _hashed(request, progress)
    sources = open_sources(request)
    weights = _block_weights(request, sources)
    plan = plan_merge(request, sources, weights or BlockWeights(request.alpha, {}))
    channels = sources.a.shape(INPUT_CONV)[1] if INPUT_CONV in sources.a else 4
    recipe = merge_recipe(request, weights, channels)
    _write(request, sources, plan, _metadata(request, sources, recipe), progress)
    config = copy_config(request.primary.path, request.output)
    only_b = sorted(n for n in sources.b.names if n not in sources.a and _mergeable(sources.b, n))
    for label, names in (("only in A (kept from A)", plan.only_in_primary), ("only in B", only_b)):
        if names:
            logger.warning("%d keys %s, e.g. %s", len(names), label, names[0])
    result = MergeResult(
        path=request.output,
        family=sources.family,
        merged=sum(key.action == "merge" for key in plan.keys),
        copied=sum(key.action == "a" for key in plan.keys),
        from_secondary=sum(key.action == "b" for key in plan.keys),
        vae_baked=sum(key.action == "vae" for key in plan.keys),
        only_in_primary=tuple(plan.only_in_primary),
        only_in_secondary=tuple(only_b),
        missing_in_tertiary=tuple(plan.missing_in_tertiary),
        pruned=tuple(plan.pruned),
        recipe=recipe,
        config=config,
    )
    if not request.sidecar:
        return result
    sidecar = write_sidecar(
        request.output,
        description=describe_merge(request),
        recipe=recipe | {"inputs": _inputs(request)},
        family=sources.family,
    )
    return replace(result, sidecar=sidecar)


def _inputs(request: MergeRequest) -> dict[str, Any]:
    named = {"A": request.primary, "B": request.secondary, "VAE": request.vae}
    if request.method is MergeMethod.ADD_DIFFERENCE:
        named["C"] = request.tertiary
    return {role: model.identity() for role, model in named.items() if model is not None}


def default_merge_name(
    method: MergeMethod, alpha: float, a: str, b: str, c: str | None = None
) -> str:
    """A1111's default merge name: ``0.7(A) + 0.3(B)``, ``A + 0.5(B - C)``."""
    if method is MergeMethod.WEIGHTED_SUM:
        return f"{round(1 - alpha, 2)}({a}) + {round(alpha, 2)}({b})"
    return f"{a} + {alpha}({b} - {c or 'C'})"


def describe_merge(request: MergeRequest) -> str:
    """The merge in one line: A1111's name, then block weights and a baked VAE."""
    third = request.tertiary.stem if request.tertiary is not None else None
    text = default_merge_name(
        request.method, request.alpha, request.primary.stem, request.secondary.stem, third
    )
    extras = [f"block weights {list(request.block_weights)}"] if request.block_weights else []
    if request.vae is not None:
        extras.append(f"VAE {request.vae.name} baked in")
    return text + (f"; {', '.join(extras)}" if extras else "")
