"""Hashes as A1111 and Civitai compute them, cached in the SQLite index by path, size and mtime."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from brushwork.core import hashing
from brushwork.core.errors import ConfigError
from brushwork.core.settings import Settings
from brushwork.library import catalog
from brushwork.library.catalog import Library
from brushwork.library.index import FileStamp, LibraryIndex

from .conftest import place, touch_later, write_big_lora


def test_hashes_match_hashlib_on_the_same_bytes(settings: Settings, root: Path) -> None:
    lora = write_big_lora(root / "models/Lora/big.safetensors")
    checkpoint = place(root, "models/Stable-diffusion/model.ckpt", "checkpoint")
    with Library.open(settings, [root]) as library:
        entries = {e.name: e for e in library.hash_entries(library.scan().entries)}
    data = lora.read_bytes()
    assert len(data) > 0x110000
    (header_length,) = struct.unpack("<Q", data[:8])
    big = entries["big"]
    assert big.sha256 == hashlib.sha256(data).hexdigest()
    assert big.autov2 == big.sha256[:10]
    assert big.legacy_hash == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert big.addnet_hash == hashlib.sha256(data[8 + header_length :]).hexdigest()
    assert big.short_hash == big.addnet_hash[:12]  # A1111's LoRA short hash: the tensor hash
    small = entries["model"]
    assert small.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert small.legacy_hash == hashlib.sha256(b"").hexdigest()[:8]  # under 1 MiB, as A1111
    assert small.addnet_hash is None  # only safetensors LoRA have a tensor hash
    assert small.short_hash == small.sha256[:10]


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count full hashes and identifications by file name."""
    calls: Counter[str] = Counter()

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
            calls[f"{original.__name__}:{Path(path).name}"] += 1
            return original(path, *args, **kwargs)

        return counted

    monkeypatch.setattr(hashing, "sha256_file", wrap(hashing.sha256_file))
    monkeypatch.setattr(hashing, "addnet_hash_file", wrap(hashing.addnet_hash_file))
    monkeypatch.setattr(catalog, "identify_file", wrap(catalog.identify_file))
    return calls


def test_an_unchanged_file_is_never_read_again_and_a_touched_one_is(
    settings: Settings, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora = place(root, "models/Lora/style.safetensors", "lora")
    place(root, "models/VAE/ft.safetensors", "vae")
    calls = _counting(monkeypatch)
    with Library.open(settings, [root]) as library:
        first = library.hash_entries(library.scan().entries)
    assert calls == {
        "identify_file:style.safetensors": 1,
        "identify_file:ft.safetensors": 1,
        "sha256_file:style.safetensors": 1,
        "addnet_hash_file:style.safetensors": 1,
        "sha256_file:ft.safetensors": 1,
    }
    calls.clear()
    with Library.open(settings, [root]) as library:  # a new process, the same index
        scan = library.scan()
        again = library.hash_entries(scan.entries)
    assert calls == {} and scan.identified == 0
    assert [e.sha256 for e in again] == [e.sha256 for e in first]
    touch_later(lora)
    with Library.open(settings, [root]) as library:
        touched = library.hash_entries(library.scan().entries)
    assert calls == {
        "identify_file:style.safetensors": 1,
        "sha256_file:style.safetensors": 1,
        "addnet_hash_file:style.safetensors": 1,
    }
    assert touched[0].sha256 == first[0].sha256  # same bytes, new mtime


def test_a_rewritten_file_of_another_size_gets_new_hashes(settings: Settings, root: Path) -> None:
    lora = place(root, "models/Lora/style.safetensors", "lora")
    with Library.open(settings, [root]) as library:
        (before,) = library.hash_entries(library.scan().entries)
        place(root, "models/Lora/style.safetensors", "checkpoint")
        (after,) = library.hash_entries(library.scan().entries)
    assert after.sha256 == hashlib.sha256(lora.read_bytes()).hexdigest() != before.sha256
    assert after.kind is not None and after.kind.value == "checkpoint"
    assert after.addnet_hash is None


def test_index_is_wal_and_shared_between_connections(tmp_path: Path) -> None:
    database = tmp_path / "library.sqlite3"
    stamp = FileStamp(10, 20)
    with LibraryIndex(database) as writer, LibraryIndex(database) as reader:
        mode = sqlite3.connect(database).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        with writer.batch():  # a reader is not blocked by an open write transaction
            writer.store(tmp_path / "a", stamp, sha256="aa")
            assert reader.lookup(tmp_path / "a", stamp) is None
        record = reader.lookup(tmp_path / "a", stamp)
        assert record is not None and record.sha256 == "aa"
        reader.store(tmp_path / "a", stamp, addnet_hash="bb")  # keeps the other facts
        record = writer.lookup(tmp_path / "a", stamp)
        assert record is not None and (record.sha256, record.addnet_hash) == ("aa", "bb")
        assert writer.lookup(tmp_path / "a", FileStamp(10, 21)) is None  # touched: stale
        writer.store(tmp_path / "a", FileStamp(10, 21), identity=("{}", 1))
        record = writer.lookup(tmp_path / "a", FileStamp(10, 21))
        assert record is not None and record.sha256 is None  # a stale row's hashes are dropped


def test_a_damaged_index_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    database = tmp_path / "library.sqlite3"
    database.write_bytes(b"this is not a database" * 100)
    with LibraryIndex(database) as index:
        index.store(tmp_path / "x", FileStamp(1, 2), sha256="cc")
        assert len(index) == 1
    assert [p.name.split("-")[0] for p in tmp_path.glob("library.sqlite3.damaged-*")] == [
        "library.sqlite3.damaged"
    ]


def test_forget_missing_drops_rows_of_deleted_files(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.write_bytes(b"x")
    with LibraryIndex(tmp_path / "index.sqlite3") as index:
        index.store(kept, FileStamp(1, 1), sha256="a")
        index.store(tmp_path / "gone", FileStamp(1, 1), sha256="b")
        assert index.forget_missing() == 1
        assert len(index) == 1


def _scan_and_hash(data_dir: Path, root: Path) -> None:
    with Library.open(Settings(data_dir=data_dir), [root]) as library:
        entries = library.hash_entries(library.scan().entries)
    if not all(entry.sha256 for entry in entries):
        raise SystemExit(1)


def test_two_processes_share_the_index(settings: Settings, root: Path) -> None:
    for index in range(40):
        place(root, f"models/Lora/l{index}.safetensors", "lora")
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_scan_and_hash, args=(settings.data_dir, root)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    with LibraryIndex(settings.data_dir / "library.sqlite3") as index:
        assert len(index) == 40


def test_an_unusable_data_dir_is_a_clear_error(tmp_path: Path, root: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(ConfigError, match="set BRUSHWORK_HOME"):
        Library.open(Settings(data_dir=not_a_folder), [root])
