"""The hashes A1111, Civitai and kohya compute for model files, streamed in 1 MiB blocks.

* full SHA-256 (Civitai "SHA256"); its first 10 hex digits are A1111's shorthash ("AutoV2");
* A1111's legacy model hash ("AutoV1"): SHA-256 of the 64 KiB at offset 1 MiB, first 8 hex;
* the addnet / kohya tensor hash: SHA-256 of a safetensors file's bytes after its header (so it
  does not change when metadata is edited); LoRA infotext shows its first 12 hex.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

BLOCK = 1024 * 1024
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000

Progress = Callable[[int], None]  # called with the number of bytes just hashed


def _hash_stream(path: Path, start: int, progress: Progress | None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(start)
        while chunk := handle.read(BLOCK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def sha256_file(path: Path | str, progress: Progress | None = None) -> str:
    """SHA-256 of the whole file, as Civitai lists it and A1111 computes it."""
    return _hash_stream(Path(path), 0, progress)


def autov2(sha256_hex: str) -> str:
    """A1111's shorthash / Civitai's AutoV2: the first 10 hex digits of the full SHA-256."""
    return sha256_hex[:10]


def legacy_model_hash(path: Path | str) -> str:
    """A1111's old "Model hash" (Civitai AutoV1): 8 hex of SHA-256(64 KiB at offset 1 MiB).

    A file shorter than 1 MiB hashes the empty string, as A1111 does.
    """
    with Path(path).open("rb") as handle:
        handle.seek(LEGACY_OFFSET)
        data = handle.read(LEGACY_LENGTH)
    return hashlib.sha256(data).hexdigest()[:8]


def legacy_hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data[LEGACY_OFFSET : LEGACY_OFFSET + LEGACY_LENGTH]).hexdigest()[:8]


def addnet_hash_file(path: Path | str, progress: Progress | None = None) -> str:
    """SHA-256 of a safetensors file's tensor data (everything after the 8 + N header bytes)."""
    path = Path(path)
    with path.open("rb") as handle:
        prefix = handle.read(8)
    if len(prefix) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", prefix)
    return _hash_stream(path, 8 + header_len, progress)


def addnet_hash_bytes(data: bytes) -> str:
    """The addnet hash of a safetensors file held in memory."""
    (header_len,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + header_len :]).hexdigest()
