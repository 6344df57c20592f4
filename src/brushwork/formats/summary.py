"""What `brushwork inspect` (and the server) show about a model file, as typed data.

`summarize_file(path)` identifies the file (`detect`) and adds counts, precision and a
kind-specific summary, all from its `tensor_view`. Safetensors files are summarised from their header; the only tensor
values ever read are a LoRA's `alpha` scalars. Pickles go through the guarded unpickler.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brushwork.core.kinds import ModelKind
from brushwork.formats import lora_keys
from brushwork.formats._ldm_keys import EMA_BOOKKEEPING, EMA_PREFIX, UNET_PREFIX, VAE_PREFIX
from brushwork.formats.detect import Detection, detect_view, hypernetwork_widths
from brushwork.formats.tensor_view import TensorView, parameter_count, read_tensor_view

logger = logging.getLogger(__name__)

TOP_TAGS = 10


@dataclass(frozen=True)
class CheckpointSummary:
    has_ema: bool
    has_vae: bool
    text_encoders: list[dict[str, Any]]
    unet_in_channels: int | None


@dataclass(frozen=True)
class VaeSummary:
    latent_channels: int | None
    a1111_loadable: bool


@dataclass(frozen=True)
class LoraSummary:
    modules: int
    unet_modules: int
    text_encoder_modules: int
    module_types: dict[str, int]
    dim: int | None  # the most common rank
    dims: list[int]
    alpha: float | None  # None: alpha = dim (scale 1), as kohya reads files without alpha
    alphas: list[float]
    alpha_source: str | None  # "tensors" or "metadata"
    output_name: str | None
    top_tags: list[tuple[str, int]]
    bundled_embeddings: list[str]


@dataclass(frozen=True)
class EmbeddingSummary:
    vectors: int
    width: int
    parts: dict[str, int]  # SDXL: {"clip_l": 768, "clip_g": 1280}
    name: str | None
    step: int | None
    trained_on: str | None


@dataclass(frozen=True)
class HypernetworkSummary:
    widths: list[int]
    layer_structure: list[float] | None
    activation: str | None
    layer_norm: bool | None
    dropout: bool | None
    name: str | None
    step: int | None


KindSummary = CheckpointSummary | VaeSummary | LoraSummary | EmbeddingSummary | HypernetworkSummary


@dataclass(frozen=True)
class ModelSummary:
    path: Path
    size: int
    detection: Detection
    tensors: int
    parameters: int
    precision: dict[str, int]  # dtype name -> tensor count
    metadata: dict[str, str] = field(default_factory=dict)
    details: KindSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the `inspect --json` object)."""
        return {
            "path": str(self.path),
            "kind": str(self.detection.kind),
            "base": None if self.detection.base is None else str(self.detection.base),
            "format": str(self.detection.format),
            "layout": self.detection.layout,
            "reasons": list(self.detection.reasons),
            "size": self.size,
            "tensors": self.tensors,
            "parameters": self.parameters,
            "precision": dict(self.precision),
            "metadata": dict(self.metadata),
            "summary": asdict(self.details) if self.details is not None else {},
        }


# ---------------------------------------------------------------------------------------------
# reading


def summarize_file(path: Path | str) -> ModelSummary:
    """Identify and summarise a model file. Raises the safeio/detect errors for bad files."""
    path = Path(path)
    view = read_tensor_view(path)
    detection = detect_view(view, path)
    return ModelSummary(
        path=path,
        size=path.stat().st_size,
        detection=detection,
        tensors=len(view.shapes),
        parameters=parameter_count(view.shapes.values()),
        precision=dict(Counter(view.dtypes.values()).most_common()),
        metadata=view.metadata,
        details=SUMMARIZERS[detection.kind](view, detection),
    )


# ---------------------------------------------------------------------------------------------
# per kind

# (prefix, architecture, key holding the hidden width, relative to the prefix)
TEXT_ENCODER_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("cond_stage_model.transformer.", "CLIP", "text_model.final_layer_norm.weight"),
    ("cond_stage_model.model.", "OpenCLIP", "ln_final.weight"),
    ("conditioner.embedders.0.transformer.", "CLIP", "text_model.final_layer_norm.weight"),
    ("conditioner.embedders.0.model.", "OpenCLIP", "ln_final.weight"),
    ("conditioner.embedders.1.model.", "OpenCLIP", "ln_final.weight"),
)
TEXT_ENCODER_NAMES: dict[tuple[str, int], str] = {
    ("CLIP", 768): "CLIP ViT-L/14",
    ("OpenCLIP", 1024): "OpenCLIP ViT-H/14",
    ("OpenCLIP", 1280): "OpenCLIP ViT-bigG/14",
}


def _text_encoders(shapes: Mapping[str, tuple[int, ...]]) -> list[dict[str, Any]]:
    found = []
    for prefix, architecture, width_key in TEXT_ENCODER_PREFIXES:
        if not any(key.startswith(prefix) for key in shapes):
            continue
        shape = shapes.get(prefix + width_key) or shapes.get(prefix + width_key.split(".", 1)[-1])
        width = shape[0] if shape else None
        name = TEXT_ENCODER_NAMES.get((architecture, width or 0), f"{architecture} ({width} wide)")
        found.append({"prefix": prefix.rstrip("."), "name": name, "width": width})
    return found


def has_ema_weights(keys: Iterable[str]) -> bool:
    """Whether a checkpoint carries EMA weights (`model_ema.*`, not only its counters)."""
    return any(k.startswith(EMA_PREFIX) and k not in EMA_BOOKKEEPING for k in keys)


