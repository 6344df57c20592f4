"""Walking model folders the way A1111 does, safely.

Subfolders are walked (following symlinks, as A1111 does) in natural order; names starting with
``.`` are skipped (hidden folders, and brushwork's own temp files). A folder reached twice (a
symlink loop, or a link to a folder already walked) is walked once. Names that are not valid
UTF-8 keep Python's surrogate escapes, so the path still opens the file; `display_name` gives
a printable form. Nothing here raises for one bad entry: a folder that cannot be read is
reported in its listing and the walk goes on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class FolderListing:
    """The file names of one folder (not its subfolders), natural-sorted, hidden ones left out.

    `file_names` includes anything that is not a folder: files, broken links, link loops.
    """

    path: Path
    file_names: tuple[str, ...]
    error: str | None = None  # why the folder could not be read, if it could not


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``model2`` before ``model10`` and ignores case."""
    parts = _DIGITS.split(text)
    return tuple((1, int(part)) if part.isdigit() else (0, part.casefold()) for part in parts)


def display_name(text: str) -> str:
    """A printable form of a file name: undecodable bytes become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _folder_id(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _list(path: Path) -> tuple[list[str], list[str]]:
    """(file names, folder names) of `path`; raises OSError if the folder cannot be read."""
    files: list[str] = []
    folders: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()  # follows links
            except OSError:  # a symlink loop: list it as a file, so it is reported
                is_folder = False
            (folders if is_folder else files).append(entry.name)
    files.sort(key=natural_key)
    folders.sort(key=natural_key)
    return files, folders


def walk_folder(top: Path) -> Iterator[FolderListing]:
    """Each folder under `top` (itself first), depth first, natural order, each real one once."""
    visited: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        folder_id = _folder_id(folder)
        if folder_id is None or folder_id in visited:
            if folder_id is not None:
                logger.debug("skipping %s: already walked (symlink loop or duplicate)", folder)
            continue
        visited.add(folder_id)
        try:
            files, folders = _list(folder)
        except OSError as exc:
            logger.warning("cannot read folder %s: %s", folder, exc.strerror or exc)
            yield FolderListing(folder, (), f"cannot be read: {exc.strerror or exc}")
            continue
        yield FolderListing(folder, tuple(files))
        stack.extend(folder / name for name in reversed(folders))
