"""Safe reading and atomic writing of model files.

Every byte of a model file that brushwork reads comes through here:

* the format is sniffed from the first bytes, never trusted from the name, and files that are
  not models at all (a Git-LFS pointer, an HTML login page, an archive, an empty or truncated
  file) get an error that says what they are;
* safetensors headers are parsed and validated without reading any tensor (`read_header`);
* pickles (`.ckpt/.pt/.bin`) are opened only with `torch.load(weights_only=True)` behind a zip
  structure check, with a small allowlist for what real SD files carry. A pickle that wants to
  import anything else is refused, and the error names what it tried to import. Nothing runs.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from brushwork.core.errors import CorruptModelError, NotAModelError
from brushwork.core.fsutil import atomic_writer
from brushwork.core.kinds import FileFormat
from brushwork.formats.safe_pickle import load_pickle_bytes

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own cap
MAX_TENSORS = 1_000_000
_SNIFF_BYTES = 512

_ST_DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a safetensors header describes it."""

    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int]

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated safetensors header: tensors by name, `__metadata__`, and where data starts."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int  # byte offset of the tensor data region (8 + header length)
    file_size: int


@dataclass
class ModelFile:
    """What a model file holds, as read: tensors (flat), safetensors metadata, other pickle items."""

    path: Path | None
    format: FileFormat
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    raw: Any = None  # the unpickled object (pickles only), for formats that nest


# ---------------------------------------------------------------------------------------------
# sniffing