def has_baked_vae(keys: Iterable[str]) -> bool:
    """Whether a checkpoint carries a VAE (`first_stage_model.*`)."""
    return any(k.startswith(VAE_PREFIX) for k in keys)


def _checkpoint(view: TensorView, detection: Detection) -> CheckpointSummary:
    shapes = view.shapes
    in_conv = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight", ())
    return CheckpointSummary(
        has_ema=has_ema_weights(shapes),
        has_vae=has_baked_vae(shapes),
        text_encoders=_text_encoders(shapes),
        unet_in_channels=in_conv[1] if len(in_conv) == 4 else None,
    )


def _vae(view: TensorView, detection: Detection) -> VaeSummary:
    post = next((s for k, s in view.shapes.items() if k.endswith("post_quant_conv.weight")), ())
    return VaeSummary(
        latent_channels=post[0] if post else None, a1111_loadable=detection.layout == "ldm"
    )


def metadata_float(text: str | None) -> float | None:
    """A number from a metadata value (`ss_network_alpha`, ...); None when absent or not one."""
    try:
        return None if text in (None, "", "None") else float(str(text))
    except ValueError:
        return None


def tag_counts(metadata: Mapping[str, str]) -> Counter[str]:
    """Training tag counts summed over a kohya LoRA's datasets, as A1111 shows them.

    From `ss_tag_frequency` (folder -> tag -> count), else from each `ss_datasets` entry's
    `tag_frequency`; tags are stripped, and blank tags or non-numeric counts are left out.
    """
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
        for tags in per_folder.values() if isinstance(per_folder, dict) else ():
            for tag, count in tags.items() if isinstance(tags, dict) else ():
                if isinstance(tag, str) and tag.strip() and isinstance(count, int | float):
                    counts[tag.strip()] += int(count)
    return counts


def top_tags(metadata: Mapping[str, str], count: int = TOP_TAGS) -> list[tuple[str, int]]:
    """The most frequent training tags (see `tag_counts`), most frequent first, then by name."""
    ranked = sorted(tag_counts(metadata).items(), key=lambda item: (-item[1], item[0]))
    return ranked[:count]


def _lora_alphas(view: TensorView) -> tuple[list[float], str | None]:
    keys = lora_keys.alpha_keys(view.shapes)
    if keys:
        values = view.read_values(keys)
        return sorted({round(float(v.float().item()), 6) for v in values.values()}), "tensors"
    alpha = metadata_float(view.metadata.get("ss_network_alpha"))
    return ([alpha], "metadata") if alpha is not None else ([], None)


def _lora(view: TensorView, detection: Detection) -> LoraSummary:
    modules = lora_keys.group_modules(view.shapes)
    ranks = Counter(r for parts in modules.values() if (r := lora_keys.rank(parts)) is not None)
    text_encoder = [m for m in modules if m.startswith(("lora_te", "text_encoder"))]
    alphas, alpha_source = _lora_alphas(view)
    bundled = {k.split(".")[1] for k in view.shapes if k.startswith(lora_keys.BUNDLE_PREFIX)}
    dim = ranks.most_common(1)[0][0] if ranks else None
    return LoraSummary(
        modules=len(modules),
        unet_modules=len(modules) - len(text_encoder),
        text_encoder_modules=len(text_encoder),
        module_types=dict(Counter(lora_keys.module_type(p) for p in modules.values())),
        dim=dim,
        dims=sorted(ranks),
        alpha=alphas[0] if len(alphas) == 1 else None,
        alphas=alphas,
        alpha_source=alpha_source,
        output_name=view.metadata.get("ss_output_name"),
        top_tags=top_tags(view.metadata),
        bundled_embeddings=sorted(bundled),
    )


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _embedding(view: TensorView, detection: Detection) -> EmbeddingSummary:
    shapes = view.shapes
    if detection.layout == "sdxl":
        parts = {name: shapes[name][-1] for name in ("clip_l", "clip_g")}
        vectors = shapes["clip_g"][0] if len(shapes["clip_g"]) == 2 else 1
    else:
        (shape,) = shapes.values()
        parts, vectors = {}, shape[0] if len(shape) == 2 else 1
    fields = view.fields
    return EmbeddingSummary(
        vectors=vectors,
        width=sum(parts.values()) if parts else next(iter(shapes.values()))[-1],
        parts=parts,
        name=_optional_str(fields.get("name")),
        step=_optional_int(fields.get("step")),
        trained_on=_optional_str(fields.get("sd_checkpoint_name")),
    )


def _hypernetwork(view: TensorView, detection: Detection) -> HypernetworkSummary:
    fields = view.fields
    structure = fields.get("layer_structure")
    layer_structure = (
        [float(x) for x in structure]
        if isinstance(structure, list | tuple)
        and all(isinstance(x, int | float) for x in structure)
        else None
    )
    layer_norm, dropout = fields.get("is_layer_norm"), fields.get("use_dropout")
    return HypernetworkSummary(
        widths=hypernetwork_widths(view.shapes),
        layer_structure=layer_structure,
        activation=_optional_str(fields.get("activation_func")),
        layer_norm=layer_norm if isinstance(layer_norm, bool) else None,
        dropout=dropout if isinstance(dropout, bool) else None,
        name=_optional_str(fields.get("name")),
        step=_optional_int(fields.get("step")),
    )


SUMMARIZERS: dict[ModelKind, Callable[[TensorView, Detection], KindSummary]] = {
    ModelKind.CHECKPOINT: _checkpoint,
    ModelKind.VAE: _vae,
    ModelKind.LORA: _lora,
    ModelKind.EMBEDDING: _embedding,
    ModelKind.HYPERNETWORK: _hypernetwork,
}
