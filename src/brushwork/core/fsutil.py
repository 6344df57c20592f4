"""Durable file writes: a temp file beside the target, fsync, rename, fsync the folder.

A crash or a full disk while writing leaves the previous file (or none) in place, never a
half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from brushwork.core.errors import BrushworkError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open folders; the rename still stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path | str, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file for binary writing; on success it replaces `path` atomically."""
    target = Path(path)
    if not overwrite and target.exists():
        raise BrushworkError(
            f"{target} already exists", hint="choose another name, or pass --force to replace it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask applies)
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: Path | str, data: bytes, *, overwrite: bool = True) -> None:
    with atomic_writer(path, overwrite=overwrite) as handle:
        handle.write(data)
