"""What a model file's contents say about it, beyond its kind: precision, size in parameters,
a baked-in VAE or EMA weights (checkpoints), and the training metadata kohya sd-scripts and the
modelspec standard write into safetensors ``__metadata__``.

Facts come from a safetensors header (no tensor is read) or from the tensors of a pickle that
the guarded loader has already opened.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from brushwork.formats.safeio import SafetensorsHeader

logger = logging.getLogger(__name__)

SUGGESTED_TAG_COUNT = 5  # most frequent training tags offered as trigger words
KEPT_TAG_COUNT = 20  # most frequent training tags kept for `models show`

_SAFETENSORS_DTYPES = {
    "F16": "fp16",
    "BF16": "bf16",
    "F32": "fp32",
    "F64": "fp64",
    "F8_E4M3": "fp8_e4m3",
    "F8_E5M2": "fp8_e5m2",
}
_TORCH_DTYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
}
_EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")


@dataclass(frozen=True)
class TensorFacts:
    """Counts and precision of a file's tensors, and what a checkpoint carries besides its UNet."""

    tensor_count: int
    parameter_count: int
    precision: str | None  # the float dtype holding most parameters: fp16, bf16, fp32, ...
    dtypes: dict[str, int] = field(default_factory=dict)  # float dtype -> parameters in it
    baked_vae: bool = False  # LDM `first_stage_model.*` keys present
    ema: bool = False  # EMA weights (`model_ema.*`) present


@dataclass(frozen=True)
class TrainingFacts:
    """kohya sd-scripts (`ss_*`) and modelspec (`modelspec.*`) metadata, parsed."""

    output_name: str | None = None
    network_module: str | None = None
    network_dim: int | None = None
    network_alpha: float | None = None
    base_model_version: str | None = None
    resolution: str | None = None
    num_epochs: int | None = None
    epoch: int | None = None
    training_model: str | None = None  # ss_sd_model_name: the checkpoint it was trained on
    tensor_hash: str | None = None  # sshs_model_hash, the addnet hash kohya recorded
    top_tags: tuple[tuple[str, int], ...] = ()  # (tag, count), most frequent first
    modelspec: dict[str, str] = field(default_factory=dict)  # without the thumbnail

    @property
    def suggested_triggers(self) -> tuple[str, ...]:
        """The most frequent training tags, the usual guess at a LoRA's trigger words."""
        return tuple(tag for tag, _count in self.top_tags[:SUGGESTED_TAG_COUNT])


def _summarise(
    entries: Iterable[tuple[str, str | None, int]],
) -> TensorFacts:
    """Facts from (key, float dtype label or None, element count) triples."""
    per_dtype: Counter[str] = Counter()
    tensor_count = parameter_count = 0
    baked_vae = ema = False
    for key, dtype, numel in entries:
        tensor_count += 1
        parameter_count += numel
        if dtype is not None:
            per_dtype[dtype] += numel
        baked_vae = baked_vae or key.startswith("first_stage_model.")
        ema = ema or (key.startswith("model_ema.") and key not in _EMA_BOOKKEEPING)
    precision = per_dtype.most_common(1)[0][0] if per_dtype else None
    return TensorFacts(tensor_count, parameter_count, precision, dict(per_dtype), baked_vae, ema)


def header_tensor_facts(header: SafetensorsHeader) -> TensorFacts:
    """Tensor facts from a safetensors header alone."""
    return _summarise(
        (name, _SAFETENSORS_DTYPES.get(info.dtype), info.numel)
        for name, info in header.tensors.items()
    )


def pickle_tensor_facts(tensors: Mapping[str, torch.Tensor]) -> TensorFacts:
    """Tensor facts from the flat tensors of an unpickled file (`formats.pickle_contents`)."""
    return _summarise(
        (key, _TORCH_DTYPES.get(tensor.dtype), tensor.numel()) for key, tensor in tensors.items()
    )


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _text(value: str | None) -> str | None:
    return value if value not in (None, "", "None") else None


def _tag_counts(metadata: Mapping[str, str]) -> Counter[str]:
    """Tag counts summed over datasets: ``ss_tag_frequency``, or each ``ss_datasets`` entry."""
    frequency: list[Any] = []
    try:
        if "ss_tag_frequency" in metadata:
            frequency.append(json.loads(metadata["ss_tag_frequency"]))
        elif "ss_datasets" in metadata:
            datasets = json.loads(metadata["ss_datasets"])
            if isinstance(datasets, list):
                frequency += [d.get("tag_frequency") for d in datasets if isinstance(d, dict)]
    except ValueError:
        logger.debug("unparsable tag frequency metadata")
    counts: Counter[str] = Counter()
    for per_folder in frequency:
        if not isinstance(per_folder, dict):
            continue
        for tags in per_folder.values():
            if not isinstance(tags, dict):
                continue
            for tag, count in tags.items():
                if isinstance(tag, str) and tag.strip() and isinstance(count, int | float):
                    counts[tag.strip()] += int(count)
    return counts


def training_facts(metadata: Mapping[str, str]) -> TrainingFacts:
    """Parse kohya ``ss_*`` and ``modelspec.*`` metadata; bad values are left out, not fatal."""
    counts = _tag_counts(metadata)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:KEPT_TAG_COUNT]
    modelspec = {
        key.removeprefix("modelspec."): value
        for key, value in metadata.items()
        if key.startswith("modelspec.") and key != "modelspec.thumbnail"
    }
    return TrainingFacts(
        output_name=_text(metadata.get("ss_output_name")),
        network_module=_text(metadata.get("ss_network_module")),
        network_dim=_int(metadata.get("ss_network_dim")),
        network_alpha=_float(metadata.get("ss_network_alpha")),
        base_model_version=_text(metadata.get("ss_base_model_version")),
        resolution=_text(metadata.get("ss_resolution")),
        num_epochs=_int(metadata.get("ss_num_epochs")),
        epoch=_int(metadata.get("ss_epoch")),
        training_model=_text(metadata.get("ss_sd_model_name")),
        tensor_hash=_text(metadata.get("sshs_model_hash")),
        top_tags=tuple(ranked),
        modelspec=modelspec,
    )
