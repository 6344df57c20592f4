"""What `brushwork inspect` (and the server) show about a model file, as typed data.

`summarize_file(path)` identifies the file (`detect`) and adds counts, precision and a
kind-specific summary. Safetensors files are summarised from their header; the only tensor
values ever read are a LoRA's `alpha` scalars. Pickles go through the guarded unpickler.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from brushwork.core.kinds import FileFormat, ModelKind
from brushwork.formats import lora_keys
from brushwork.formats.detect import Detection, detect_state_dict, hypernetwork_widths
from brushwork.formats.pickle_contents import read_pickle_contents
from brushwork.formats.safeio import read_header, read_selected_tensors, sniff_format

logger = logging.getLogger(__name__)

TOP_TAGS = 10

# torch dtypes under the names safetensors headers use, so both formats report alike
TORCH_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
}


@dataclass(frozen=True)
class TensorView:
    """Names, shapes and dtypes of a file's tensors, and a way to read a few of their values."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str]
    fields: dict[str, Any]  # top-level non-tensor entries of a pickle
    read_values: Callable[[list[str]], dict[str, torch.Tensor]]


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


def _safetensors_view(path: Path) -> tuple[TensorView, FileFormat]:
    header = read_header(path)
    view = TensorView(
        shapes={name: info.shape for name, info in header.tensors.items()},
        dtypes={name: info.dtype for name, info in header.tensors.items()},
        metadata=dict(header.metadata),
        fields={},
        read_values=lambda names: read_selected_tensors(path, names, header),
    )
    return view, FileFormat.SAFETENSORS


def _pickle_view(path: Path) -> tuple[TensorView, FileFormat]:
    contents = read_pickle_contents(path)
    tensors = contents.tensors
    view = TensorView(
        shapes={name: tuple(t.shape) for name, t in tensors.items()},
        dtypes={name: TORCH_DTYPE_NAMES.get(t.dtype, str(t.dtype)) for name, t in tensors.items()},
        metadata={},
        fields=contents.fields,
        read_values=lambda names: {name: tensors[name] for name in names},
    )
    return view, FileFormat.PICKLE


def summarize_file(path: Path | str) -> ModelSummary:
    """Identify and summarise a model file. Raises the safeio/detect errors for bad files."""
    path = Path(path)
    fmt = sniff_format(path)
    view, fmt = _safetensors_view(path) if fmt is FileFormat.SAFETENSORS else _pickle_view(path)
    detection = detect_state_dict(
        view.shapes, metadata=view.metadata, extra_keys=view.fields, format=fmt, path=path
    )
    parameters = 0
    for shape in view.shapes.values():
        count = 1
        for dim in shape:
            count *= dim
        parameters += count
    return ModelSummary(
        path=path,
        size=path.stat().st_size,
        detection=detection,
        tensors=len(view.shapes),
        parameters=parameters,
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


def _checkpoint(view: TensorView, detection: Detection) -> CheckpointSummary:
    shapes = view.shapes
    ema_counters = ("model_ema.decay", "model_ema.num_updates")
    in_conv = shapes.get("model.diffusion_model.input_blocks.0.0.weight", ())
    return CheckpointSummary(
        has_ema=any(k.startswith("model_ema.") and k not in ema_counters for k in shapes),
        has_vae=any(k.startswith("first_stage_model.") for k in shapes),
        text_encoders=_text_encoders(shapes),
        unet_in_channels=in_conv[1] if len(in_conv) == 4 else None,
    )


def _vae(view: TensorView, detection: Detection) -> VaeSummary:
    post = next((s for k, s in view.shapes.items() if k.endswith("post_quant_conv.weight")), ())
    return VaeSummary(
        latent_channels=post[0] if post else None, a1111_loadable=detection.layout == "ldm"
    )


def _float(text: str | None) -> float | None:
    try:
        return None if text in (None, "", "None") else float(str(text))
    except ValueError:
        return None


def top_tags(metadata: Mapping[str, str], count: int = TOP_TAGS) -> list[tuple[str, int]]:
    """The most frequent training tags of a kohya LoRA (`ss_tag_frequency`, summed over folders)."""
    try:
        folders = json.loads(metadata.get("ss_tag_frequency", "") or "{}")
    except ValueError:
        logger.debug("ss_tag_frequency is not valid JSON")
        return []
    totals: Counter[str] = Counter()
    if isinstance(folders, dict):
        for tags in folders.values():
            if isinstance(tags, dict):
                totals.update({str(t): int(n) for t, n in tags.items() if isinstance(n, int)})
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]


def _lora_alphas(view: TensorView) -> tuple[list[float], str | None]:
    keys = lora_keys.alpha_keys(view.shapes)
    if keys:
        values = view.read_values(keys)
        return sorted({round(float(v.float().item()), 6) for v in values.values()}), "tensors"
    alpha = _float(view.metadata.get("ss_network_alpha"))
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
