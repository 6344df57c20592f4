"""Each hash against hashlib on the same bytes."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from brushwork.core.hashing import (
    addnet_hash_bytes,
    addnet_hash_file,
    autov2,
    legacy_hash_bytes,
    legacy_model_hash,
    sha256_file,
)


def _random_bytes(n: int, seed: int = 1) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def test_full_sha256_and_autov2(tmp_path: Path) -> None:
    data = _random_bytes(3 * 1024 * 1024 + 17)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    seen: list[int] = []
    full = sha256_file(path, progress=seen.append)
    assert full == hashlib.sha256(data).hexdigest()
    assert autov2(full) == full[:10]
    assert sum(seen) == len(data) and max(seen) <= 1024 * 1024


def test_legacy_hash_reads_64k_at_one_mebibyte(tmp_path: Path) -> None:
    data = _random_bytes(2 * 1024 * 1024)
    path = tmp_path / "model.ckpt"
    path.write_bytes(data)
    expected = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    assert legacy_model_hash(path) == expected == legacy_hash_bytes(data)


def test_legacy_hash_of_a_small_file_is_the_empty_string_hash(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    path.write_bytes(b"x" * 1000)
    assert legacy_model_hash(path) == "e3b0c442"


def test_addnet_hash_skips_the_header_so_metadata_edits_keep_it(tmp_path: Path) -> None:
    tensor_bytes = _random_bytes(4096)

    def file_with(metadata: dict[str, str]) -> bytes:
        header = {
            "__metadata__": metadata,
            "w": {"dtype": "U8", "shape": [4096], "data_offsets": [0, 4096]},
        }
        raw = json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + tensor_bytes

    one, two = file_with({"a": "1"}), file_with({"a": "2", "ss_output_name": "x"})
    (tmp_path / "one.safetensors").write_bytes(one)
    expected = hashlib.sha256(tensor_bytes).hexdigest()
    assert addnet_hash_file(tmp_path / "one.safetensors") == expected
    assert addnet_hash_bytes(one) == addnet_hash_bytes(two) == expected
    assert hashlib.sha256(one).hexdigest() != hashlib.sha256(two).hexdigest()
