"""A model file's tensors as names, shapes and dtypes, without reading their values.

Safetensors files are seen through their header alone; pickles through the guarded unpickler
(`pickle_contents`), flattened. Detection, summaries and the library's facts all look at a file
through this one view, so both containers report alike (dtypes under safetensors' names).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from brushwork.core.kinds import FileFormat
from brushwork.formats.pickle_contents import read_pickle_contents
from brushwork.formats.safeio import (
    TORCH_SAFETENSORS_DTYPES,
    read_header,
    read_selected_tensors,
    sniff_format,
)

# torch dtypes under the names safetensors headers use, so both formats report alike
TORCH_DTYPE_NAMES = TORCH_SAFETENSORS_DTYPES


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype under the name safetensors headers use (`F16`, `BF16`, ...)."""
    return TORCH_DTYPE_NAMES.get(dtype, str(dtype))


def parameter_count(shapes: Iterable[tuple[int, ...]]) -> int:
    """The number of values in tensors of these shapes."""
    return sum(math.prod(shape) for shape in shapes)


@dataclass(frozen=True)
class TensorView:
    """Names, shapes and dtypes of a file's tensors, and a way to read a few of their values."""

    format: FileFormat
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]  # safetensors dtype names (F16, BF16, F32, ...)
    metadata: dict[str, str]  # safetensors `__metadata__` (empty for pickles)
    fields: dict[str, Any]  # top-level non-tensor entries of a pickle
    read_values: Callable[[list[str]], dict[str, torch.Tensor]]


def read_tensor_view(path: Path | str) -> TensorView:
    """The view of a model file: its safetensors header, or its safely unpickled tensors."""
    path = Path(path)
    if sniff_format(path) is FileFormat.SAFETENSORS:
        header = read_header(path)
        return TensorView(
            format=FileFormat.SAFETENSORS,
            shapes={name: info.shape for name, info in header.tensors.items()},
            dtypes={name: info.dtype for name, info in header.tensors.items()},
            metadata=dict(header.metadata),
            fields={},
            read_values=lambda names: read_selected_tensors(path, names, header),
        )
    contents = read_pickle_contents(path)
    tensors = contents.tensors
    return TensorView(
        format=FileFormat.PICKLE,
        shapes={name: tuple(t.shape) for name, t in tensors.items()},
        dtypes={name: dtype_name(t.dtype) for name, t in tensors.items()},
        metadata={},
        fields=contents.fields,
        read_values=lambda names: {name: tensors[name] for name in names},
    )