def sniff_format(path: Path) -> FileFormat:
    """The container of `path`, from its first bytes. Raises for anything that is not a model."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except IsADirectoryError:
        raise NotAModelError(path, "is a folder, not a model file") from None
    except FileNotFoundError:
        raise NotAModelError(path, "no such file") from None
    except OSError as exc:
        raise CorruptModelError(path, f"cannot be read: {exc.strerror or exc}") from exc
    return _classify_head(path, head, size)


def _classify_head(path: Path | None, head: bytes, size: int) -> FileFormat:
    if size == 0:
        raise CorruptModelError(
            path, "is empty (0 bytes)", hint="the download did not finish; fetch it again"
        )
    if head.startswith(b"version https://git-lfs"):
        raise NotAModelError(
            path,
            "is a Git-LFS pointer file, not the model itself",
            hint="run `git lfs pull` in that repository, or download the file directly",
        )
    text_start = head.lstrip()[:64].lower()
    if text_start.startswith((b"<!doctype", b"<html", b"<head", b"<?xml")):
        raise NotAModelError(
            path,
            "is an HTML page saved under a model's name (often a login or error page)",
            hint="log in to the site (Civitai needs an API token for some downloads) and download again",
        )
    if text_start.startswith((b"{", b"[")) and size < 10_000_000:
        raise NotAModelError(path, "is a JSON text file, not a model")
    if (
        len(head) >= 9
        and head[8:9] == b"{"
        and 2 <= struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES
    ):
        return FileFormat.SAFETENSORS  # checked first: a 128-byte header starts with byte 0x80
    if head.startswith(b"PK\x03\x04"):
        return FileFormat.PICKLE
    if head.startswith(b"\x80"):
        return FileFormat.PICKLE
    for magic, name in (
        (b"\x1f\x8b", "gzip archive"),
        (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
        (b"Rar!", "RAR archive"),
        (b"GGUF", "GGUF file (llama.cpp format)"),
        (b"\x89PNG", "PNG image"),
        (b"\xff\xd8\xff", "JPEG image"),
    ):
        if head.startswith(magic):
            raise NotAModelError(path, f"is a {name}, not a model file")
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= MAX_HEADER_BYTES and head[8:].lstrip(b" \t\r\n")[:1] == b"{":
            return FileFormat.SAFETENSORS
        if head[8:9] == b"{" or header_len <= MAX_HEADER_BYTES:
            return FileFormat.SAFETENSORS  # let the header reader explain what is wrong
    raise CorruptModelError(
        path,
        "is not a safetensors file or a PyTorch pickle (unrecognised first bytes "
        f"{head[:8].hex(' ')})",
        hint="the file may be truncated or of another format",
    )


# ---------------------------------------------------------------------------------------------
# safetensors


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in the header")
        out[key] = value
    return out


def read_header(path: Path | str) -> SafetensorsHeader:
    """Parse and validate a safetensors header without reading any tensor data."""
    path = Path(path)
    fmt = sniff_format(path)
    if fmt is not FileFormat.SAFETENSORS:
        raise CorruptModelError(path, "is a PyTorch pickle, not a safetensors file")
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CorruptModelError(path, f"is too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise CorruptModelError(
                path,
                f"declares a {header_len:,}-byte safetensors header, over the "
                f"{MAX_HEADER_BYTES:,}-byte limit: not a valid safetensors file",
            )
        if 8 + header_len > size:
            raise CorruptModelError(
                path,
                f"is truncated: its header needs {8 + header_len:,} bytes but the file has {size:,}",
                hint="the download did not finish; fetch it again",
            )
        raw = handle.read(header_len)
    return parse_header_bytes(raw, size, path)


def parse_header_bytes(raw: bytes, file_size: int, path: Path | None = None) -> SafetensorsHeader:
    """Validate a safetensors JSON header the way the reference implementation does."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptModelError(path, "has a safetensors header that is not valid UTF-8") from None
    try:
        doc = json.loads(text.rstrip(" \x00"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise CorruptModelError(path, f"has a malformed safetensors header: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptModelError(path, "has a safetensors header that is not a JSON object")
    metadata_raw = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_raw.items()
    ):
        raise CorruptModelError(path, "has a __metadata__ entry that is not a string-to-string map")
    if len(doc) > MAX_TENSORS:
        raise CorruptModelError(path, f"declares {len(doc):,} tensors, more than any model has")
    tensors = {name: _tensor_info(path, name, entry) for name, entry in doc.items()}
    data_start = 8 + len(raw)
    expected = 0
    for name, info in sorted(tensors.items(), key=lambda item: item[1].offsets):
        begin, end = info.offsets
        if begin != expected:
            raise CorruptModelError(path, f"tensor {name!r} has an invalid offset (overlap or gap)")
        if (end - begin) * 8 != info.numel * _ST_DTYPE_BITS[info.dtype]:
            raise CorruptModelError(
                path, f"tensor {name!r}: its byte range does not match its shape and dtype"
            )
        expected = end
    if data_start + expected != file_size:
        if data_start + expected > file_size:
            raise CorruptModelError(
                path,
                f"is truncated: the tensors need {data_start + expected:,} bytes but the file has "
                f"{file_size:,}",
                hint="the download did not finish; fetch it again",
            )
        raise CorruptModelError(
            path,
            f"has {file_size - data_start - expected:,} unexpected bytes after the last tensor",
        )
    return SafetensorsHeader(tensors, dict(metadata_raw), data_start, file_size)


def _tensor_info(path: Path | None, name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise CorruptModelError(path, f"tensor {name!r} has a malformed header entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ST_DTYPE_BITS:
        raise CorruptModelError(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CorruptModelError(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise CorruptModelError(path, f"tensor {name!r} has invalid data offsets {offsets!r}")
    return TensorInfo(str(dtype), tuple(shape), (offsets[0], offsets[1]))


def read_safetensors(path: Path | str) -> ModelFile:
    """Read every tensor of a safetensors file into memory (no mmap left behind)."""
    path = Path(path)
    header = read_header(path)
    try:
        tensors = st_load_bytes(path.read_bytes())
    except Exception as exc:  # the library's own validation; report it with the path
        raise CorruptModelError(path, f"cannot be read as safetensors: {exc}") from exc
    return ModelFile(path, FileFormat.SAFETENSORS, tensors, header.metadata)


# safetensors dtype names <-> torch dtypes (the one table; others import it)
SAFETENSORS_TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}
TORCH_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    dtype: name for name, dtype in SAFETENSORS_TORCH_DTYPES.items()
}


def read_selected_tensors(
    path: Path | str, names: list[str], header: SafetensorsHeader | None = None
) -> dict[str, torch.Tensor]:
    """Read only the named tensors of a safetensors file (e.g. a LoRA's `.alpha` scalars).

    Each tensor is read from its byte range with plain file reads (no mmap); `header` may be
    passed when the caller already validated it with `read_header`.
    """
    path = Path(path)
    header = header or read_header(path)
    out: dict[str, torch.Tensor] = {}
    with path.open("rb") as handle:
        for name in names:
            info = header.tensors[name]
            dtype = SAFETENSORS_TORCH_DTYPES.get(info.dtype)
            if dtype is None:
                raise CorruptModelError(
                    path, f"tensor {name!r} has dtype {info.dtype}, not readable here"
                )
            handle.seek(header.data_start + info.offsets[0])
            raw = handle.read(info.offsets[1] - info.offsets[0])
            if len(raw) != info.offsets[1] - info.offsets[0]:
                raise CorruptModelError(path, f"is truncated inside tensor {name!r}")
            flat = (
                torch.frombuffer(bytearray(raw), dtype=dtype)
                if raw
                else torch.empty(0, dtype=dtype)
            )
            out[name] = flat.reshape(info.shape)
    return out


def _read_into(handle: io.RawIOBase, buffer: torch.Tensor, path: Path, name: str) -> None:
    array: Any = buffer.numpy()  # shares the tensor's memory
    view = memoryview(array).cast("B")
    done = 0
    while done < len(view):
        count = handle.readinto(view[done:])
        if not count:
            raise CorruptModelError(path, f"is truncated inside tensor {name!r}")
        done += count


def read_tensors_cast(
    path: Path | str,
    dtypes: Mapping[str, torch.dtype | None],
    header: SafetensorsHeader | None = None,
) -> dict[str, torch.Tensor]:
    """Read the named tensors of a safetensors file, each floating one cast to its given dtype.

    `dtypes` maps each tensor to read to the dtype wanted (None: as stored; integer tensors are
    never cast). Every returned tensor has its own fresh, contiguous, allocator-aligned storage:
    a tensor kept as stored is read straight into it, one to cast goes through a single reused
    staging buffer. Memory grows only by what is returned, and no mmap is left behind.
    """
    path = Path(path)
    header = header or read_header(path)
    names = sorted(dtypes, key=lambda n: header.tensors[n].offsets)
    sizes = {n: header.tensors[n].offsets[1] - header.tensors[n].offsets[0] for n in names}
    staging = torch.empty(max(sizes.values(), default=0), dtype=torch.uint8)
    out: dict[str, torch.Tensor] = {}
    with path.open("rb", buffering=0) as handle:
        for name in names:
            info = header.tensors[name]
            stored = SAFETENSORS_TORCH_DTYPES.get(info.dtype)
            if stored is None:
                raise CorruptModelError(
                    path, f"tensor {name!r} has dtype {info.dtype}, not readable here"
                )
            wanted = dtypes[name] if stored.is_floating_point else None
            cast = wanted is not None and wanted != stored
            buffer = staging[: sizes[name]] if cast else torch.empty(sizes[name], dtype=torch.uint8)
            handle.seek(header.data_start + info.offsets[0])
            _read_into(handle, buffer, path, name)
            tensor = buffer.view(stored).reshape(info.shape)
            out[name] = tensor.to(wanted) if cast else tensor
    return out


# ---------------------------------------------------------------------------------------------
# pickles (the guarded unpickler itself is in safe_pickle.py)


def read_pickle(path: Path | str) -> Any:
    """Unpickle a .ckpt/.pt/.bin with `weights_only=True`; refuse anything that would run code."""
    path = Path(path)
    fmt = sniff_format(path)
    if fmt is not FileFormat.PICKLE:
        raise CorruptModelError(path, "is a safetensors file, not a PyTorch pickle")
    data = path.read_bytes()
    return load_pickle_bytes(data, path)


def flatten_tensors(obj: Any, path: Path | None = None) -> dict[str, torch.Tensor]:
    """The flat tensor dict of an unpickled object, unwrapping `{"state_dict": ...}` (as A1111)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CorruptModelError(path, f"holds a {type(obj).__name__}, not a dictionary of tensors")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_model_file(path: Path | str) -> ModelFile:
    """Read any model file into tensors + metadata (+ the raw object for pickles)."""
    path = Path(path)
    if sniff_format(path) is FileFormat.SAFETENSORS:
        return read_safetensors(path)
    raw = read_pickle(path)
    return ModelFile(path, FileFormat.PICKLE, flatten_tensors(raw, path), {}, raw)


# ---------------------------------------------------------------------------------------------
# writing


def _prepare(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous, unshared CPU tensors, as safetensors requires."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            t = t.clone()
        elif ptr != -1:
            seen.add(ptr)
        out[name] = t
    return out


def write_safetensors(
    path: Path | str,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write a safetensors file atomically (temp file, fsync, rename)."""
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    payload = st_save_bytes(_prepare(tensors), metadata=meta or None)
    with atomic_writer(path, overwrite=overwrite) as handle:
        handle.write(payload)


def write_pickle(path: Path | str, obj: Any, *, overwrite: bool = True) -> None:
    """`torch.save` atomically, for formats A1111 reads only as pickles (.pt embeddings, hypernetworks)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_writer(path, overwrite=overwrite) as handle:
        handle.write(buffer.getvalue())
