"""What every model tool shares: output precisions, progress callbacks and named inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from brushwork.core import hashing
from brushwork.core.errors import ConfigError

# stage ("merging", "extracting", ...), done, total
ProgressCallback = Callable[[str, int, int], None]

PRECISIONS: dict[str, torch.dtype] = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
}


def precision_dtype(precision: str | None) -> torch.dtype | None:
    """The dtype of a precision name (`fp16`, `bf16`, `fp32`); None keeps the input's."""
    if precision is None:
        return None
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ConfigError(
            f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        ) from None


def dtype_label(dtype: torch.dtype) -> str:
    return next((name for name, d in PRECISIONS.items() if d == dtype), str(dtype))


def report(progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


@dataclass(frozen=True)
class ModelInput:
    """One input file of a tool, with the name it goes by and (once known) its hashes."""

    path: Path
    name: str  # as A1111 shows it: the file name, or the library-relative name
    sha256: str | None = None

    @classmethod
    def of(cls, path: Path | str, name: str | None = None, sha256: str | None = None) -> ModelInput:
        path = Path(path)
        return cls(path, name or path.name, sha256)

    def hashed(self, progress: ProgressCallback | None = None) -> ModelInput:
        """This input with its full SHA-256 (computed, streamed, unless already known);
        `progress` hears ("hashing <name>", bytes done, file size)."""
        if self.sha256 is not None:
            return self
        total = self.path.stat().st_size
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            report(progress, f"hashing {self.path.name}", done, total)

        return ModelInput(self.path, self.name, hashing.sha256_file(self.path, advance))

    @property
    def stem(self) -> str:
        return self.path.stem

    def identity(self) -> dict[str, str | None]:
        """Name + hashes, as the recipes record them."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "legacy_hash": hashing.legacy_model_hash(self.path),
        }
