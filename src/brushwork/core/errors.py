"""The error hierarchy. Every error says what was wrong, where, and what to do."""

from __future__ import annotations

from pathlib import Path


class BrushworkError(Exception):
    """Base of every error brushwork raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ModelFileError(BrushworkError):
    """A model file cannot be read: malformed, truncated, not a model, or unsupported."""

    def __init__(self, path: Path | str | None, reason: str, *, hint: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{reason}", hint=hint)


class CorruptModelError(ModelFileError):
    """The bytes are not a valid file of the format they claim to be (truncated, garbage)."""


class NotAModelError(ModelFileError):
    """The file is something else entirely (an HTML page, a Git-LFS pointer, an archive)."""


class UnsafeModelError(ModelFileError):
    """A pickle tried to import or call something that is not plain tensor data. Never executed."""

    def __init__(
        self, path: Path | str | None, reason: str, *, imports: tuple[str, ...] = ()
    ) -> None:
        self.imports = imports
        super().__init__(
            path,
            reason,
            hint="the file was not loaded and nothing in it ran; use a .safetensors version",
        )


class WrongKindError(ModelFileError):
    """The file is a valid model, but of another kind than the one asked for."""


class UnsupportedModelError(ModelFileError):
    """A recognised file that brushwork deliberately does not handle (yet)."""


class ArchitectureError(ModelFileError):
    """The architecture of a model cannot be determined, or is ambiguous."""


class IncompatibleModelError(BrushworkError):
    """Two models that cannot be used together (an SD2 LoRA on an SD1 checkpoint)."""


class ConfigError(BrushworkError):
    """An invalid or conflicting option, named."""
