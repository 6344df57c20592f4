"""A model file read one tensor at a time.

A `.safetensors` file is opened by its validated header only; each tensor is then read from its
byte range with plain file reads into a fresh tensor (`safeio.read_tensors_cast`: no mmap, so
memory holds only the tensors a tool keeps). A pickle (`.ckpt`) cannot be read in parts: it goes
whole through safeio's guarded unpickler, once.

Old SD 1.x files keep CLIP under ``cond_stage_model.transformer.`` without ``text_model.``; the
source shows those names the modern way (as A1111 remaps them on load), so two checkpoints of
different ages line up key for key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from brushwork.core.kinds import FileFormat
from brushwork.formats.safeio import (
    SAFETENSORS_TORCH_DTYPES,
    SafetensorsHeader,
    read_header,
    read_model_file,
    read_tensors_cast,
    sniff_format,
)

LEGACY_CLIP_PREFIX = "cond_stage_model.transformer."
MODERN_CLIP_PREFIX = "cond_stage_model.transformer.text_model."

_FLOATING = {"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3"}


def modern_name(name: str) -> str:
    """The key A1111 uses for `name` (legacy SD 1.x CLIP keys get their `text_model.`)."""
    if name.startswith(LEGACY_CLIP_PREFIX) and not name.startswith(MODERN_CLIP_PREFIX):
        return MODERN_CLIP_PREFIX + name[len(LEGACY_CLIP_PREFIX) :]
    return name


class TensorSource:
    """The tensors of one model file, by (modern) name, read on demand."""

    def __init__(
        self,
        path: Path,
        file_format: FileFormat,
        shapes: Mapping[str, tuple[int, ...]],
        dtypes: Mapping[str, torch.dtype],
        metadata: Mapping[str, str],
        *,
        header: SafetensorsHeader | None = None,
        tensors: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.path = path
        self.format = file_format
        self.metadata = dict(metadata)
        self._shapes = dict(shapes)
        self._dtypes = dict(dtypes)
        self._header = header
        self._tensors = dict(tensors or {})
        self._file_names = {modern_name(name): name for name in self._file_order()}

    @classmethod
    def open(cls, path: Path | str) -> TensorSource:
        """Open a model file: its header for safetensors, the whole guarded pickle otherwise."""
        path = Path(path)
        if sniff_format(path) is FileFormat.SAFETENSORS:
            header = read_header(path)
            infos = header.tensors
            shapes = {n: i.shape for n, i in infos.items()}
            dtypes = {
                n: SAFETENSORS_TORCH_DTYPES.get(i.dtype, torch.uint8) for n, i in infos.items()
            }
            return cls(path, FileFormat.SAFETENSORS, shapes, dtypes, header.metadata, header=header)
        model_file = read_model_file(path)
        tensors = model_file.tensors
        shapes = {n: tuple(t.shape) for n, t in tensors.items()}
        dtypes = {n: t.dtype for n, t in tensors.items()}
        return cls(path, FileFormat.PICKLE, shapes, dtypes, {}, tensors=tensors)

    def _file_order(self) -> list[str]:
        if self._header is None:
            return list(self._shapes)
        infos = self._header.tensors
        return sorted(infos, key=lambda name: infos[name].offsets)

    @property
    def names(self) -> list[str]:
        """Every tensor's (modern) name, in file order."""
        return list(self._file_names)

    def __contains__(self, name: object) -> bool:
        return name in self._file_names

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[self._file_names[name]]

    def dtype(self, name: str) -> torch.dtype:
        return self._dtypes[self._file_names[name]]

    def is_floating(self, name: str) -> bool:
        file_name = self._file_names[name]
        if self._header is not None:
            return self._header.tensors[file_name].dtype in _FLOATING
        return self._dtypes[file_name].is_floating_point

    def nbytes(self, name: str) -> int:
        file_name = self._file_names[name]
        if self._header is not None:
            start, end = self._header.tensors[file_name].offsets
            return end - start
        tensor = self._tensors[file_name]
        return tensor.numel() * tensor.element_size()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """name -> shape, with the names as stored (what architecture inference reads)."""
        return dict(self._shapes)

    def read(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, as stored or cast to `dtype` (floating tensors only)."""
        file_name = self._file_names[name]
        if self._header is not None:
            return read_tensors_cast(self.path, {file_name: dtype}, self._header)[file_name]
        tensor = self._tensors[file_name]
        if dtype is not None and tensor.is_floating_point():
            return tensor.to(dtype)
        return tensor

    def release(self, name: str) -> None:
        """Forget a pickle's tensor once it was used (a safetensors file holds none)."""
        self._tensors.pop(self._file_names.get(name, name), None)
