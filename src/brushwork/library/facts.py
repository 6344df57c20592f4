"""What a model file's contents say about it, beyond its kind: precision, size in parameters,
a baked-in VAE or EMA weights (checkpoints), and the training metadata kohya sd-scripts and the
modelspec standard write into safetensors ``__metadata__``.

Facts come from a file's `formats.tensor_view`: a safetensors header (no tensor is read) or
the tensors of a pickle the guarded loader has opened.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from brushwork.formats.summary import has_baked_vae, has_ema_weights, metadata_float, top_tags
from brushwork.formats.tensor_view import TensorView

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


def _summarise(entries: Iterable[tuple[str, str | None, int]]) -> TensorFacts:
    """Facts from (key, float dtype label or None, element count) triples."""
    per_dtype: Counter[str] = Counter()
    keys: list[str] = []
    parameter_count = 0
    for key, dtype, numel in entries:
        keys.append(key)
        parameter_count += numel
        if dtype is not None:
            per_dtype[dtype] += numel
    precision = per_dtype.most_common(1)[0][0] if per_dtype else None
    return TensorFacts(
        len(keys),
        parameter_count,
        precision,
        dict(per_dtype),
        baked_vae=has_baked_vae(keys),
        ema=has_ema_weights(keys),
    )


def tensor_facts(view: TensorView) -> TensorFacts:
    """Tensor facts from a file's tensor view (a safetensors header, or a pickle's tensors)."""
    return _summarise(
        (name, _SAFETENSORS_DTYPES.get(view.dtypes[name]), math.prod(shape))
        for name, shape in view.shapes.items()
    )


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _text(value: str | None) -> str | None:
    return value if value not in (None, "", "None") else None


def training_facts(metadata: Mapping[str, str]) -> TrainingFacts:
    """Parse kohya ``ss_*`` and ``modelspec.*`` metadata; bad values are left out, not fatal."""
    modelspec = {
        key.removeprefix("modelspec."): value
        for key, value in metadata.items()
        if key.startswith("modelspec.") and key != "modelspec.thumbnail"
    }
    return TrainingFacts(
        output_name=_text(metadata.get("ss_output_name")),
        network_module=_text(metadata.get("ss_network_module")),
        network_dim=_int(metadata.get("ss_network_dim")),
        network_alpha=metadata_float(metadata.get("ss_network_alpha")),
        base_model_version=_text(metadata.get("ss_base_model_version")),
        resolution=_text(metadata.get("ss_resolution")),
        num_epochs=_int(metadata.get("ss_num_epochs")),
        epoch=_int(metadata.get("ss_epoch")),
        training_model=_text(metadata.get("ss_sd_model_name")),
        tensor_hash=_text(metadata.get("sshs_model_hash")),
        top_tags=tuple(top_tags(metadata, KEPT_TAG_COUNT)),
        modelspec=modelspec,
    )
