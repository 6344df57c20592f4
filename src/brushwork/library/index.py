"""The library index: a SQLite cache of what is known about each model file.

One row per file path, valid while the file keeps the same size and modification time (in
nanoseconds). A row holds the file's identity (kind, base, facts: see `identify`) and its
hashes, so an unchanged file is never read or hashed again, and a touched one is. When the
size or mtime differ, the whole row is stale: it is replaced, hashes included.

The database lives at ``<data_dir>/library.sqlite3``. It is opened in WAL mode with a busy
timeout, so two processes (a CLI listing while the server hashes) can share it: readers never
block, writers wait for each other. Paths are stored as bytes (``os.fsencode``), so names that
are not valid UTF-8 work. The index is a cache: a damaged database is set aside and rebuilt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from brushwork.core.errors import ConfigError

logger = logging.getLogger(__name__)

INDEX_FILE_NAME = "library.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
FLUSH_ROWS = 256
FLUSH_SECONDS = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    identity TEXT,
    identity_version INTEGER,
    sha256 TEXT,
    addnet_hash TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL);
"""

_UPSERT = """
INSERT INTO files (path, size, mtime_ns, identity, identity_version, sha256, addnet_hash,
                   updated_at)
VALUES (:path, :size, :mtime_ns, :identity, :identity_version, :sha256, :addnet_hash, :now)
ON CONFLICT (path) DO UPDATE SET
    identity = CASE WHEN :identity IS NULL AND files.size = :size AND files.mtime_ns = :mtime_ns
                    THEN files.identity ELSE :identity END,
    identity_version = CASE
                    WHEN :identity IS NULL AND files.size = :size AND files.mtime_ns = :mtime_ns
                    THEN files.identity_version ELSE :identity_version END,
    sha256 = CASE WHEN :sha256 IS NULL AND files.size = :size AND files.mtime_ns = :mtime_ns
                  THEN files.sha256 ELSE :sha256 END,
    addnet_hash = CASE WHEN :addnet_hash IS NULL AND files.size = :size
                            AND files.mtime_ns = :mtime_ns
                       THEN files.addnet_hash ELSE :addnet_hash END,
    size = :size,
    mtime_ns = :mtime_ns,
    updated_at = :now
"""


@dataclass(frozen=True)
class FileStamp:
    """What must not change for a cached row to stay valid."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class IndexRecord:
    """A valid cached row: identity JSON (None if not identified yet) and hashes."""

    identity: str | None
    identity_version: int | None
    sha256: str | None
    addnet_hash: str | None


def path_key(path: Path) -> bytes:
    return os.fsencode(path)


class LibraryIndex:
    """The SQLite cache. Use as a context manager, or call `close`."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self._pending: list[tuple[Path, FileStamp, tuple[str, int]]] = []
        self._oldest = 0.0
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
            self._connection = self._open()
        except sqlite3.OperationalError as exc:  # cannot open or create: not a damaged file
            raise ConfigError(
                f"cannot open the library index {database}: {exc}",
                hint="set BRUSHWORK_HOME (or Settings.data_dir) to a writable folder",
            ) from exc
        except OSError as exc:
            raise ConfigError(
                f"cannot create the library index folder {database.parent}: {exc.strerror}",
                hint="set BRUSHWORK_HOME (or Settings.data_dir) to a writable folder",
            ) from exc
        except sqlite3.DatabaseError as exc:
            aside = database.with_name(f"{database.name}.damaged-{int(time.time())}")
            logger.warning("library index %s is damaged (%s); moved to %s", database, exc, aside)
            with contextlib.suppress(OSError):
                database.replace(aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    database.with_name(database.name + suffix).unlink()
            self._connection = self._open()

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.database, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            row = connection.execute("SELECT version FROM schema").fetchone()
            if row is None:
                connection.execute("INSERT INTO schema (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {row[0]}, expected {SCHEMA_VERSION}")
        except sqlite3.DatabaseError:
            connection.close()
            raise
        return connection

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._connection.close()

    def __enter__(self) -> LibraryIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes into one transaction (much faster than one per row)."""
        if self._connection.in_transaction:
            yield
            return
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")

    def lookup(self, path: Path, stamp: FileStamp) -> IndexRecord | None:
        """The cached row for `path` if it was made for a file of this size and mtime."""
        row = self._connection.execute(
            "SELECT size, mtime_ns, identity, identity_version, sha256, addnet_hash "
            "FROM files WHERE path = ?",
            (path_key(path),),
        ).fetchone()
        if row is None or (row[0], row[1]) != (stamp.size, stamp.mtime_ns):
            return None
        return IndexRecord(row[2], row[3], row[4], row[5])

    def store(
        self,
        path: Path,
        stamp: FileStamp,
        *,
        identity: tuple[str, int] | None = None,
        sha256: str | None = None,
        addnet_hash: str | None = None,
    ) -> None:
        """Record facts about `path` as it is at `stamp`; facts not given are kept if the row is
        for the same stamp, and dropped if it is stale."""
        self._connection.execute(
            _UPSERT,
            {
                "path": path_key(path),
                "size": stamp.size,
                "mtime_ns": stamp.mtime_ns,
                "identity": identity[0] if identity else None,
                "identity_version": identity[1] if identity else None,
                "sha256": sha256,
                "addnet_hash": addnet_hash,
                "now": time.time(),
            },
        )

    def defer(self, path: Path, stamp: FileStamp, *, identity: tuple[str, int]) -> None:
        """Queue an identity for `store`; queued rows are written in short transactions (at
        most FLUSH_ROWS rows or FLUSH_SECONDS old), so another process never waits long."""
        self._pending.append((path, stamp, identity))
        if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._oldest > FLUSH_SECONDS:
            self.flush()
        elif len(self._pending) == 1:
            self._oldest = time.monotonic()

    def flush(self) -> None:
        """Write the queued identities."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        with self.batch():
            for path, stamp, identity in pending:
                self.store(path, stamp, identity=identity)

    def forget_missing(self) -> int:
        """Drop rows of files that no longer exist; returns how many."""
        rows = self._connection.execute("SELECT path FROM files").fetchall()
        gone = [(key,) for (key,) in rows if not Path(os.fsdecode(key)).exists()]
        with self.batch():
            self._connection.executemany("DELETE FROM files WHERE path = ?", gone)
        return len(gone)

    def __len__(self) -> int:
        (count,) = self._connection.execute("SELECT COUNT(*) FROM files").fetchone()
        return int(count)
