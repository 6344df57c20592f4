"""The model library: scan roots, identify and hash files through the index, find models.

    with Library.open(settings, roots) as library:
        scan = library.scan()
        entries = library.hash_entries(scan.entries)
        lora = library.find("my-style", kind=ModelKind.LORA)

A scan reads each model folder's listing once, then per file one `stat` and one index lookup;
only new or changed files are read (a safetensors header, or a pickle through the guarded
loader). Hashing is explicit (`hash_entries`), streamed, and cached the same way.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from brushwork.core import hashing
from brushwork.core.kinds import FileFormat, ModelKind
from brushwork.core.settings import Settings
from brushwork.library.entry import ModelEntry
from brushwork.library.errors import ModelNotFoundError
from brushwork.library.identify import (
    IDENTITY_VERSION,
    Identity,
    identify_file,
    identity_from_json,
    identity_to_json,
)
from brushwork.library.index import INDEX_FILE_NAME, FileStamp, LibraryIndex
from brushwork.library.layout import (
    ModelFolder,
    accepts,
    expected_kind,
    model_folders,
    resolve_roots,
)
from brushwork.library.lookup import find_model, looks_like_hash
from brushwork.library.problems import find_problems
from brushwork.library.sidecars import Sidecars, read_sidecars, sidecar_owner
from brushwork.library.walk import FolderListing, walk_folder

logger = logging.getLogger(__name__)

HashProgress = Callable[[int], None]  # bytes just hashed


@dataclass(frozen=True)
class OrphanSidecar:
    """A sidecar file whose model is not beside it."""

    path: Path
    root: Path
    owner: str  # the model stem (or file name, for .optim) it belongs to


@dataclass(frozen=True)
class LibraryScan:
    """What one scan found: every model file, sidecars without a model, unreadable folders."""

    entries: tuple[ModelEntry, ...]
    orphan_sidecars: tuple[OrphanSidecar, ...] = ()
    folder_errors: tuple[tuple[Path, str], ...] = ()
    identified: int = 0  # files read this scan (not answered by the index)

    def of_kind(self, kinds: Collection[str]) -> tuple[ModelEntry, ...]:
        """Entries of the given kind labels (``lora``, ``invalid``, ...). An invalid file
        counts for the kind of the folder it sits in as well."""
        return tuple(
            e
            for e in self.entries
            if e.kind_label in kinds or (e.kind is None and str(e.folder_kind) in kinds)
        )


def hash_bytes_needed(entry: ModelEntry) -> int:
    """How many bytes `hash_entries` will read for `entry` (0 if its hashes are cached)."""
    if entry.size is None or not _needs_hash(entry):
        return 0
    return entry.size * (2 if _wants_addnet(entry) else 1)


def _wants_addnet(entry: ModelEntry) -> bool:
    return entry.kind is ModelKind.LORA and entry.format is FileFormat.SAFETENSORS


def _needs_hash(entry: ModelEntry) -> bool:
    return entry.sha256 is None or (_wants_addnet(entry) and entry.addnet_hash is None)


def _stat_failure(path: Path, exc: OSError) -> str:
    if path.is_symlink() and isinstance(exc, FileNotFoundError):
        return f"is a broken symbolic link (its target {path.readlink()} does not exist)"
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop"
    return f"cannot be read: {exc.strerror or exc}"


class Library:
    """Model folders under one or more roots, with a shared SQLite index."""

    def __init__(
        self, roots: Sequence[Path], index: LibraryIndex, *, builtin_roots: Sequence[Path] = ()
    ) -> None:
        self.builtin_roots = tuple(r for r in builtin_roots if r not in roots)
        self.roots = tuple(roots) + self.builtin_roots
        self.index = index

    @property
    def user_roots(self) -> tuple[Path, ...]:
        """The roots the user named (or the default one), without brushwork's built-in ones."""
        return tuple(r for r in self.roots if r not in self.builtin_roots)

    def is_builtin(self, entry: ModelEntry) -> bool:
        """Whether `entry` is one of the models shipped with brushwork (the demo model)."""
        return entry.root in self.builtin_roots

    @classmethod
    def open(
        cls, settings: Settings, roots: Sequence[Path] = (), *, cwd: Path | None = None
    ) -> Library:
        """Open the library of `roots` (else `settings.roots`, else the default root; see
        `layout`), with the index at ``<settings.data_dir>/library.sqlite3``."""
        resolved = resolve_roots(settings, tuple(roots), cwd=cwd)
        builtin = [r.absolute() for r in settings.builtin_roots if r.is_dir()]
        index = LibraryIndex(settings.data_dir / INDEX_FILE_NAME)
        return cls(resolved, index, builtin_roots=builtin)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- scanning ------------------------------------------------------------------------------

    def scan(self) -> LibraryScan:
        """Every model file under every root, identified (from the index when unchanged)."""
        entries: list[ModelEntry] = []
        orphans: list[OrphanSidecar] = []
        folder_errors: list[tuple[Path, str]] = []
        identified = 0
        try:
            for root in self.roots:
                for folder in model_folders(root):
                    for listing in walk_folder(folder.path):
                        if listing.error:
                            folder_errors.append((listing.path, listing.error))
                        found, fresh = self._scan_listing(folder, listing)
                        entries += found
                        identified += fresh
                        orphans += _orphans(folder, listing)
        finally:
            self.index.flush()
        return LibraryScan(tuple(entries), tuple(orphans), tuple(folder_errors), identified)

    def scan_listing(self, folder: ModelFolder, listing: FolderListing) -> list[ModelEntry]:
        """The model files of one folder listing as entries, identified through the index as a
        full scan identifies them (also for a folder outside the roots, e.g. a training run's
        output); the index is saved."""
        try:
            return self._scan_listing(folder, listing)[0]
        finally:
            self.index.flush()

    def _scan_listing(
        self, folder: ModelFolder, listing: FolderListing
    ) -> tuple[list[ModelEntry], int]:
        models = [name for name in listing.file_names if accepts(folder.kind, name)]
        others = set(listing.file_names) - set(models)
        owners = {owner for name in others if (owner := sidecar_owner(name)) is not None}
        names = frozenset(listing.file_names)
        folder_relative = folder.relative
        entries, fresh = [], 0
        for file_name in models:
            stem = file_name.rsplit(".", 1)[0]
            sidecars = (
                read_sidecars(listing.path, file_name, names)
                if stem in owners or file_name in owners
                else Sidecars()
            )
            path = listing.path / file_name
            entry = ModelEntry(
                path=path,
                root=folder.root,
                relative_path=f"{folder_relative}/{path.relative_to(folder.path).as_posix()}",
                folder=folder_relative,
                folder_kind=expected_kind(folder.kind, file_name),
                layout=folder.layout,
                size=None,
                mtime_ns=None,
                identity=Identity(kind=None, base=None, format=None),
                sidecars=sidecars,
            )
            entry, was_read = self._identified(entry)
            entries.append(replace(entry, problems=find_problems(entry)))
            fresh += was_read
        return entries, fresh

    def _identified(self, entry: ModelEntry) -> tuple[ModelEntry, bool]:
        try:
            info = entry.path.stat()
        except OSError as exc:
            failure = Identity(
                kind=None, base=None, format=None, error=_stat_failure(entry.path, exc)
            )
            return replace(entry, identity=failure), False
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device: never open it
            failure = Identity(kind=None, base=None, format=None, error="is not a regular file")
            return replace(entry, identity=failure), False
        stamp = FileStamp(info.st_size, info.st_mtime_ns)
        entry = replace(
            entry, size=stamp.size, mtime_ns=stamp.mtime_ns, file_id=(info.st_dev, info.st_ino)
        )
        record = self.index.lookup(entry.path, stamp)
        identity = None
        if record is not None and record.identity and record.identity_version == IDENTITY_VERSION:
            try:
                identity = identity_from_json(record.identity)
            except (ValueError, KeyError, TypeError):
                logger.debug("unreadable cached identity for %s", entry.path)
        was_read = identity is None
        if identity is None:
            identity = identify_file(entry.path)
            if identity.cacheable:
                cached = (identity_to_json(identity), IDENTITY_VERSION)
                self.index.defer(entry.path, stamp, identity=cached)
        hashes = (record.sha256, record.addnet_hash) if record else (None, None)
        return replace(entry, identity=identity, sha256=hashes[0], addnet_hash=hashes[1]), was_read

    # -- hashing -------------------------------------------------------------------------------

    def hash_entries(
        self, entries: Iterable[ModelEntry], progress: HashProgress | None = None
    ) -> list[ModelEntry]:
        """The entries with their hashes: from the index, or computed (streamed) and stored."""
        return [self.hash_entry(entry, progress) for entry in entries]

    def hash_entry(self, entry: ModelEntry, progress: HashProgress | None = None) -> ModelEntry:
        if entry.size is None or not _needs_hash(entry):
            return entry
        stamp = FileStamp(entry.size, entry.mtime_ns or 0)
        try:
            sha256 = entry.sha256 or hashing.sha256_file(entry.path, progress)
            addnet = entry.addnet_hash
            if _wants_addnet(entry) and addnet is None:
                addnet = hashing.addnet_hash_file(entry.path, progress)
            after = entry.path.stat()
        except (OSError, ValueError) as exc:
            logger.warning("cannot hash %s: %s", entry.path, exc)
            return entry
        if (after.st_size, after.st_mtime_ns) == (stamp.size, stamp.mtime_ns):
            self.index.store(entry.path, stamp, sha256=sha256, addnet_hash=addnet)
        else:
            logger.warning("%s changed while it was hashed; its hash is not cached", entry.path)
        hashed = replace(entry, sha256=sha256, addnet_hash=addnet)
        return replace(hashed, problems=find_problems(hashed))

    # -- lookup --------------------------------------------------------------------------------

    def find(
        self, query: str, *, kind: ModelKind | None = None, scan: LibraryScan | None = None
    ) -> ModelEntry:
        """The model `query` names (see `lookup.find_model`). A query that looks like a hash
        and matches nothing hashed yet hashes the library (cached) and tries again."""
        entries = (scan or self.scan()).entries
        try:
            return find_model(entries, query, kind=kind)
        except ModelNotFoundError:
            unhashed = [e for e in entries if _needs_hash(e) and kind in (None, e.kind)]
            if not looks_like_hash(query.strip()) or not unhashed:
                raise
        self.hash_entries(unhashed)
        return find_model(self.scan().entries, query, kind=kind)


def _orphans(folder: ModelFolder, listing: FolderListing) -> list[OrphanSidecar]:
    """Sidecar-shaped files in `listing` with no model of that name beside them."""
    models = [name for name in listing.file_names if accepts(folder.kind, name)]
    owners = {name.rsplit(".", 1)[0] for name in models} | set(models)
    images_are_models = folder.kind is ModelKind.EMBEDDING
    orphans = []
    for name in listing.file_names:
        if name in models:
            continue
        owner = sidecar_owner(name, images_are_models=images_are_models)
        if owner is not None and owner not in owners:
            orphans.append(OrphanSidecar(listing.path / name, folder.root, owner))
    return orphans
