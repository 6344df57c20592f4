"""The records a project keeps: `project.json` and each version's `version.json`.

Both are JSON objects written atomically (the whole file is replaced), with a `format` name
and a `format_version`, so other tools can read them. Paths inside a version's record are
relative to the version folder (the project can be moved); dates are ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from brushwork.core.errors import BrushworkError
from brushwork.core.fsutil import atomic_write_bytes

PROJECT_FORMAT = "brushwork.project"
VERSION_FORMAT = "brushwork.project-version"
FORMAT_VERSION = 1

RecordT = TypeVar("RecordT", bound=BaseModel)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int | None, host: str | None) -> bool:
    """Whether a process of this machine still runs (another machine's: assumed so)."""
    if pid is None:
        return False
    if host not in (None, this_host()):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but is another user's
        return True
    return True


class VersionStatus(StrEnum):
    CREATED = "created"
    TRAINING = "training"
    DONE = "done"
    FAILED = "failed"


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SkippedPicture(Record):
    source: str
    reason: str
    message: str


class DatasetInfo(Record):
    """How the project's dataset was made from the source pictures."""

    folder: str = "dataset"
    prepared: bool = True
    size: tuple[int, int] | None = None
    buckets: bool = False
    crop: str | None = None
    flip: bool = False
    kept: int = 0
    written: int = 0
    skipped: tuple[SkippedPicture, ...] = ()


class Concept(Record):
    """A shapes-world concept the project teaches: the `shape` drawn, under the word `trigger`."""

    shape: str
    trigger: str
    detected: bool = False  # True: read from the dataset; False: given by the user
    evidence: str = ""


class ProjectRecord(Record):
    format: str = PROJECT_FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    created: str
    source_images: str
    dataset: DatasetInfo
    concept: Concept | None = None


class PreviewInfo(Record):
    """One preview grid: the file (and its record), what it was drawn with, and its shape."""

    file: str
    record: str
    sub_grids: tuple[str, ...] = ()
    created: str
    prompt: str
    negative_prompt: str = ""
    weights: tuple[float, ...]
    seeds: tuple[int, ...]
    checkpoints: tuple[str, ...]
    cells: int


class VersionFiles(Record):
    checkpoints: tuple[str, ...] = ()  # in epoch order, the final file last
    final: str | None = None
    loss_csv: str | None = None
    loss_curve: str | None = None
    run_config: str | None = None
    log: str | None = None


class VersionRecord(Record):
    format: str = VERSION_FORMAT
    format_version: int = FORMAT_VERSION
    name: str
    created: str
    parent: str | None = None  # the version whose config this one started from
    config_origin: str | None = None  # the TOML it was made with
    output_name: str
    status: VersionStatus = VersionStatus.CREATED
    warnings: tuple[str, ...] = ()
    base_model: str | None = None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    steps: int | None = None
    epochs: int | None = None
    error: str | None = None
    pid: int | None = None
    host: str | None = None
    files: VersionFiles = VersionFiles()
    previews: tuple[PreviewInfo, ...] = ()

    def changed(self, **values: Any) -> VersionRecord:
        return self.model_validate(self.model_dump() | values)

    @property
    def running_elsewhere(self) -> bool:
        """Marked as training by a process that still runs."""
        return self.status is VersionStatus.TRAINING and process_alive(self.pid, self.host)


def write_record(path: Path, record: BaseModel) -> Path:
    data = json.dumps(record.model_dump(mode="json"), indent=1, ensure_ascii=False)
    atomic_write_bytes(path, (data + "\n").encode("utf-8"))
    return path


def read_record(path: Path, record_class: type[RecordT]) -> RecordT:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return record_class.model_validate(raw)
    except FileNotFoundError:
        raise BrushworkError(f"{path} is missing") from None
    except (OSError, ValueError, ValidationError) as exc:
        raise BrushworkError(
            f"{path} is not a readable record ({exc})",
            hint="restore it from a backup, or delete the folder it describes",
        ) from None
