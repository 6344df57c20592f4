"""Writing a safetensors file one tensor at a time, atomically.

The safetensors container is a header (JSON: every tensor's dtype, shape and byte range, and
`__metadata__`) followed by the raw tensor bytes. When every output tensor's dtype and shape are
known before any is computed (a merge knows them from its inputs' headers), the header can be
written first and each tensor written as soon as it is made, then dropped: memory holds one
tensor, not one model. The bytes are those `safetensors.torch.save` would write for the same
tensors in the same order, and the file goes through `core.fsutil.atomic_writer` (a temp file
beside the target, fsync, rename), so a failure at any point leaves no partial file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_writer
from brushwork.formats.safeio import TORCH_SAFETENSORS_DTYPES

HEADER_ALIGNMENT = 8
ST_DTYPES = TORCH_SAFETENSORS_DTYPES


@dataclass(frozen=True)
class TensorSpec:
    """What one output tensor will be, known before it is computed."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch.empty((), dtype=self.dtype).element_size()


def header_bytes(specs: Sequence[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The length-prefixed, space-padded JSON header for tensors laid out in `specs` order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for spec in specs:
        if spec.dtype not in ST_DTYPES:
            raise ConfigError(f"tensor {spec.name!r} has dtype {spec.dtype}, not storable")
        if spec.name in header:
            raise ConfigError(f"tensor {spec.name!r} is listed twice")
        end = offset + spec.nbytes
        header[spec.name] = {
            "dtype": ST_DTYPES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % HEADER_ALIGNMENT)
    return len(raw).to_bytes(8, "little") + raw


def write_tensor_bytes(handle: BinaryIO, tensor: torch.Tensor) -> None:
    """The raw little-endian bytes of one tensor, written without an extra copy."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel():
        array: Any = flat.view(torch.uint8).numpy()  # shares the tensor's memory
        handle.write(memoryview(array))


def _checked(spec: TensorSpec, name: str, tensor: torch.Tensor) -> torch.Tensor:
    if name != spec.name:
        raise ConfigError(f"tensor {name!r} came where {spec.name!r} was announced")
    if tuple(tensor.shape) != spec.shape:
        raise ConfigError(f"tensor {name!r} has shape {tuple(tensor.shape)}, not {spec.shape}")
    return tensor if tensor.dtype == spec.dtype else tensor.to(spec.dtype)


def write_safetensors_streamed(
    path: Path | str,
    specs: Sequence[TensorSpec],
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: Mapping[str, str] | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Write `tensors` (yielded in `specs` order, each cast to its spec's dtype) to `path`.

    The iterable is consumed while the file is written; if it raises, or yields fewer or other
    tensors than announced, the temp file is removed and `path` is left as it was.
    """
    if sys.byteorder != "little":
        raise ConfigError("safetensors files are little-endian; this machine is not")
    with atomic_writer(path, overwrite=overwrite) as handle:
        handle.write(header_bytes(specs, metadata or {}))
        iterator = iter(tensors)
        for spec in specs:
            item = next(iterator, None)
            if item is None:
                raise ConfigError(f"tensor {spec.name!r} was announced and never came")
            write_tensor_bytes(handle, _checked(spec, *item))
        if next(iterator, None) is not None:
            raise ConfigError("more tensors came than were announced")
