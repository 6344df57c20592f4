"""Atomic writes keep the old file on failure and give new files ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from brushwork.core.errors import BrushworkError
from brushwork.core.fsutil import atomic_write_bytes, atomic_writer


def test_new_file_gets_umask_permissions_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_bytes(b"keep")
    with pytest.raises(BrushworkError, match="already exists"):
        atomic_write_bytes(target, b"new", overwrite=False)
    assert target.read_bytes() == b"keep"
