"""Tensor shapes by name: building the map, taking sub-maps, counting blocks, requiring keys."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brushwork.core.errors import ArchitectureError

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
