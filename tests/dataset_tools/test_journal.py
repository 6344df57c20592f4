"""The undo journal: entries are whole or absent, and a failed change is rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest

from brushwork.core.errors import BrushworkError
from brushwork.datasets import journal
from brushwork.datasets.journal import FileWrite, apply_writes, entries, undo_last


def test_a_failed_write_restores_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_bytes(b"a before")
    (tmp_path / "b.txt").write_bytes(b"b before")
    real_write = journal.atomic_write_bytes

    def failing(path: Path, data: bytes) -> None:
        if path.name == "b.txt":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(journal, "atomic_write_bytes", failing)
    writes = [
        FileWrite(tmp_path / "a.txt", b"a after"),
        FileWrite(tmp_path / "new.txt", b"created"),
        FileWrite(tmp_path / "b.txt", b"b after"),
    ]
    with pytest.raises(OSError, match="disk full"):
        apply_writes(tmp_path, writes, "test")
    assert (tmp_path / "a.txt").read_bytes() == b"a before"
    assert not (tmp_path / "new.txt").exists()
    assert entries(tmp_path) == []


def test_levels_are_capped(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    for index in range(4):
        apply_writes(
            tmp_path, [FileWrite(target, f"v{index}".encode())], f"v{index}", keep_levels=2
        )
    assert [entry.label for entry in entries(tmp_path)] == ["v2", "v3"]
    undo_last(tmp_path)
    undo_last(tmp_path)
    assert target.read_bytes() == b"v1"


def test_a_tampered_entry_cannot_reach_outside(tmp_path: Path) -> None:
    apply_writes(tmp_path, [FileWrite(tmp_path / "a.txt", b"x")], "write a")
    manifest = entries(tmp_path)[0].folder / journal.MANIFEST
    manifest.write_text(manifest.read_text().replace('"a.txt"', '"../outside.txt"'))
    with pytest.raises(BrushworkError, match="unsafe path"):
        undo_last(tmp_path)
