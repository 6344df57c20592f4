"""The job record: every job a server accepted, in SQLite, so a restart lists what was done
and what was lost.

One table, ``jobs``: id, owner (the server that ran it, ``host:port``), kind, state, times,
a JSON summary of the request (no images), the error, and the files written. The database is
in WAL mode, so several ``serve`` processes sharing a data folder can write to it; each one,
when it starts, marks only its *own* queued and running rows as ``lost``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    summary TEXT NOT NULL,
    error TEXT,
    outputs TEXT NOT NULL DEFAULT '[]'
)
"""
UNFINISHED = ("queued", "running")


@dataclass(frozen=True)
class JobRecord:
    """One row of the job record."""

    id: str
    owner: str
    kind: str
    state: str
    created: float
    started: float | None
    finished: float | None
    summary: dict[str, Any]
    error: str | None
    outputs: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "kind": self.kind,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "summary": self.summary,
            "error": self.error,
            "outputs": list(self.outputs),
        }


class JobStore:
    """The ``jobs`` table of one SQLite file (thread-safe; one connection, one lock)."""

    def __init__(self, path: Path, owner: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.owner = owner
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def mark_lost(self) -> int:
        """Mark this owner's queued and running jobs from an earlier run as lost."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET state = 'lost', finished = ? WHERE owner = ? AND state IN (?, ?)",
                (time.time(), self.owner, *UNFINISHED),
            )
            self._db.commit()
            return cursor.rowcount

    def add(self, job_id: str, kind: str, summary: dict[str, Any], created: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, owner, kind, state, created, summary) "
                "VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, self.owner, kind, created, json.dumps(summary, default=str)),
            )
            self._db.commit()

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._db.commit()

    def update(
        self,
        job_id: str,
        *,
        state: str,
        started: float | None = None,
        finished: float | None = None,
        error: str | None = None,
        outputs: tuple[str, ...] | None = None,
    ) -> None:
        sets = ["state = ?"]
        values: list[Any] = [state]
        for column, value in (("started", started), ("finished", finished), ("error", error)):
            if value is not None:
                sets.append(f"{column} = ?")
                values.append(value)
        if outputs is not None:
            sets.append("outputs = ?")
            values.append(json.dumps(list(outputs)))
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*values, job_id))
            self._db.commit()

    def recent(self, limit: int = 100) -> list[JobRecord]:
        """The newest jobs first (every owner's)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, owner, kind, state, created, started, finished, summary, error, "
                "outputs FROM jobs ORDER BY created DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_record(row) for row in rows]

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, owner, kind, state, created, started, finished, summary, error, "
                "outputs FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        return None if row is None else _record(row)


def _record(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        id=row[0],
        owner=row[1],
        kind=row[2],
        state=row[3],
        created=row[4],
        started=row[5],
        finished=row[6],
        summary=json.loads(row[7]),
        error=row[8],
        outputs=tuple(json.loads(row[9])),
    )
