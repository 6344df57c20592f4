"""The undo journal of a dataset folder: every change to caption files can be taken back.

Before a change writes anything, it records the previous bytes of each file it will touch in
`DIR/.brushwork-tags/journal/<NNNNNN>/` (`manifest.json` plus one backup per file that existed;
a file the change creates is recorded as absent). The entry is built in a temporary folder and
committed by renaming it, so an entry is either whole or absent; each file is then written
atomically. If a write fails half-way, the files already written are restored at once.

`undo_last` restores the newest entry byte for byte (and deletes the files it created), then
drops the entry, so repeated undos walk back through up to `KEEP_LEVELS` changes. A file edited
by hand after the change is not overwritten unless forced: its bytes match neither the change's
result nor the previous state, and undo refuses, naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.fsutil import atomic_write_bytes

JOURNAL_FOLDER = ".brushwork-tags"
KEEP_LEVELS = 20
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class FileWrite:
    """New content for one file under the dataset folder (`data` None deletes the file)."""

    path: Path
    data: bytes | None


@dataclass(frozen=True)
class JournalFile:
    """One file as it was before a change, and what the change made of it."""

    relative: str  # POSIX path relative to the dataset folder
    backup: str | None  # backup file name in the entry; None: the file did not exist
    before_sha256: str | None
    after_sha256: str | None  # None: the change deleted it


@dataclass(frozen=True)
class JournalEntry:
    folder: Path
    number: int
    label: str
    created: str
    files: tuple[JournalFile, ...]


@dataclass(frozen=True)
class UndoResult:
    """What undo did (or, with dry_run, would do)."""

    label: str
    restored: tuple[Path, ...]
    deleted: tuple[Path, ...]
    unchanged: tuple[Path, ...]  # already as they were before the change
    remaining_levels: int


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def journal_dir(root: Path) -> Path:
    return root / JOURNAL_FOLDER / "journal"


def _relative(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError as exc:
        raise ConfigError(f"{path} is outside the dataset folder {root}") from exc


def _inside(root: Path, relative: str) -> Path:
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BrushworkError(f"undo journal in {root} names an unsafe path {relative!r}")
    return root.joinpath(*pure.parts)


def entries(root: Path) -> list[JournalEntry]:
    """The journal's entries, oldest first."""
    folder = journal_dir(root)
    if not folder.is_dir():
        return []
    found = [_read_entry(p) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()]
    return sorted(found, key=lambda entry: entry.number)


def _read_entry(folder: Path) -> JournalEntry:
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = tuple(JournalFile(**item) for item in raw["files"])
        return JournalEntry(folder, int(folder.name), str(raw["label"]), str(raw["created"]), files)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BrushworkError(
            f"undo journal entry {folder} is unreadable ({exc})",
            hint="delete that folder to drop the entry",
        ) from exc


def _write_entry(root: Path, label: str, writes: Sequence[FileWrite]) -> JournalEntry:
    folder = journal_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    existing = entries(root)
    number = existing[-1].number + 1 if existing else 1
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        files = []
        for index, write in enumerate(writes):
            before = write.path.read_bytes() if write.path.is_file() else None
            backup = None
            if before is not None:
                backup = f"{index:06d}.bin"
                atomic_write_bytes(staging / backup, before)
            files.append(
                JournalFile(_relative(root, write.path), backup, _sha(before), _sha(write.data))
            )
        manifest = {
            "label": label,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": [vars(item) for item in files],
        }
        atomic_write_bytes(staging / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
        final = folder / f"{number:06d}"
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _read_entry(final)


def _prune(root: Path, keep: int) -> None:
    for old in entries(root)[:-keep]:
        shutil.rmtree(old.folder, ignore_errors=True)


def apply_writes(
    root: Path, writes: Sequence[FileWrite], label: str, *, keep_levels: int = KEEP_LEVELS
) -> JournalEntry | None:
    """Record the current bytes of every written file, then write each one atomically.

    Returns the journal entry (None when there is nothing to write)."""
    if not writes:
        return None
    entry = _write_entry(root, label, writes)
    try:
        for write in writes:
            if write.data is None:
                write.path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(write.path, write.data)
    except BaseException:
        with contextlib.suppress(BrushworkError, OSError):
            _restore(root, entry, force=True, dry_run=False)
            shutil.rmtree(entry.folder, ignore_errors=True)
        raise
    _prune(root, keep_levels)
    return entry


def undo_last(root: Path, *, force: bool = False, dry_run: bool = False) -> UndoResult:
    """Restore the files of the newest change byte for byte and drop its journal entry."""
    found = entries(root)
    if not found:
        raise ConfigError(
            f"nothing to undo in {root}", hint=f"no changes are recorded in {journal_dir(root)}"
        )
    entry = found[-1]
    result = _restore(root, entry, force=force, dry_run=dry_run)
    if not dry_run:
        shutil.rmtree(entry.folder)
    return UndoResult(
        entry.label,
        result.restored,
        result.deleted,
        result.unchanged,
        len(found) - (0 if dry_run else 1),
    )


def _restore(root: Path, entry: JournalEntry, *, force: bool, dry_run: bool) -> UndoResult:
    plan: list[tuple[Path, JournalFile]] = []
    unchanged: list[Path] = []
    conflicts: list[str] = []
    for item in entry.files:
        path = _inside(root, item.relative)
        current = _sha(path.read_bytes() if path.is_file() else None)
        if current == item.before_sha256:
            unchanged.append(path)
        elif current == item.after_sha256 or force:
            plan.append((path, item))
        else:
            conflicts.append(str(path))
    if conflicts:
        raise ConfigError(
            f"cannot undo {entry.label!r}: changed since then: {', '.join(conflicts)}",
            hint="pass --force to restore them anyway (their newer edits are lost)",
        )
    restored, deleted = [], []
    for path, item in plan:
        if item.backup is None:
            deleted.append(path)
            if not dry_run:
                path.unlink(missing_ok=True)
        else:
            restored.append(path)
            if not dry_run:
                atomic_write_bytes(path, (entry.folder / item.backup).read_bytes())
    return UndoResult(entry.label, tuple(restored), tuple(deleted), tuple(unchanged), 0)
