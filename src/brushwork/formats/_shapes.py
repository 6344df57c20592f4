"""Tensor shapes by name, and which Stable Diffusion family an LDM-layout file belongs to."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brushwork.core.errors import ArchitectureError, UnsupportedModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats._ldm_keys import LEGACY_SD1_CLIP_PREFIX, UNET_PREFIX

Shapes = Mapping[str, tuple[int, ...]]


def shape_map(state_dict_or_shapes: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """name -> shape, from tensors, safetensors `TensorInfo`s, or shapes."""
    return {
        str(k): tuple(int(d) for d in (v.shape if hasattr(v, "shape") else v))
        for k, v in state_dict_or_shapes.items()
    }


def sub_shapes(shapes: Shapes, prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}


def count_indices(shapes: Shapes, prefix: str) -> int:
    """1 + the highest integer that follows `prefix` in any key (0 if none)."""
    found = {
        int(head)
        for key in shapes
        if key.startswith(prefix) and (head := key[len(prefix) :].split(".", 1)[0]).isdigit()
    }
    return max(found) + 1 if found else 0


def need_shape(shapes: Shapes, key: str, where: str, source: Path | None) -> tuple[int, ...]:
    if key not in shapes:
        raise ArchitectureError(
            source,
            f"has no {where}{key} weight, which every Stable Diffusion model of this layout has",
            hint="the file may be incomplete, or of an architecture brushwork does not support",
        )
    return shapes[key]


def detect_family(shapes: Shapes, *, source: Path | None = None) -> BaseFamily:
    """SD1, SD2 or SDXL, from the text-encoder keys (or the UNet's context width)."""
    keys = list(shapes)
    if any(
        k.startswith(UNET_PREFIX + p)
        for k in keys
        for p in ("joint_blocks.", "double_blocks.", "x_embedder.")
    ):
        raise UnsupportedModelError(
            source, "is an SD3/Flux-style transformer model, not SD 1.x/2.x/XL"
        )
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        return BaseFamily.SDXL
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        raise UnsupportedModelError(
            source, "is an SDXL refiner, which brushwork does not support yet"
        )
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return BaseFamily.SD2
    if any(k.startswith(LEGACY_SD1_CLIP_PREFIX) for k in keys):
        return BaseFamily.SD1
    if UNET_PREFIX + "label_emb.0.0.weight" in shapes:
        return BaseFamily.SDXL
    context = next((s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight")), None)
    by_context = {768: BaseFamily.SD1, 1024: BaseFamily.SD2, 2048: BaseFamily.SDXL}
    if context in by_context:
        return by_context[context]
    raise ArchitectureError(
        source,
        "cannot tell whether this is an SD 1.x, 2.x or XL model (no text encoder weights, "
        f"cross-attention width {context})",
        hint="name the family explicitly, or put an LDM <stem>.yaml config beside the file",
    )
